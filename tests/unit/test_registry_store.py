from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.errors import Conflict, IntegrityError, InvalidArgument, NotFound
from aiplatform.registry import RegistryStore
from aiplatform.storage import open_storage, sha256_bytes


@pytest.fixture()
def store(tmp_path: Path) -> RegistryStore:
    return RegistryStore(tmp_path / "state" / "registry.sqlite", open_storage(str(tmp_path / "art")))


def _upload(store: RegistryStore, name: str, content: bytes) -> tuple[str, str]:
    key = f"packages/{name}/{sha256_bytes(content)[:12]}.zip"
    store.storage.put_bytes(key, content)
    return key, sha256_bytes(content)


def _register(store: RegistryStore, name: str = "mnist-cnn", content: bytes = b"pkg", **kw):  # type: ignore[no-untyped-def]
    key, digest = _upload(store, name, content)
    return store.register_version(name, package_key=key, sha256=digest, template="cnn-classification", **kw)


def test_versions_count_up_and_keep_metrics_and_lineage(store: RegistryStore) -> None:
    v1 = _register(store, content=b"a", metrics={"test_accuracy": 0.99}, lineage={"dataset": "mnist@x"})
    v2 = _register(store, content=b"b")
    assert (v1.version, v2.version) == (1, 2)
    got = store.get_version("mnist-cnn", 1)
    assert got.metrics == {"test_accuracy": 0.99}
    assert got.lineage == {"dataset": "mnist@x"}
    assert got.package_uri.endswith(got.package_key)
    assert [v.version for v in store.list_versions("mnist-cnn")] == [2, 1]
    assert store.list_models()[0]["latest_version"] == 2


def test_idempotency_key_returns_the_same_version(store: RegistryStore) -> None:
    first = _register(store, content=b"a", idempotency_key="run-1")
    again = _register(store, content=b"a", idempotency_key="run-1")
    assert first.version == again.version == 1
    assert len(store.list_versions("mnist-cnn")) == 1


def test_a_version_never_points_at_a_missing_or_different_package(store: RegistryStore) -> None:
    with pytest.raises(NotFound, match="not found in storage"):
        store.register_version("m", package_key="packages/m/none.zip", sha256="0" * 64, template="t")
    key, _ = _upload(store, "m", b"real")
    with pytest.raises(IntegrityError, match="has sha256"):
        store.register_version("m", package_key=key, sha256="0" * 64, template="t")
    with pytest.raises(NotFound):
        store.list_versions("m")


def test_aliases_move_resolve_and_keep_history(store: RegistryStore) -> None:
    _register(store, content=b"a")
    _register(store, content=b"b")
    store.set_alias("mnist-cnn", "production", 1)
    store.set_alias("mnist-cnn", "production", 2)
    assert store.resolve("mnist-cnn", "production").version == 2
    assert store.resolve("mnist-cnn", "1").version == 1
    assert store.resolve("mnist-cnn", "latest").version == 2
    assert store.get_version("mnist-cnn", 2).aliases == ("production",)
    history = store.alias_history("mnist-cnn", "production")
    assert [(h["version"], h["previous_version"]) for h in history] == [(2, 1), (1, None)]
    store.delete_alias("mnist-cnn", "production")
    with pytest.raises(NotFound, match="alias=production"):
        store.resolve("mnist-cnn", "production")


def test_bad_names_aliases_and_unknown_versions(store: RegistryStore) -> None:
    _register(store)
    with pytest.raises(InvalidArgument, match="Model name '../x' is invalid"):
        store.get_version("../x", 1)
    with pytest.raises(InvalidArgument, match="Alias 'Prod!' is invalid"):
        store.set_alias("mnist-cnn", "Prod!", 1)
    with pytest.raises(InvalidArgument, match="reserved"):
        store.set_alias("mnist-cnn", "latest", 1)
    with pytest.raises(NotFound, match=r"Model version \(name=mnist-cnn, version=9\) not found"):
        store.set_alias("mnist-cnn", "production", 9)


def test_delete_refuses_aliased_versions_and_removes_the_package(store: RegistryStore) -> None:
    v = _register(store)
    store.set_alias("mnist-cnn", "production", 1)
    with pytest.raises(Conflict, match="alias"):
        store.delete_version("mnist-cnn", 1)
    store.delete_alias("mnist-cnn", "production")
    store.delete_version("mnist-cnn", 1)
    assert not store.storage.exists(v.package_key)
    with pytest.raises(NotFound):
        store.get_version("mnist-cnn", 1)


def test_state_survives_reopening(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "art"))
    first = RegistryStore(tmp_path / "r.sqlite", storage)
    _register(first)
    first.set_alias("mnist-cnn", "staging", 1)
    first.close()
    second = RegistryStore(tmp_path / "r.sqlite", storage)
    assert second.resolve("mnist-cnn", "staging").version == 1


def test_names_and_aliases_are_matched_whole(store: RegistryStore) -> None:
    _register(store)
    store.set_alias("mnist-cnn", "production", 1)
    for alias in ("production\n", "production\nx", " production"):
        with pytest.raises(InvalidArgument, match="Alias"):
            store.set_alias("mnist-cnn", alias, 1)
        with pytest.raises(InvalidArgument):
            store.resolve("mnist-cnn", alias)
    key, digest = _upload(store, "mnist-cnn", b"other")
    with pytest.raises(InvalidArgument, match="Model name"):
        store.register_version("mnist-cnn\n", package_key=key, sha256=digest, template="cnn-classification")
    assert list(store.aliases("mnist-cnn")) == ["production"]


def test_canary_weights_are_finite_relative_and_stored_as_percentages(store: RegistryStore) -> None:
    _register(store, content=b"a")
    _register(store, content=b"b")
    assert store.set_traffic("mnist-cnn", {1: 3, 2: 1}) == {1: 75.0, 2: 25.0}
    for weights in ({1: float("inf")}, {1: 1e308, 2: 1e308}, {1: 0, 2: 0}, {1: True}):
        with pytest.raises(InvalidArgument, match="finite"):
            store.set_traffic("mnist-cnn", weights)
    assert store.get_traffic("mnist-cnn") == {1: 75.0, 2: 25.0}  # a refused split changes nothing


def test_versions_and_alias_history_come_in_pages(store: RegistryStore) -> None:
    for i in range(7):
        version = _register(store, "paged", content=f"pkg-{i}".encode())
        store.set_alias("paged", "production", version.version)
    assert [v.version for v in store.list_versions("paged", limit=3)] == [7, 6, 5]
    assert [v.version for v in store.list_versions("paged", limit=3, before=5)] == [4, 3, 2]
    assert [v.version for v in store.list_versions("paged", before=2)] == [1]
    assert [e["version"] for e in store.alias_history("paged", "production", limit=2)] == [7, 6]
    assert len(store.alias_history("paged", "production")) == 7
    with pytest.raises(InvalidArgument, match="limit"):
        store.list_versions("paged", limit=0)
