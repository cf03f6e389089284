"""The alert engine on the session's Ray, reading the platform's real metrics from Ray's metrics
agent: a model that becomes slow, an error burst, shifted inputs and a faulty canary."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from aiplatform.alerting.actor import AlertsClient
from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from tests.factories import register_package, served_platform

EXPORT_WAIT_S = 3.0  # Ray exports metrics every second here (conftest); one scrape after that


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = Settings(home=Path(tmp_path_factory.mktemp("alerting")), ray_namespace=f"alert-{uuid.uuid4().hex[:8]}",
                        alert_interval_s=3600, alert_latency_p99_s=0.25)  # the tests drive each evaluation
    with served_platform(settings) as url, httpx.Client(base_url=url, timeout=60) as api:
        alerts = AlertsClient.connect(settings)
        alerts.evaluate_now()  # the first snapshot: intervals start here
        yield {"settings": settings, "api": api, "alerts": alerts, "registry": RegistryClient.connect(settings)}


def _traffic(api: httpx.Client, model: str, count: int, concurrency: int = 4, **params: Any) -> list[int]:
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 1)).tolist()

    def one(_: int) -> int:
        return api.post(f"/v1/models/{model}/predict", params=params, json={"array": image}).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def _interval(platform: dict[str, Any], model: str, count: int, **params: Any) -> dict[str, Any]:
    """One evaluation interval with ``count`` requests in it."""
    statuses = _traffic(platform["api"], model, count, **params)
    time.sleep(EXPORT_WAIT_S)
    return {**platform["alerts"].evaluate_now(), "statuses": statuses}


def _firing(platform: dict[str, Any], rule: str, model: str) -> list[dict[str, Any]]:
    return [a.to_dict() for a in platform["alerts"].query(state="firing", rule=rule) if a.labels.get("model") == model]


def test_a_model_that_becomes_slow_raises_a_latency_alert_that_resolves_after_it_recovers(platform: dict[str, Any]) -> None:
    settings, registry = platform["settings"], platform["registry"]
    model = f"slowing-{uuid.uuid4().hex[:4]}"
    fast = register_package(settings, model, seed=0)
    slow = register_package(settings, model, seed=1, delay_ms=400)
    registry.set_alias(model, "production", fast)
    first = _interval(platform, model, 12)
    assert set(first["statuses"]) == {200}
    assert first["signals"][f"latency_p99{{model={model},version={fast}}}"] < 0.25
    registry.set_alias(model, "production", slow)  # the same model, now slow
    time.sleep(0.6)  # the routers' alias cache
    evaluations = [_interval(platform, model, 12) for _ in range(3)]
    fired = [a for e in evaluations for a in e["fired"] if a["rule"] == "latency-p99-high"]
    assert fired and fired[0]["labels"] == {"model": model, "version": str(slow)}, evaluations
    assert fired[0]["severity"] == "critical" and "latency_p99" in fired[0]["message"]
    assert _firing(platform, "latency-p99-high", model)
    assert platform["api"].get("/v1/alerts", params={"state": "firing"}).json()["firing"] >= 1

    registry.set_alias(model, "production", fast)  # recovered (rolled back)
    time.sleep(0.6)
    for _ in range(3):
        _interval(platform, model, 12)
    assert not _firing(platform, "latency-p99-high", model)
    resolved = [a for a in platform["alerts"].query(rule="latency-p99-high") if a.labels.get("model") == model]
    assert resolved[0].state == "resolved" and resolved[0].resolved_at > resolved[0].started_at


def test_an_error_burst_raises_an_error_rate_alert(platform: dict[str, Any]) -> None:
    settings, registry = platform["settings"], platform["registry"]
    model = f"erring-{uuid.uuid4().hex[:4]}"
    version = register_package(settings, model, error_rate=0.6)
    registry.set_alias(model, "production", version)
    evaluation = _interval(platform, model, 20, concurrency=1)
    assert 500 in evaluation["statuses"]
    fired = [a for a in evaluation["fired"] if a["rule"] == "error-rate-high"]
    assert fired and fired[0]["labels"]["model"] == model, evaluation["signals"]
    assert evaluation["signals"][f"error_rate{{model={model},version={version}}}"] > 0.05


def test_a_faulty_canary_is_rolled_back_with_an_alert(platform: dict[str, Any]) -> None:
    settings, registry, api = platform["settings"], platform["registry"], platform["api"]
    model = f"canary-{uuid.uuid4().hex[:4]}"
    good = register_package(settings, model, seed=0)
    faulty = register_package(settings, model, seed=2, error_rate=1.0)
    registry.set_alias(model, "production", good)
    assert api.put(f"/v1/models/{model}/traffic", json={"weights": {str(good): 50, str(faulty): 50}}).status_code == 200
    time.sleep(0.6)
    rolled_back: list[dict[str, Any]] = []
    for _ in range(3):
        evaluation = _interval(platform, model, 30, concurrency=1)
        rolled_back += evaluation["rolled_back"]
        if rolled_back:
            break
    assert rolled_back and rolled_back[0]["model"] == model and rolled_back[0]["version"] == faulty
    assert registry.get_traffic(model) == {}
    [alert] = _firing(platform, "canary-rollback", model)
    assert alert["severity"] == "critical" and "error rate" in alert["message"]
    time.sleep(0.6)
    assert set(_traffic(api, model, 10)) == {200}  # all traffic on production again
