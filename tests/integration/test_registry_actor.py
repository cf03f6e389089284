"""The registry actor on the session's Ray: head-pinned, detached, durable across restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from aiplatform.errors import NotFound
from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from aiplatform.storage import sha256_bytes, storage_from_settings
from tests.factories import platform_settings


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    with platform_settings(tmp_path, "reg") as settings:
        yield settings


def test_registry_actor_survives_being_killed(ray_session: None, settings: Settings) -> None:
    storage = storage_from_settings(settings)
    client = RegistryClient.connect(settings)
    keys = []
    for i in range(3):
        data = f"package {i}".encode()
        key = f"packages/m/{i}.zip"
        storage.put_bytes(key, data)
        keys.append(key)
        client.register_version(
            "m", package_key=key, sha256=sha256_bytes(data), template="t", idempotency_key=f"run-{i}"
        )
    client.set_alias("m", "production", 2)

    ray.kill(client.handle, no_restart=False)  # Ray restarts it; it reloads SQLite

    assert [v.version for v in client.list_versions("m")] == [3, 2, 1]
    assert client.resolve("m", "production").version == 2
    # A retried registration after the restart is not duplicated.
    again = client.register_version(
        "m", package_key=keys[0], sha256=sha256_bytes(b"package 0"), template="t", idempotency_key="run-0"
    )
    assert again.version == 1
    with pytest.raises(NotFound, match=r"\(name=m, version=7\) not found"):
        client.get_version("m", 7)
    ray.kill(client.handle, no_restart=True)


def test_registry_actor_is_detached_named_and_on_the_head(ray_session: None, settings: Settings) -> None:
    client = RegistryClient.connect(settings)
    same = RegistryClient.connect(settings)
    assert client.handle._actor_id == same.handle._actor_id
    named = ray.get_actor("model-registry", namespace=settings.ray_namespace)
    assert named._actor_id == client.handle._actor_id
    head = next(n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    assert ray.get(client.handle.ping.remote()) == head["NodeID"]
    ray.kill(client.handle, no_restart=True)
