"""Routing a model's calls to its project's model servers (``aiplatform.serving.pools``): the
shared ones unless its project's quota names replicas, a refusal when it names none."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from aiplatform.errors import Conflict, Unavailable
from aiplatform.serving.dataplane import ServeModelServers
from aiplatform.serving.pools import PoolRoutes, pool_app_name

pytestmark = pytest.mark.unit

PROJECTS = {"shared-model": "default", "team-model": "team", "idle-model": "idle"}


def routes(quotas: dict[str, int], ttl_s: float = 2.0) -> tuple[PoolRoutes, list[int]]:
    reads: list[int] = []

    def replica_quotas() -> dict[str, int]:
        reads.append(1)
        return dict(quotas)

    return PoolRoutes("aip", PROJECTS.get, replica_quotas, ttl_s), reads


def test_a_model_goes_to_its_projects_pool_only_when_the_quota_names_replicas() -> None:
    pools, _ = routes({"team": 2, "idle": 0})
    assert pools.app_for("shared-model", now=0) is None
    assert pools.app_for("unknown-model", now=0) is None
    assert pools.app_for("team-model", now=0) == pool_app_name("aip", "team") == "aip-models-team"
    with pytest.raises(Conflict, match="'idle' may run 0 serving replicas"):
        pools.app_for("idle-model", now=0)


def test_the_quotas_are_read_once_a_ttl_and_a_failed_read_keeps_the_last() -> None:
    quotas = {"team": 1}
    pools, reads = routes(quotas, ttl_s=2.0)
    assert pools.app_for("team-model", now=10) == "aip-models-team"
    assert pools.app_for("team-model", now=11) == "aip-models-team"
    assert len(reads) == 1
    quotas.clear()  # the quota unset: the model goes back to the shared servers after the TTL
    assert pools.app_for("team-model", now=11.5) == "aip-models-team"
    assert pools.app_for("team-model", now=12) is None
    assert len(reads) == 2

    def broken() -> dict[str, int]:
        raise OSError("database is locked")

    pools.replica_quotas = broken
    pools._quotas = {"team": 1}
    assert pools.app_for("team-model", now=20) == "aip-models-team"


class FakeHandle:
    def __init__(self, app: str) -> None:
        self.app = app
        self.calls: list[tuple[str, str]] = []

    def options(self, multiplexed_model_id: str) -> Any:
        handle = self

        class Method:
            def __init__(self, method: str) -> None:
                self.method = method

            def remote(self, model_id: str, *args: Any) -> Any:
                handle.calls.append((self.method, model_id))
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                future.set_result([{"label": handle.app}])
                return future

        class Bound:
            predict = Method("predict")
            model_config = Method("model_config")

        assert multiplexed_model_id
        return Bound()


def test_the_gateways_model_servers_follow_the_routes() -> None:
    shared, pool = FakeHandle("shared"), FakeHandle("aip-models-team")
    pools, _ = routes({"team": 1, "idle": 0})
    servers = ServeModelServers(shared, pools, pool_handle=lambda app: {"aip-models-team": pool}[app])

    async def calls() -> tuple[Any, Any]:
        batch = np.zeros((1, 2))
        return await servers.predict("shared-model:1", batch), await servers.predict("team-model:3", batch)

    assert asyncio.run(calls()) == ([{"label": "shared"}], [{"label": "aip-models-team"}])
    assert shared.calls == [("predict", "shared-model:1")] and pool.calls == [("predict", "team-model:3")]
    with pytest.raises(Conflict, match="0 serving replicas"):
        servers.predict("idle-model:1", np.zeros((1, 2)))


def test_unknown_quotas_route_to_the_shared_servers_and_a_gateway_reads_them_off_its_loop() -> None:
    unknown = PoolRoutes("aip", PROJECTS.get, lambda: None)
    assert unknown.app_for("team-model", now=0) is None  # no access store on this node

    reads: list[str] = []
    allowed = threading.Event()

    def replica_quotas() -> dict[str, int]:
        reads.append(threading.current_thread().name)
        if len(reads) > 1:
            allowed.wait(30)
        return {"team": 1}

    routes = PoolRoutes("aip", PROJECTS.get, replica_quotas, ttl_s=0.0, background=True)
    assert reads == [threading.current_thread().name]  # the first read at once, on this thread
    assert routes.app_for("team-model") == "aip-models-team"
    assert routes.app_for("team-model") == "aip-models-team"  # a read in flight: no second one
    allowed.set()
    deadline = time.monotonic() + 30
    while len(reads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reads[1] == "aip-pool-quotas"


def test_a_pool_that_is_not_running_is_refused_and_serve_asked_again_only_after_a_ttl() -> None:
    asked: list[str] = []

    def missing(app: str) -> Any:
        asked.append(app)
        raise KeyError(f"Deployment {app} not found")

    pools, _ = routes({"team": 1})
    servers = ServeModelServers(FakeHandle("shared"), pools, pool_handle=missing)
    for _ in range(3):
        with pytest.raises(Unavailable, match="'aip-models-team' are not running"):
            servers.predict("team-model:1", np.zeros((1, 2)))
    assert asked == ["aip-models-team"]


def test_a_models_project_that_would_wait_on_the_head_is_asked_off_the_event_loop() -> None:
    """Off the head node a model's project is asked of the registry's actor: the data plane
    (on its event loop) asks from a worker thread the first time, and on the loop once kept."""
    asked_on: list[str] = []
    kept: dict[str, str] = {}

    def project_of(name: str) -> str | None:
        asked_on.append(threading.current_thread().name)
        kept[name] = PROJECTS[name]
        return kept[name]

    pools = PoolRoutes("aip", project_of, lambda: {"team": 1}, 2.0, project_blocks=lambda name: name not in kept)
    pool = FakeHandle("aip-models-team")
    servers = ServeModelServers(FakeHandle("shared"), pools, pool_handle=lambda app: pool)

    async def calls() -> tuple[Any, Any, str]:
        loop_thread = threading.current_thread().name
        first = await servers.predict("team-model:1", np.zeros((1, 2)))
        second = await servers.predict("team-model:1", np.zeros((1, 2)))
        return first, second, loop_thread

    first, second, loop_thread = asyncio.run(calls())
    assert first == second == [{"label": "aip-models-team"}]
    assert asked_on[0] != loop_thread and asked_on[1:] == [loop_thread]
