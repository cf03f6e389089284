from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.registry import RegistryStore
from aiplatform.serving.router import Router
from aiplatform.storage import open_storage, sha256_bytes


@pytest.fixture()
def registry(tmp_path: Path) -> RegistryStore:
    store = RegistryStore(tmp_path / "r.sqlite", open_storage(str(tmp_path / "art")))
    for i in range(3):
        data = f"pkg-{i}".encode()
        store.storage.put_bytes(f"p/{i}", data)
        store.register_version("m", package_key=f"p/{i}", sha256=sha256_bytes(data), template="t")
    store.set_alias("m", "production", 1)
    return store


def test_default_route_follows_production_and_sees_moves_within_the_ttl(registry: RegistryStore) -> None:
    router = Router(registry, ttl_s=0.2)
    assert router.resolve("m").version == 1
    registry.set_alias("m", "production", 2)
    time.sleep(0.25)
    assert router.resolve("m").version == 2
    assert router.resolve("m", version=3).version == 3
    registry.set_alias("m", "staging", 3)
    assert router.resolve("m", alias="staging").version == 3


def test_canary_split_follows_the_weights(registry: RegistryStore) -> None:
    registry.set_traffic("m", {1: 90, 2: 10})
    router = Router(registry, seed=7)
    counts = collections.Counter(router.resolve("m").version for _ in range(2000))
    assert 0.85 < counts[1] / 2000 < 0.95 and counts[1] + counts[2] == 2000
    registry.set_traffic("m", {})
    router.invalidate()
    assert {router.resolve("m").version for _ in range(50)} == {1}


def test_bad_routes(registry: RegistryStore) -> None:
    router = Router(registry)
    with pytest.raises(InvalidArgument, match="either version or alias"):
        router.resolve("m", version=1, alias="production")
    with pytest.raises(NotFound, match="version=9"):
        router.resolve("m", version=9)
    with pytest.raises(NotFound, match="alias=nope"):
        router.resolve("m", alias="nope")
    with pytest.raises(InvalidArgument, match=">= 0"):
        registry.set_traffic("m", {1: -1})
    with pytest.raises(NotFound):
        registry.set_traffic("m", {7: 1})


def test_set_canary_warms_the_candidate_and_splits_against_production(registry: RegistryStore) -> None:
    from aiplatform.errors import Conflict
    from aiplatform.serving.deployer import describe_split, set_canary

    warmed: list[str] = []
    weights = set_canary(registry, "m", 3, 10, warm=warmed.append)
    assert weights == {1: 90.0, 3: 10.0} and warmed == ["m:3"]
    assert describe_split("m", weights) == "m: v1 90%, v3 10%"
    with pytest.raises(InvalidArgument, match="between 0 and 100"):
        set_canary(registry, "m", 3, 100, warm=warmed.append)
    with pytest.raises(Conflict, match="already is production"):
        set_canary(registry, "m", 1, 5, warm=warmed.append)
    with pytest.raises(NotFound):
        set_canary(registry, "m", 9, 5, warm=warmed.append)
    assert registry.get_traffic("m") == {1: 90.0, 3: 10.0}
    assert set_canary(registry, "m", None, 0, warm=warmed.append) == {}
    with pytest.raises(InvalidArgument, match=">= 0"):
        registry.set_traffic("m", {1: float("nan")})


def test_misses_are_cached_like_hits_and_the_cache_stays_bounded(registry: RegistryStore) -> None:
    from aiplatform.serving import router as router_module

    calls = collections.Counter()

    class Counting:
        def resolve(self, name: str, ref: str | int):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return registry.resolve(name, ref)

        def get_traffic(self, name: str) -> dict[int, float]:
            return registry.get_traffic(name)

    router = Router(Counting(), ttl_s=60)
    for _ in range(3):
        with pytest.raises(NotFound):
            router.resolve("ghost", version=1)
    assert calls["ghost"] == 1  # one registry call per name and TTL, not one per request
    for index in range(router_module.MAX_CACHED + 100):
        with pytest.raises(NotFound):
            router.resolve(f"made-up-{index}", version=1)
    assert len(router._cache) == router_module.MAX_CACHED
    assert router.resolve("m", version=2).version == 2


class _Outage:
    """The registry behind a switch: while ``down`` its calls hang (an actor on a lost head node
    neither answers nor fails) until ``up()``; ``calls`` counts what reached it."""

    def __init__(self, store: RegistryStore) -> None:
        import threading

        self.store, self.calls = store, 0
        self._answering = threading.Event()
        self._answering.set()

    def down(self) -> None:
        self._answering.clear()

    def up(self) -> None:
        self._answering.set()

    def _wait(self) -> None:
        self.calls += 1
        self._answering.wait()

    def resolve(self, name: str, ref: str | int):  # type: ignore[no-untyped-def]
        self._wait()
        return self.store.resolve(name, ref)

    def get_traffic(self, name: str) -> dict[int, float]:
        self._wait()
        return self.store.get_traffic(name)


def test_routes_known_before_the_registry_went_away_keep_answering(registry: RegistryStore) -> None:
    from aiplatform.errors import Unavailable

    outage = _Outage(registry)
    router = Router(outage, ttl_s=0.05, registry_wait_s=0.2)
    assert router.resolve("m").version == 1 and router.resolve("m", version=2).version == 2
    outage.down()
    time.sleep(0.1)  # past the TTL: the next resolution asks the registry, which does not answer
    assert router.resolve("m").version == 1  # the last answer stands, after registry_wait_s
    assert router.registry_unreachable
    asked = outage.calls
    for _ in range(20):  # from now on no request waits: the cache answers, refreshes go behind
        assert router.resolve("m").version == 1 and router.resolve("m", version=2).version == 2
    assert outage.calls <= asked + 3  # one refresh in flight per route at most, all still hanging
    with pytest.raises(Unavailable, match="registry cannot be reached"):
        router.resolve("m", version=3)  # never resolved: nothing to fall back on
    registry.set_alias("m", "production", 2)
    outage.up()  # the head is back: the hanging refreshes answer, then a refresh sees the move

    def moved() -> bool:
        return router.resolve("m").version == 2 and not router.registry_unreachable

    deadline = time.monotonic() + 30
    while not moved():
        assert time.monotonic() < deadline, "the router never saw the registry again"
        time.sleep(0.05)
    assert router.resolve("m", version=3).version == 3


def test_a_bad_reference_is_the_callers_error_not_an_outage(registry: RegistryStore) -> None:
    router = Router(registry)
    with pytest.raises(InvalidArgument):
        router.resolve("m", alias="bad alias!")
    assert not router.registry_unreachable
