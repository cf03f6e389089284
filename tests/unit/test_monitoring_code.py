"""Prometheus and Grafana as code: the committed files are what the code generates, and every
dashboard query names metrics the platform records (and every metric is on a dashboard)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aiplatform.errors import InvalidArgument
from aiplatform.monitoring.dashboards import (
    DASHBOARDS,
    DATASOURCE_UID,
    all_dashboards,
    referenced_metrics,
)
from aiplatform.monitoring.metrics import METRICS
from aiplatform.monitoring.prometheus import (
    prometheus_config,
    prometheus_yaml,
    service_discovery_path,
)

pytestmark = pytest.mark.unit
MONITORING = Path(__file__).resolve().parents[2] / "cluster" / "monitoring"


def test_the_committed_prometheus_config_discovers_ray_targets() -> None:
    committed = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert committed == prometheus_config(service_discovery_path())
    scrape = committed["scrape_configs"][0]["file_sd_configs"][0]
    assert scrape["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"] and scrape["refresh_interval"] == "5s"
    with pytest.raises(InvalidArgument, match="positive"):
        prometheus_yaml(service_discovery_path(), scrape_interval_s=0)


def test_the_committed_dashboards_are_the_generated_ones() -> None:
    for uid, model in all_dashboards().items():
        assert json.loads((MONITORING / "dashboards" / f"{uid}.json").read_text()) == model, (
            f"regenerate with: aip monitoring dashboards --out {MONITORING / 'dashboards'}"
        )


def test_dashboards_reference_only_recorded_metrics_and_show_every_one() -> None:
    known = {spec.prometheus_name for spec in METRICS.values()}
    shown: set[str] = set()
    for uid, model in all_dashboards().items():
        assert model["uid"] == uid and model["title"] == DASHBOARDS[uid][0] and model["panels"]
        used = referenced_metrics(model)
        assert used and used <= known, used - known
        shown |= used
        for panel in model["panels"]:
            assert panel["datasource"]["uid"] == DATASOURCE_UID and panel["targets"]
            assert all(t["expr"] and t["refId"] for t in panel["targets"])
    assert shown == known, known - shown
