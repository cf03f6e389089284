"""The alert engine on the session's Ray, reading the platform's real metrics from Ray's metrics
agent: a model that becomes slow, an error burst, shifted inputs and a faulty canary."""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from aiplatform.alerting.actor import AlertClient, metrics_targets
from aiplatform.alerting.rules import default_rules
from aiplatform.monitoring.metrics import METRICS
from aiplatform.monitoring.scrape import scrape
from aiplatform.registry import RegistryClient
from aiplatform.serving.router import CACHE_TTL_S
from tests.factories import platform_settings, register_package, served_platform, wait_for

ROUTER_CACHE_S = CACHE_TTL_S + 0.1
"""Every gateway's router follows a moved alias or a new split within its cache TTL."""
WAIT_S = 120.0
BASELINE_REQUESTS = 24
LATENCY_REQUESTS = 8
"""Per latency interval, all at once: one or two forward passes of the slow model."""
THRESHOLD_OVER_WARM = 5
SLOW_OVER_THRESHOLD = 3
"""The latency threshold is 5x the slowest warm request of the fast model measured in this run,
and the slow model takes 3x the threshold: Prometheus's buckets place a quantile within a factor of
2.5 of the truth, so the fast model stays below and the slow one above, on any machine."""


def _write_rules(path: Path, latency_p99_s: float) -> None:
    rules = default_rules(latency_p99_s=latency_p99_s, error_rate=0.05, queue_wait_s=600, drift_psi=0.25)
    path.write_text(yaml.safe_dump([rule.model_dump() for rule in rules]))


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("alerting")
    rules_file = home / "rules.yaml"
    _write_rules(rules_file, latency_p99_s=0.5)  # until the latency test measures this machine
    # The tests drive each evaluation.
    with (
        platform_settings(home, "alert", alert_interval_s=3600, alert_rules_file=rules_file) as settings,
        served_platform(settings) as url,
        httpx.Client(base_url=url, timeout=60) as api,
    ):
        alerts = AlertClient.connect(settings)
        alerts.evaluate_now()  # the first snapshot: intervals start here
        yield {
            "settings": settings,
            "api": api,
            "alerts": alerts,
            "registry": RegistryClient.connect(settings),
            "rules_file": rules_file,
            "sent": collections.Counter(),
        }


def _traffic(platform: dict[str, Any], model: str, count: int, concurrency: int = 4) -> list[tuple[int, float]]:
    """``count`` predictions of ``model``: (status, seconds) of each."""
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 1)).tolist()

    def one(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        status = platform["api"].post(f"/v1/models/{model}/predict", json={"array": image}).status_code
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, range(count)))
    platform["sent"][model] += count
    return answers


def _wait_exported(platform: dict[str, Any], model: str) -> None:
    """Until Ray's metrics endpoints count every request sent to ``model`` (Ray exports them
    every second here, later on a busy machine)."""
    counter = METRICS["aip_requests"].prometheus_name
    wait_for(
        lambda: sum(scrape(metrics_targets()).series(counter, model=model).values()) >= platform["sent"][model],
        WAIT_S,
        f"Ray's metrics to count the {platform['sent'][model]} requests sent to {model}",
    )


def _interval(platform: dict[str, Any], model: str, count: int, concurrency: int = 4) -> dict[str, Any]:
    """One evaluation interval with ``count`` requests in it."""
    answers = _traffic(platform, model, count, concurrency)
    _wait_exported(platform, model)
    return {**platform["alerts"].evaluate_now(), "statuses": [status for status, _ in answers]}


def _firing(platform: dict[str, Any], rule: str, model: str) -> list[dict[str, Any]]:
    return [a.to_dict() for a in platform["alerts"].query(state="firing", rule=rule) if a.labels.get("model") == model]


