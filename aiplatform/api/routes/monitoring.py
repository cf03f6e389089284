"""Monitoring over time: per model, the charts of the Monitoring page and ``aip monitoring show``.

A model of another project than the request's is a 404 worded as for one that does not exist
(``ModelScopeDep``); the alerts shown are the project's."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter

from aiplatform.alerting.overview import HistorySeries, PrometheusSeries, model_overview, window_seconds
from aiplatform.api.deps import AlertsDep, RegistryDep, ResultsDep, SettingsDep
from aiplatform.api.schemas.monitoring import ModelMonitoring
from aiplatform.api.scope import ModelScopeDep
from aiplatform.errors import NotFound, Unavailable
from aiplatform.monitoring.prometheus import PrometheusClient

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"])
logger = logging.getLogger(__name__)
ALERTS_SCANNED = 1000


@router.get("/models/{name}", response_model=ModelMonitoring, response_model_exclude_unset=True)
def model_monitoring(
    name: str,
    registry: RegistryDep,
    scope: ModelScopeDep,
    engine: AlertsDep,
    results: ResultsDep,
    settings: SettingsDep,
    window: str = "1h",
    version: int | None = None,
) -> dict[str, Any]:
    """Request rate, errors by outcome, latency p50/p99, batch sizes, class shares, drift and
    live quality of ``name`` (one version, or every version) over ``window`` (15m, 1h, 6h, 24h
    or 7d), with the training queue's depth and wait, the alert rules' thresholds and the alerts
    in the window. From Prometheus when the platform has one (``AIP_PROMETHEUS_URL``), else from
    the alert engine's signal history (``source`` says which). ``quality``: accuracy and
    macro-F1 per version of the predictions labeled so far, over the quality window
    (``AIP_QUALITY_WINDOW_S``), straight from the result store."""
    window_seconds(window)  # a bad window is a 400 before anything is asked
    if not any(m["name"] == name for m in registry.list_models(scope.project)):
        raise NotFound(f"Model {name!r} not found")
    rules = engine.rules()
    alerts = engine.query(limit=ALERTS_SCANNED, project=scope.project)
    version_text = str(version) if version is not None else None

    def overview(source: PrometheusSeries | HistorySeries) -> dict[str, Any]:
        return model_overview(source, name, version_text, window, rules, alerts)

    now = time.time()
    figures = results.quality(model=name, version=version, since=now - settings.quality_window_s, until=now)
    quality = {
        "window_s": settings.quality_window_s,
        "since": now - settings.quality_window_s,
        "until": now,
        "versions": [q.to_dict() for q in figures],
    }
    history = HistorySeries(engine.history)
    if not settings.prometheus_url:
        return {**overview(history), "quality": quality}
    try:
        return {**overview(PrometheusSeries(PrometheusClient(settings.prometheus_url))), "quality": quality}
    except Unavailable as exc:  # Prometheus went away: the engine's history still answers
        logger.warning("monitoring falls back to the alert engine's signals: %s", exc)
        return {**overview(history), "quality": quality, "source_problem": exc.message}
