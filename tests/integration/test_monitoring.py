"""The platform's metrics in a real Prometheus (Debian's package, started here on 127.0.0.1 with a
temporary config that discovers Ray's targets from Ray's own service-discovery file)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from aiplatform.monitoring.prometheus import PrometheusClient
from aiplatform.tasks.queue import TaskClient
from tests.conftest import needs_prometheus
from tests.factories import (
    free_port,
    make_task,
    platform_settings,
    register_versions,
    served_platform,
)

pytestmark = needs_prometheus
METRICS_WAIT_S = 90


def _eventually(
    prometheus: PrometheusClient, promql: str, check: Callable[[list[dict[str, Any]]], bool], what: str
) -> list[dict[str, Any]]:
    """Poll ``promql`` until ``check`` holds; on failure, say what Prometheus answered and how its
    scrapes of Ray's targets went (the usual cause of a missing series)."""
    deadline = time.monotonic() + METRICS_WAIT_S
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = prometheus.query(promql)
        if check(result):
            return result
        time.sleep(1)
    raise AssertionError(f"{what}: Prometheus answered {result} to {promql}; its scrapes: {_scrape_health(prometheus)}")


def _scrape_health(prometheus: PrometheusClient) -> list[dict[str, Any]]:
    """How Prometheus's scrapes of Ray's targets went: the usual cause of a missing series."""
    return [
        {key: target.get(key) for key in ("scrapeUrl", "health", "lastError", "lastScrapeDuration")}
        for target in prometheus.targets()
    ]


def _value(result: list[dict[str, Any]]) -> float:
    return sum(r["value"] for r in result)


