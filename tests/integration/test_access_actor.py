"""The access actor and its clients on the session's Ray (``aiplatform.access.actor``): what a
gateway off the head node asks and keeps. The gateway itself on a worker node is
tests/multinode/test_access_off_head.py; here, the client's rules one by one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from aiplatform.access.actor import AccessClient, QuotaClient
from aiplatform.access.quotas import Quota
from aiplatform.access.store import AccessStore, KeyRefused
from aiplatform.errors import InvalidArgument, NotFound, Unavailable
from aiplatform.registry import ActorModelProjects, RegistryClient
from aiplatform.registry.store import MODEL_PROJECT_TTL_S
from aiplatform.runtime import call, on_head_node
from aiplatform.settings import Settings
from tests.factories import platform_settings, wait_for

TTL_S = 1.0


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    with platform_settings(tmp_path, "access-actor", access_cache_ttl_s=TTL_S) as settings:
        yield settings


def test_a_client_keeps_a_keys_answer_for_its_ttl_and_drops_it_on_its_own_changes(
    ray_session: None, settings: Settings
) -> None:
    assert on_head_node()  # the session's single node is the head: the gateway reads the files
    gateway, elsewhere = AccessClient.connect(settings), AccessClient.connect(settings)
    gateway.create_user("ana", role="member", by="platform")
    first, first_secret = gateway.create_key("ana", name="one", by="platform")
    second, second_secret = gateway.create_key("ana", name="two", by="platform")
    assert gateway.authenticate(first_secret).name == "ana"  # type: ignore[union-attr]
    assert gateway.authenticate(second_secret).key_id == second["id"]  # type: ignore[union-attr]
    assert gateway.authenticate("aip_" + "x" * 43) is None
    assert gateway.authenticate("not a key") is None  # not even asked
    assert len(gateway.answers._kept) == 3

    # Revoked through another client (another replica): this one refuses it within its TTL.
    elsewhere.revoke_key("ana", first["id"], by="platform")
    assert gateway.authenticate(first_secret) is not None  # kept
    time.sleep(TTL_S)
    with pytest.raises(KeyRefused) as refused:
        gateway.authenticate(first_secret)
    assert (refused.value.user, refused.value.key_id) == ("ana", first["id"])  # the audit log names them
    with pytest.raises(KeyRefused):  # kept too, raised anew
        gateway.authenticate(first_secret)

    # Revoked through this client: refused at once (its kept answer dropped).
    assert gateway.authenticate(second_secret) is not None  # kept afresh
    gateway.revoke_key("ana", second["id"], by="platform")
    with pytest.raises(KeyRefused, match="revoked"):
        gateway.authenticate(second_secret)

    # What the request path asks is on the head's store, not in a file of this process.
    assert AccessStore.in_state_dir(settings.resolved_state_dir).user("ana")["name"] == "ana"
    assert gateway.project_exists("default") and not gateway.project_exists("nope")
    gateway.touch(first["id"])
    assert not gateway.needs_touch(first["id"])
    with pytest.raises(NotFound):
        gateway.user("nobody")


def test_a_signed_in_users_group_roles_are_synced_once_per_ttl(ray_session: None, settings: Settings) -> None:
    client = AccessClient.connect(settings)
    client.create_user("bo", by="platform")
    client.create_project("team", by="platform")
    assert "team" not in client.user("bo")["roles"]  # kept
    assert client.sync_group_roles("bo", {"team": "member"}) is True
    assert client.user("bo")["roles"]["team"] == "member"  # the change dropped the kept user
    assert client.sync_group_roles("bo", {"team": "member"}) is False


def test_quotas_and_model_projects_through_the_heads_actors(ray_session: None, settings: Settings) -> None:
    access, quotas = AccessClient.connect(settings), QuotaClient.connect(settings)
    access.create_project("team", by="platform")
    quotas.set(Quota("team", cpus=2.0, replicas=1), by="platform")
    assert quotas.get("team").cpus == 2.0 and quotas.replica_quotas() == {"team": 1}
    with pytest.raises(NotFound):
        quotas.get("nope")
    with pytest.raises(InvalidArgument, match="not a quota store method"):
        call(access.handle.quota, "close")

    registry = RegistryClient.connect(settings)
    registry.claim_model("team-model", "team")
    models = ActorModelProjects(registry)
    assert models.project_of("team-model") == "team"
    assert models.project_of("unknown-model") is None
    # Past its time the kept answer is given at once (the data plane asks on its event loop)
    # while a thread asks the registry again.
    kept_at = models._known["team-model"][1]
    assert models.project_of("team-model", now=kept_at + MODEL_PROJECT_TTL_S + 1) == "team"
    wait_for(lambda: not models._refreshing, 30, "the registry to be asked again")
    assert models._known["team-model"][1] > kept_at


def test_with_the_head_away_a_known_key_keeps_its_last_answer_and_an_unknown_one_is_refused_503(
    ray_session: None, settings: Settings
) -> None:
    client = AccessClient.connect(settings)
    client.create_user("cy", by="platform")
    _, secret = client.create_key("cy", name="k", by="platform")
    assert client.authenticate(secret).name == "cy"  # type: ignore[union-attr]
    ray.kill(client.handle, no_restart=True)  # as the head node lost: its actor does not answer
    time.sleep(TTL_S)
    assert client.authenticate(secret).name == "cy"  # type: ignore[union-attr]  # nothing changes meanwhile
    with pytest.raises(Unavailable):  # never let in
        client.authenticate("aip_" + "y" * 43)
