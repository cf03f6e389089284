"""Serving under trouble: a model-server replica killed under load, and overload answered at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import ray

from aiplatform.settings import Settings
from tests.factories import (
    fault_table_figure,
    model_server_replicas,
    platform_settings,
    register_versions,
    served_platform,
    wait_for,
)

BODY = {"array": [[0, 255], [255, 0]]}


@pytest.fixture(scope="module")
def two_replicas(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """The platform app with two model-server replicas (autoscaling floor of 2)."""
    with platform_settings(
        tmp_path_factory.mktemp("faults"), "faults", serve_min_replicas=2, serve_max_replicas=2
    ) as settings:
        register_versions(settings, "tiny")
        with served_platform(settings) as url:
            yield url, settings


def test_a_replica_killed_under_load_fails_no_request(two_replicas: tuple[str, Settings]) -> None:
    url, settings = two_replicas
    replicas = model_server_replicas(settings.serve_app_name)
    assert len(replicas) == 2
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                statuses.append(client.post("/v1/models/tiny/predict", json=BODY).status_code)

    with httpx.Client(base_url=url, timeout=60) as client:  # the replicas load the model first
        for _ in range(8):
            assert client.post("/v1/models/tiny/predict", json=BODY).status_code == 200
    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(statuses) >= 50, 60, "50 answers before the kill")  # a busy machine is slower, not failing
    served_before_kill = len(statuses)
    ray.kill(replicas[0], no_restart=True)
    wait_for(lambda: len(statuses) >= served_before_kill + 100, 60, "100 answers after the kill")
    stop.set()
    for thread in threads:
        thread.join()
    failed = [s for s in statuses if s != 200]
    assert served_before_kill > 20 and len(statuses) > served_before_kill + 20
    # The gateway resends the batches of a lost replica: in-flight requests are not lost either.
    assert not failed, f"{len(failed)} of {len(statuses)} failed: {set(failed)}"
    fault_table_figure(
        "replica",
        f"one of two model-server replicas killed under 8 clients: {len(failed)} of {len(statuses)} requests failed",
    )


def test_overload_answers_503_with_retry_after_at_once(two_replicas: tuple[str, Settings]) -> None:
    from serve_apps.app import deploy_app

    url, settings = two_replicas
    deploy_app(settings.model_copy(update={"serve_gateway_max_ongoing": 2, "serve_gateway_max_queued": 2}))

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/v1/models/tiny/predict", json=BODY) for _ in range(150)))

    started = time.perf_counter()
    answers = asyncio.run(burst())
    elapsed = time.perf_counter() - started
    codes = [a.status_code for a in answers]
    rejected = [a for a in answers if a.status_code == 503]
    assert set(codes) <= {200, 503}, set(codes)
    assert rejected and codes.count(200) >= 2, codes
    assert all(a.headers.get("retry-after") == "1" for a in rejected)
    assert elapsed < 30
    # Once the burst is over, requests are served again.
    assert httpx.post(f"{url}/v1/models/tiny/predict", json=BODY, timeout=30).status_code == 200
