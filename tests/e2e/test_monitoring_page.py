"""The Monitoring page in a real browser, on a platform with a real Prometheus: after a burst of
predictions, some failing on purpose, it shows the request and error series with the window's
totals and the error-rate alert that fired, drawn on its chart."""

from __future__ import annotations

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
from aiplatform.monitoring.prometheus import PrometheusClient
from aiplatform.monitoring.scrape import scrape
from aiplatform.registry import RegistryClient
from tests.conftest import needs_prometheus
from tests.e2e.conftest import SCREENSHOTS, needs_browser
from tests.factories import platform_settings, register_package, served_platform, wait_for

pytestmark = [needs_browser, needs_prometheus]
WAIT_S = 120
PAGE_WAIT_MS = 120_000


@pytest.fixture(scope="module")
def platform(prometheus: PrometheusClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("monitoring-page")
    rules = home / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            [r.model_dump() for r in default_rules(latency_p99_s=30, error_rate=0.05, queue_wait_s=600, drift_psi=0.25)]
        )
    )
    # The test drives the alert engine's evaluations (alert_interval_s is long).
    with (
        platform_settings(
            home, "monpage", prometheus_url=prometheus.url, alert_interval_s=3600, alert_rules_file=rules
        ) as settings,
        served_platform(settings) as url,
    ):
        alerts = AlertClient.connect(settings)
        alerts.evaluate_now()  # the first snapshot: the burst falls in the next interval
        yield {"settings": settings, "url": url, "alerts": alerts}


@pytest.fixture(scope="module")
def platform_url(platform: dict[str, Any]) -> str:
    return str(platform["url"])


def test_the_monitoring_page_shows_traffic_errors_totals_and_the_alert(
    page, platform: dict[str, Any], prometheus: PrometheusClient
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    settings = platform["settings"]
    model = f"watched-{uuid.uuid4().hex[:4]}"
    version = register_package(settings, model, error_rate=0.4)  # some requests fail on purpose
    RegistryClient.connect(settings).set_alias(model, "production", version)
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 1)).tolist()
    with httpx.Client(base_url=platform["url"], timeout=60) as api, ThreadPoolExecutor(4) as pool:

        def send(count: int) -> list[int]:
            return list(
                pool.map(
                    lambda _: api.post(f"/v1/models/{model}/predict", json={"array": image}).status_code, range(count)
                )
            )

        def client_errors(count: int) -> list[int]:
            return [api.post(f"/v1/models/{model}/predict", json={"array": [[300]]}).status_code for _ in range(count)]

        # Traffic as a service sends it, not one burst: a rate needs the counter scraped before and
        # after an increase (a series whose first sample holds all its requests has none), so every
        # outcome is seen once and scraped before the burst.
        statuses = client_errors(1)
        while 500 not in statuses or 200 not in statuses:
            statuses += send(1)
        wait_for(
            lambda: len(prometheus.query(f'ray_aip_requests_total{{model="{model}"}}')) >= 3,
            WAIT_S,
            "Prometheus to scrape every outcome's first requests",
        )
        statuses += send(40) + client_errors(3)
    ok, failed = statuses.count(200), statuses.count(500)
    assert ok and failed and ok + failed + statuses.count(400) == len(statuses), statuses
    counter = METRICS["aip_requests"].prometheus_name
    wait_for(
        lambda: sum(scrape(metrics_targets()).series(counter, model=model).values()) >= len(statuses),
        WAIT_S,
        f"Ray's metrics to count the {len(statuses)} requests",
    )
    evaluation = platform["alerts"].evaluate_now()
    assert any(a["rule"] == "error-rate-high" for a in evaluation["fired"]), evaluation["signals"]

    page.goto(f"{platform['url']}/#monitoring/{model}")
    page.select_option("#monitor-window", "15m")
    expect(page.locator("#monitor-source")).to_contain_text("From Prometheus", timeout=PAGE_WAIT_MS)
    # Prometheus scrapes every 5 s: the page (polling) shows the whole burst once it has.
    totals = page.locator("#monitor-totals")
    for outcome, count in (("ok", ok), ("server_error", failed), ("client_error", statuses.count(400))):
        expect(totals.locator(f"tr[data-outcome='{outcome}'] .count")).to_have_text(str(count), timeout=PAGE_WAIT_MS)
    requests = page.locator("svg[data-chart='Requests per second']")
    expect(requests.locator("path.series")).to_have_count(1)
    errors = page.locator("svg[data-chart='Errors by outcome (share of requests)']")
    expect(errors.locator("path.series")).to_have_count(2)  # server and client errors
    expect(errors.locator("line.threshold[data-rule='error-rate-high']")).to_have_count(1)
    expect(errors.locator("rect.alert-band[data-alert-rule='error-rate-high']")).to_have_count(1)
    expect(page.locator("#monitor-alerts tr[data-alert-rule='error-rate-high']")).to_have_count(1)
    for title in ("Latency p99", "Inputs per forward pass (mean)", "Predicted classes (share)"):
        expect(page.locator(f"svg[data-chart='{title}'] path.series").first).to_be_attached()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "20-monitoring.png"), full_page=True)
    assert Path(SCREENSHOTS / "20-monitoring.png").stat().st_size > 0