def test_prometheus_scrapes_ray_and_the_platform_metrics_carry_their_labels(
    prometheus: PrometheusClient, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = f"mon-{uuid.uuid4().hex[:6]}"
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 1)).tolist()
    with (
        platform_settings(tmp_path_factory.mktemp("monitoring"), "mon", prometheus_url=prometheus.url) as settings,
        served_platform(settings) as url,
        httpx.Client(base_url=url, timeout=60) as api,
    ):
        register_versions(settings, model, count=1)
        for _ in range(12):
            assert api.post(f"/v1/models/{model}/predict", json={"array": image}).status_code == 200
        for _ in range(3):  # pixel values out of range: the client's error
            assert api.post(f"/v1/models/{model}/predict", json={"array": [[300, 1], [1, 1]]}).status_code == 400
        assert api.post("/v1/models/no-such-model/predict", json={"array": image}).status_code == 404

        queue = TaskClient.connect(settings)
        template = "cnn-classification"
        task = make_task(queue, start=True)
        queue.claim(task.id, f"aip-task-{task.id}-1")
        queue.finish(task.id, "SUCCEEDED", result={"model": model, "version": 1})

        def expect(promql: str, check: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
            return _eventually(prometheus, promql, check, what)

        expect('up{job="ray"}', lambda r: len(r) >= 1 and _value(r) >= 1, "Ray's targets are scraped")
        assert all(t["labels"]["instance"].startswith("127.0.0.1:") for t in prometheus.targets())
        expect(
            f'sum(ray_aip_requests_total{{model="{model}",version="1",outcome="ok"}})',
            lambda r: _value(r) == 12,
            "12 good predictions",
        )
        expect(
            f'sum(ray_aip_requests_total{{model="{model}",outcome="client_error"}})',
            lambda r: _value(r) == 3,
            "3 client errors",
        )
        expect(
            'sum(ray_aip_requests_total{model="unrouted",outcome="client_error"})',
            lambda r: _value(r) >= 1,
            "the unknown model, without its name as a label",
        )
        p99 = expect(
            f"histogram_quantile(0.99, sum by (le, model, version) "
            f'(ray_aip_request_latency_seconds_bucket{{model="{model}"}}))',
            lambda r: len(r) == 1,
            "a latency p99 per model and version",
        )
        assert 0 < p99[0]["value"] < 10 and p99[0]["metric"]["version"] == "1"
        classes = expect(
            f'ray_aip_predicted_class_total{{model="{model}"}}',
            lambda r: round(_value(r)) == 12,
            "the predicted classes",
        )
        assert {r["metric"]["label"] for r in classes} <= {"0", "1", "2"}
        expect(f'sum(ray_aip_batch_size_count{{model="{model}"}})', lambda r: _value(r) >= 1, "batch sizes")
        expect(
            f'sum(ray_aip_model_load_seconds_count{{model="{model}"}})', lambda r: _value(r) >= 1, "model load times"
        )
        expect('sum(ray_aip_model_cache_total{event="miss"})', lambda r: _value(r) >= 1, "cache misses")
        expect("sum(ray_aip_result_write_lag_seconds_count)", lambda r: _value(r) >= 12, "result-store write lag")
        expect('ray_aip_task_queue_depth{state="SUCCEEDED"}', lambda r: _value(r) >= 1, "the queue's depth by state")
        expect(
            f'sum(ray_aip_task_wait_seconds_count{{template="{template}"}})',
            lambda r: _value(r) >= 1,
            "task wait times by template",
        )
        expect(
            f'sum(ray_aip_task_duration_seconds_count{{template="{template}",outcome="SUCCEEDED"}})',
            lambda r: _value(r) >= 1,
            "task durations by template and outcome",
        )

        # The Monitoring page's data, from this Prometheus: the right totals, a chart per signal.
        # More traffic after the first scrapes, as a service sends it: rates need a sample before
        # an increase (the first requests count in the totals, not in a rate).
        for _ in range(6):
            assert api.post(f"/v1/models/{model}/predict", json={"array": image}).status_code == 200

        def drawn(overview: dict[str, Any]) -> bool:
            """The totals counted and the request rate drawn (the rate needs two samples in its range)."""
            rates = [c for c in overview.get("charts", []) if c["name"] == "request_rate"]
            return (
                overview.get("totals") == {"ok": 18, "client_error": 3}
                and bool(rates)
                and any(v > 0 for series in rates[0]["series"] for _, v in series["points"])
            )

        overview: dict[str, Any] = {}
        deadline = time.monotonic() + METRICS_WAIT_S
        while not drawn(overview) and time.monotonic() < deadline:
            overview = api.get(f"/v1/monitoring/models/{model}", params={"window": "15m"}).json()
            time.sleep(1)
        assert drawn(overview), (overview, _scrape_health(prometheus))
        assert overview["source"] == "prometheus"
        charts = {c["name"]: c for c in overview["charts"]}
        assert [s["labels"] for s in charts["request_rate"]["series"]] == [{"version": "1"}]
        assert max(v for _, v in charts["request_rate"]["series"][0]["points"]) > 0
        assert {s["labels"]["outcome"] for s in charts["error_rate"]["series"]} <= {"client_error"}
        assert charts["latency_p99"]["series"] and charts["batch_size"]["series"]
        assert {s["labels"]["label"] for s in charts["class_share"]["series"]} <= {"0", "1", "2"}
        assert charts["queued_tasks"]["available"] and charts["error_rate"]["thresholds"]
        assert api.get(f"/v1/monitoring/models/{model}", params={"window": "2h"}).status_code == 400
        assert api.get("/v1/monitoring/models/no-such-model").status_code == 404


def test_every_dashboard_query_is_valid_promql_for_the_real_prometheus(prometheus: PrometheusClient) -> None:
    from aiplatform.monitoring.dashboards import all_dashboards

    for model in all_dashboards().values():
        for panel in model["panels"]:
            for target in panel["targets"]:
                prometheus.query(target["expr"])  # InvalidArgument if Prometheus cannot parse it


def test_every_monitoring_chart_is_valid_promql_for_the_real_prometheus(prometheus: PrometheusClient) -> None:
    from aiplatform.alerting.overview import PrometheusSeries, model_overview

    overview = model_overview(PrometheusSeries(prometheus), "any-model", "3", "1h", [], [])
    assert overview["source"] == "prometheus" and len(overview["charts"]) >= 9  # InvalidArgument if one did not parse


def test_a_bad_query_and_a_stopped_prometheus_are_clear_errors(prometheus: PrometheusClient) -> None:
    from aiplatform.errors import InvalidArgument, Unavailable

    with pytest.raises(InvalidArgument, match="Prometheus refused"):
        prometheus.query("sum(")
    with pytest.raises(Unavailable, match="cannot be reached"):
        PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=2).query("up")
