"""Users, keys, roles and the audit log (``aiplatform.access``) behind the real access guard and
the real admin routes, on an app without a platform behind its other routes: every refusal here
happens before a route runs."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from aiplatform.access import Action, request_action
from aiplatform.access.store import AccessStore, AuditEntry, KeyRefused, key_digest
from aiplatform.api.app import create_api_app
from aiplatform.api.security import AccessPolicy, is_public
from aiplatform.errors import AlreadyExists, InvalidArgument

pytestmark = pytest.mark.unit

TOKEN = "bootstrap-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def api(tmp_path: Path) -> tuple[TestClient, AccessStore]:
    store = AccessStore.in_state_dir(tmp_path)
    app = create_api_app()
    app.state.platform = SimpleNamespace(access=AccessPolicy("token", TOKEN, ("127.0.0.1",), store))
    return TestClient(app, base_url="http://127.0.0.1:8000"), store


def _key(client: TestClient, user: str, role: str = "viewer", **body: object) -> str:
    if client.get(f"/v1/users/{user}", headers=ADMIN).status_code == 404:
        assert client.post("/v1/users", json={"name": user, "role": role}, headers=ADMIN).status_code == 201
    made = client.post(f"/v1/users/{user}/keys", json={"name": f"k{len(body)}", **body}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return str(made.json()["secret"])


def test_actions_follow_the_method_unless_the_table_names_the_route() -> None:
    assert request_action("GET", "/v1/tasks").action is Action.READ
    assert request_action("POST", "/v1/tasks").action is Action.CREATE
    assert request_action("POST", "/v1/models/a/promote").action is Action.MANAGE
    assert request_action("DELETE", "/v1/models/a/aliases/production").action is Action.MANAGE
    assert request_action("POST", "/v1/runs/compare").action is Action.READ
    assert request_action("POST", "/v1/loops").action is Action.MANAGE  # a policy promotes on its own
    assert request_action("POST", "/v1/loops/digits/trigger").action is Action.CREATE
    predict = request_action("POST", "/v2/models/digits/versions/3/infer")
    assert (predict.action, predict.model) == (Action.INFER, "digits")
    keys = request_action("DELETE", "/v1/users/alice/keys/k-1")
    assert (keys.action, keys.owner) == (Action.OWN_KEYS, "alice")
    assert request_action("GET", "/v1/users").action is Action.ADMINISTER
    assert request_action("GET", "/v1/audit").action is Action.ADMINISTER


def test_keys_are_stored_only_as_their_digest_and_refused_once_revoked_or_expired(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_user("alice", role="member", by="platform")
    key, secret = store.create_key("alice", name="laptop", expires_in_days=1, by="platform")
    assert secret.startswith("aip_") and len(secret) > 40 and "secret" not in key
    principal = store.authenticate(secret)
    assert principal is not None and principal.roles == {"default": "member"} and principal.key_id == key["id"]
    assert store.authenticate("aip_" + "x" * 43) is None
    with pytest.raises(KeyRefused, match="expired"):
        store.authenticate(secret, now=key["expires_at"] + 1)
    store.revoke_key("alice", key["id"], by="platform")
    with pytest.raises(KeyRefused, match="revoked"):
        store.authenticate(secret)
    store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert secret.encode() not in raw
    rows = sqlite3.connect(tmp_path / "access.db").execute("SELECT * FROM api_keys").fetchall()
    assert not any(secret in str(value) for row in rows for value in row)
    assert any(key_digest(secret) in row for row in rows)


def test_bad_users_and_keys_are_refused_by_name(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_user("bob", by="platform")
    with pytest.raises(AlreadyExists, match="bob"):
        store.create_user("bob", by="platform")
    with pytest.raises(InvalidArgument, match="Unknown role 'owner'"):
        store.create_user("carol", role="owner", by="platform")
    with pytest.raises(InvalidArgument, match="valid name"):
        store.create_user("Bad Name", by="platform")
    for days in (0, -1, 10_000):
        with pytest.raises(InvalidArgument, match="expires_in_days"):
            store.create_key("bob", name="k", expires_in_days=days, by="platform")
    with pytest.raises(InvalidArgument, match="service key"):
        store.create_key("bob", name="k", models=[], by="platform")
    assert store.users()[0]["live_keys"] == 0  # nothing stored by the refusals


def test_the_audit_log_is_append_only(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.record(AuditEntry(1.0, "alice", None, "create", "POST", "/v1/tasks", "default", "ok", 201, "127.0.0.1"))
    db = sqlite3.connect(tmp_path / "access.db")
    for statement in ("UPDATE audit SET principal = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    assert store.audit()[0][0]["principal"] == "alice"


def test_roles_are_checked_before_any_route_and_refusals_are_audited(api: tuple[TestClient, AccessStore]) -> None:
    client, _ = api
    viewer = {"Authorization": f"Bearer {_key(client, 'vera', 'viewer')}"}
    service = {"Authorization": f"Bearer {_key(client, 'app', 'viewer', models=['digits'])}"}
    assert client.get("/v1/whoami", headers=viewer).json()["roles"] == {"default": "viewer"}
    assert client.get("/v1/whoami", headers=service).json()["models"] == ["digits"]
    refused = client.post("/v1/tasks", json={}, headers=viewer)
    assert refused.status_code == 403 and "member role" in refused.json()["message"]
    assert client.post("/v1/models/a/promote", json={}, headers=viewer).status_code == 403
    assert client.get("/v1/tasks", headers=service).status_code == 403
    other = client.post("/v1/models/other/predict", json={}, headers=service)
    assert other.status_code == 403 and "digits" in other.json()["message"]
    assert client.get("/v1/users", headers=viewer).status_code == 403
    assert client.get("/v1/audit", headers=viewer).status_code == 403
    # a user manages their own keys, not another's
    assert client.get("/v1/users/vera/keys", headers=viewer).status_code == 200
    assert client.get("/v1/users/app/keys", headers=viewer).status_code == 403
    listed = client.get("/v1/users/vera/keys", headers=ADMIN).json()["keys"]
    assert listed[0]["last_used_at"] is not None and "secret" not in listed[0]
    denied = client.get("/v1/audit", params={"outcome": "denied", "principal": "vera"}, headers=ADMIN).json()
    assert {(e["method"], e["resource"]) for e in denied["entries"]} >= {("POST", "/v1/tasks"), ("GET", "/v1/users")}
    made = client.get("/v1/audit", params={"action": "administer", "outcome": "ok"}, headers=ADMIN).json()
    assert {e["resource"] for e in made["entries"]} == {"/v1/users"}  # the two users made (reads not logged)
    page = client.get("/v1/audit", params={"limit": 2}, headers=ADMIN).json()
    assert len(page["entries"]) == 2 and page["next_before"] is not None


def test_bad_admin_input_is_a_4xx_json_error(api: tuple[TestClient, AccessStore]) -> None:
    client, _ = api
    assert client.post("/v1/users", json={"name": "dan"}, headers=ADMIN).status_code == 201
    for body, status, words in (
        ({"name": "dan"}, 409, "already exists"),
        ({"name": "eve", "role": "owner"}, 400, "Unknown role"),
        ({"name": "eve", "colour": "red"}, 400, "colour"),
    ):
        answer = client.post("/v1/users", json=body, headers=ADMIN)
        assert answer.status_code == status and words in answer.json()["message"], answer.text
    bad_expiry = client.post("/v1/users/dan/keys", json={"name": "k", "expires_in_days": -3}, headers=ADMIN)
    assert bad_expiry.status_code == 400 and "expires_in_days" in bad_expiry.json()["message"]
    assert client.post("/v1/users/nobody/keys", json={"name": "k"}, headers=ADMIN).json()["error"] == "not_found"
    revoked = client.delete("/v1/users/dan/keys/k-unknown", headers=ADMIN)
    assert revoked.status_code == 404


def test_revoked_expired_and_disabled_keys_get_401_naming_why(api: tuple[TestClient, AccessStore]) -> None:
    client, store = api
    secret = _key(client, "fay", "member")
    key_id = client.get("/v1/users/fay/keys", headers=ADMIN).json()["keys"][0]["id"]
    assert client.delete(f"/v1/users/fay/keys/{key_id}", headers=ADMIN).status_code == 200
    answer = client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 401 and "revoked" in answer.json()["message"]
    assert answer.headers["www-authenticate"].startswith("Bearer")
    other = _key(client, "fay", "member")
    assert client.post("/v1/users/fay/disable", headers=ADMIN).status_code == 200
    assert "disabled" in client.get("/v1/whoami", headers={"Authorization": f"Bearer {other}"}).json()["message"]
    assert store.audit(principal="fay", outcome="denied")[0]


def test_every_route_of_the_gateway_is_authorized_by_its_action(tmp_path: Path) -> None:
    """Generated from the route table itself (the REST API, v1 and OIP REST): a viewer is refused
    every route that changes something, a service key every route but inference on its model.
    A new route gets its method's action without an edit, and is checked here."""
    from serve_apps.gateway import gateway_app

    store = AccessStore.in_state_dir(tmp_path)
    app = gateway_app()
    app.state.platform = SimpleNamespace(access=AccessPolicy("token", TOKEN, ("127.0.0.1",), store))
    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    viewer = {"Authorization": f"Bearer {_key(client, 'vera', 'viewer')}"}
    service = {"Authorization": f"Bearer {_key(client, 'app', 'viewer', models=['x'])}"}
    routes = [
        (method.upper(), re.sub(r"{[^}]+}", "x", path.replace("{project}", "default")))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(routes) > 60
    wrong = []
    for method, path in routes:
        action = request_action(method, path).action
        if is_public(path) or action is Action.IDENTIFY:
            continue
        if action is not Action.READ and client.request(method, path, headers=viewer).status_code != 403:
            wrong.append(f"viewer {method} {path}")
        if action is not Action.INFER and client.request(method, path, headers=service).status_code != 403:
            wrong.append(f"service {method} {path}")
    assert not wrong, wrong