def test_a_model_that_becomes_slow_raises_a_latency_alert_that_resolves_after_it_recovers(
    platform: dict[str, Any],
) -> None:
    settings, registry, alerts = platform["settings"], platform["registry"], platform["alerts"]
    model = f"slowing-{uuid.uuid4().hex[:4]}"
    fast = register_package(settings, model, seed=0)
    registry.set_alias(model, "production", fast)
    # A warm baseline first (the first requests load the model), measured as the intervals will be.
    _traffic(platform, model, LATENCY_REQUESTS, LATENCY_REQUESTS)
    warm = max(seconds for _, seconds in _traffic(platform, model, BASELINE_REQUESTS, LATENCY_REQUESTS))
    threshold_s = THRESHOLD_OVER_WARM * warm
    _write_rules(platform["rules_file"], latency_p99_s=threshold_s)
    assert {r["name"]: r["threshold"] for r in alerts.reload_rules()}["latency-p99-high"] == threshold_s
    slow = register_package(settings, model, seed=1, delay_ms=SLOW_OVER_THRESHOLD * threshold_s * 1000)
    _wait_exported(platform, model)
    alerts.evaluate_now()  # the warm-up stays out of the intervals below

    first = _interval(platform, model, LATENCY_REQUESTS, LATENCY_REQUESTS)
    assert set(first["statuses"]) == {200}
    assert first["signals"][f"latency_p99{{model={model},version={fast}}}"] < threshold_s, (warm, first["signals"])
    registry.set_alias(model, "production", slow)  # the same model, now slow
    time.sleep(ROUTER_CACHE_S)
    evaluations, fired = [], []  # the rule fires after two slow intervals: at most three are sent
    while len(evaluations) < 3 and not fired:
        evaluations.append(_interval(platform, model, LATENCY_REQUESTS, LATENCY_REQUESTS))
        fired = [a for a in evaluations[-1]["fired"] if a["rule"] == "latency-p99-high"]
    assert fired and fired[0]["labels"] == {"model": model, "version": str(slow)}, (threshold_s, evaluations)
    assert fired[0]["severity"] == "critical" and "latency_p99" in fired[0]["message"]
    assert _firing(platform, "latency-p99-high", model)
    assert platform["api"].get("/v1/alerts", params={"state": "firing"}).json()["firing"] >= 1

    registry.set_alias(model, "production", fast)  # recovered (rolled back)
    time.sleep(ROUTER_CACHE_S)
    for _ in range(3):  # it resolves after two good intervals
        _interval(platform, model, LATENCY_REQUESTS, LATENCY_REQUESTS)
        if not _firing(platform, "latency-p99-high", model):
            break
    assert not _firing(platform, "latency-p99-high", model)
    resolved = [a for a in alerts.query(rule="latency-p99-high") if a.labels.get("model") == model]
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
    # Without a Prometheus the Monitoring page charts the engine's own signals: the same counts.
    overview = platform["api"].get(f"/v1/monitoring/models/{model}", params={"window": "15m"}).json()
    statuses = evaluation["statuses"]
    assert overview["source"] == "signals"
    assert overview["totals"] == {"ok": statuses.count(200), "server_error": statuses.count(500)}, overview
    errors = next(c for c in overview["charts"] if c["name"] == "error_rate")
    assert errors["series"][0]["points"][-1][1] > 0.05 and errors["thresholds"][0]["rule"] == "error-rate-high"
    assert [a["rule"] for a in overview["alerts"]] == ["error-rate-high"]


def test_a_faulty_canary_is_rolled_back_with_an_alert(platform: dict[str, Any]) -> None:
    settings, registry, api = platform["settings"], platform["registry"], platform["api"]
    model = f"canary-{uuid.uuid4().hex[:4]}"
    good = register_package(settings, model, seed=0)
    faulty = register_package(settings, model, seed=2, error_rate=1.0)
    registry.set_alias(model, "production", good)
    assert api.put(f"/v1/models/{model}/traffic", json={"weights": {str(good): 50, str(faulty): 50}}).status_code == 200
    time.sleep(ROUTER_CACHE_S)
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
    time.sleep(ROUTER_CACHE_S)
    assert {status for status, _ in _traffic(platform, model, 10)} == {200}  # all traffic on production again
