"""Bodies of ``/v1/monitoring``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiplatform.api.schemas.base import Body, Number


class ModelMonitoring(Body):
    """A model's charts over a window, with request totals and the alerts in it."""

    model: str
    version: str | None
    window: str
    since: Number
    until: Number
    step_s: Number
    source: str = Field(description="prometheus, or the alert engine's history")
    charts: list[dict[str, Any]] = Field(description="each chart's name, title, unit, series and thresholds")
    totals: dict[str, Any] = Field(description="requests by outcome")
    alerts: list[dict[str, Any]]
    quality: dict[str, Any] | None = Field(
        None,
        description="accuracy and macro-F1 per version of the predictions labeled in the quality window "
        "(window_s, since, until, versions: model, version, labeled, correct, accuracy, macro_f1)",
    )
    source_problem: str | None = Field(None, description="why Prometheus did not answer (only then)")
