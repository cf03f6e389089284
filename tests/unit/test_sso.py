"""Single sign-on through a trusted proxy (``aiplatform.access.proxy``): its identity headers
sign a user in only on a connection from one of ``AIP_TRUSTED_PROXIES``, behind the real guard
and routes; from anyone else they are ignored."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pydantic
import pytest
from fastapi.testclient import TestClient

from aiplatform.access.authenticate import SIGN_IN_CREATOR, signed_in_principal
from aiplatform.access.proxy import TrustedProxies
from aiplatform.access.store import AccessStore, KeyRefused
from aiplatform.api.app import create_api_app
from aiplatform.api.security import AccessPolicy
from aiplatform.errors import NotFound, Unauthenticated
from aiplatform.settings import Settings

pytestmark = pytest.mark.unit

TOKEN = "bootstrap-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
AS_ALICE = {"X-Forwarded-User": "alice", "X-Forwarded-Email": "alice@example.com"}


def test_the_peer_address_decides_trust_and_the_headers_name_the_user() -> None:
    proxies = TrustedProxies.parse(["127.0.0.1", "10.1.0.0/16", "fd00::/8"])
    for peer in ("127.0.0.1", "10.1.200.3", "fd00::5", "::ffff:127.0.0.1"):
        assert proxies.trusts(peer), peer
    for peer in ("127.0.0.2", "10.2.0.1", "::1", "testclient", "", None):
        assert not proxies.trusts(peer), peer
    headers = [(b"x-forwarded-user", b"sub-123"), (b"x-forwarded-preferred-username", b"alice")]
    assert proxies.signed_in_user("127.0.0.1", headers) == "alice"  # the preferred username first
    assert proxies.signed_in_user("127.0.0.1", [(b"x-forwarded-user", b"bob")]) == "bob"
    assert proxies.signed_in_user("127.0.0.1", [(b"x-forwarded-email", b"a@example.com")]) is None
    assert proxies.signed_in_user("192.0.2.1", headers) is None  # not a proxy: ignored
    assert TrustedProxies().signed_in_user("127.0.0.1", headers) is None  # none configured: ignored
    with pytest.raises(Unauthenticated, match="not a platform user name"):
        proxies.signed_in_user("127.0.0.1", [(b"x-forwarded-user", b"Alice@example.com")])
    with pytest.raises(pydantic.ValidationError, match="entry #2 is not an IP address or CIDR"):
        Settings(trusted_proxies=["127.0.0.1", "proxy.example.com"])
    assert Settings().trusted_proxies == [] and Settings().sso_new_user_role is None
    # the audit log's "from where": behind a trusted proxy, the address it appended; else the peer's own
    forwarded = [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.9")]
    assert proxies.client_address("127.0.0.1", forwarded) == "203.0.113.9"
    assert proxies.client_address("127.0.0.1", [(b"x-forwarded-for", b"junk")]) == "127.0.0.1"
    assert proxies.client_address("192.0.2.1", forwarded) == "192.0.2.1"


def test_a_signed_in_user_must_exist_and_be_enabled_unless_made_on_first_sign_in(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_user("alice", role="member", by="platform")
    alice = signed_in_principal(store, "alice")
    assert (alice.name, alice.kind, alice.roles, alice.key_id) == ("alice", "user", {"default": "member"}, None)
    with pytest.raises(Unauthenticated, match="has no account") as unknown:
        signed_in_principal(store, "bob")
    assert "aip users create bob" in unknown.value.message
    bob = signed_in_principal(store, "bob", new_user_role="viewer")
    assert bob.roles == {"default": "viewer"} and store.user("bob")["created_by"] == SIGN_IN_CREATOR
    assert signed_in_principal(store, "bob", new_user_role="member").roles == {"default": "viewer"}  # made once
    store.disable_user("alice", by="platform")
    with pytest.raises(KeyRefused, match="disabled") as disabled:
        signed_in_principal(store, "alice", new_user_role="viewer")
    assert disabled.value.user == "alice"


def test_the_guard_believes_the_headers_from_a_trusted_peer_only(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_user("alice", role="member", by="platform")
    store.create_user("carol", role="viewer", by="platform")
    store.disable_user("carol", by="platform")

    def client(trusted: list[str], peer: str) -> TestClient:
        app = create_api_app()
        policy = AccessPolicy("token", TOKEN, ("127.0.0.1",), store, proxies=TrustedProxies.parse(trusted))
        app.state.platform = SimpleNamespace(access=policy)
        return TestClient(app, base_url="http://127.0.0.1:8000", client=(peer, 40000))

    proxy = client(["10.0.0.7"], "10.0.0.7")
    me = proxy.get("/v1/whoami", headers=AS_ALICE)
    assert me.status_code == 200 and me.json()["name"] == "alice" and me.json()["key_id"] is None
    # the proxy's own Authorization (oauth2-proxy may pass one) does not outrank the user it names
    assert proxy.get("/v1/whoami", headers={**AS_ALICE, "Authorization": "Basic eDp5"}).json()["name"] == "alice"
    made = proxy.post("/v1/users/alice/keys", json={"name": "laptop"}, headers=AS_ALICE)  # her own keys
    assert made.status_code == 201, made.text
    assert proxy.get("/v1/users", headers=AS_ALICE).status_code == 403  # a member, not an admin
    unknown = proxy.get("/v1/whoami", headers={"X-Forwarded-User": "mallory"})
    assert unknown.status_code == 401 and "no account" in unknown.json()["message"]
    disabled = proxy.get("/v1/whoami", headers={"X-Forwarded-User": "carol"})
    assert disabled.status_code == 401 and "disabled" in disabled.json()["message"]
    assert proxy.get("/v1/whoami", headers=ADMIN).json()["name"] == "platform"  # keys still work through it

    for stranger in (client(["10.0.0.7"], "10.0.0.8"), client([], "10.0.0.7")):
        ignored = stranger.get("/v1/whoami", headers={**AS_ALICE, "X-Forwarded-For": "10.0.0.7"})
        assert ignored.status_code == 401 and "API token" in ignored.json()["message"]
        assert stranger.post("/v1/users/alice/keys", json={"name": "x"}, headers=AS_ALICE).status_code == 401
        as_admin = stranger.get("/v1/whoami", headers={**ADMIN, "X-Forwarded-User": "alice"})
        assert as_admin.json()["name"] == "platform"  # authenticated by its key, not the headers

    entries, _ = store.audit(principal="alice")
    assert [(e["method"], e["resource"], e["outcome"]) for e in entries[:2]] == [
        ("GET", "/v1/users", "denied"),
        ("POST", "/v1/users/alice/keys", "ok"),
    ]
    assert store.audit(principal="carol")[0][0]["outcome"] == "denied"
    assert [k["name"] for k in store.keys("alice")] == ["laptop"]  # nothing made by the untrusted peers


def test_a_trusted_proxys_groups_grant_roles_on_sign_in(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_project("vision", by="platform")
    store.create_user("alice", role="viewer", by="platform")
    store.set_member("vision", "alice", "maintainer", by="platform")  # an admin's grant
    mapping = ["ml-team:default:member", "ml-team:vision:viewer", "vision-leads:vision:admin", "ml-admins:*:admin"]
    mapping.append("ml-team:no-such-project:member")  # a project that does not exist (yet): skipped
    proxies = TrustedProxies.parse(["10.0.0.7"], group_roles=Settings(sso_group_roles=mapping).sso_group_roles)

    def client(peer: str) -> TestClient:
        app = create_api_app()
        app.state.platform = SimpleNamespace(
            access=AccessPolicy("token", TOKEN, ("127.0.0.1",), store, proxies=proxies)
        )
        return TestClient(app, base_url="http://127.0.0.1:8000", client=(peer, 40000))

    proxy = client("10.0.0.7")

    def sign_in(user: str, groups: str) -> dict[str, object]:
        answer = proxy.get("/v1/whoami", headers={"X-Forwarded-User": user, "X-Forwarded-Groups": groups})
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    # a group raises a role an admin gave (viewer -> member in default), never lowers one (vision stays maintainer)
    me = sign_in("alice", "ml-team, other")
    assert me["roles"] == {"default": "member", "vision": "maintainer"} and me["platform_admin"] is False
    assert store.project("default")["members"][0]["granted_by"] == "sso-groups"
    # an unknown user whose groups grant a role is made, with those roles alone
    assert sign_in("bob", "vision-leads")["roles"] == {"vision": "admin"}
    assert store.user("bob")["created_by"] == "sso"
    # the groups change: what they granted follows; an admin group is admin only while named in it
    assert sign_in("bob", "ml-team")["roles"] == {"default": "member", "vision": "viewer"}
    assert sign_in("bob", "ml-admins")["platform_admin"] is True
    assert sign_in("bob", "")["roles"] == {} and sign_in("bob", "")["platform_admin"] is False
    assert store.user("bob")["platform_admin"] is False
    # a user in no mapped group is refused as before; the headers from anyone else grant nothing
    nobody = proxy.get("/v1/whoami", headers={"X-Forwarded-User": "carol", "X-Forwarded-Groups": "guests"})
    assert nobody.status_code == 401 and "no account" in nobody.json()["message"]
    stranger = client("10.0.0.8").get(
        "/v1/whoami", headers={"X-Forwarded-User": "dave", "X-Forwarded-Groups": "ml-admins"}
    )
    assert stranger.status_code == 401
    with pytest.raises(NotFound):
        store.user("dave")
    with pytest.raises(pydantic.ValidationError, match="GROUP:PROJECT:ROLE"):
        Settings(sso_group_roles=["ml-team:*:member"])
