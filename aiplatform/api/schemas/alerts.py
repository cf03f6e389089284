"""Bodies of ``/v1/alerts``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiplatform.api.schemas.base import Body, Number, Record


class AlertPublic(Record):
    id: str
    rule: str
    series: str
    labels: dict[str, str]
    severity: str
    state: str
    message: str
    value: Number | None
    started_at: float
    updated_at: float
    resolved_at: float | None
    project: str = Field(description="the project of the alert's model (default: one on no model)")


class AlertDetail(AlertPublic):
    deliveries: list[dict[str, Any]]


class AlertList(Body):
    alerts: list[AlertPublic]
    firing: int
    next_before: str | None


class Rules(Body):
    rules: list[dict[str, Any]]


class EngineStatus(Record):
    evaluations: int
    interval_s: Number
    signals: dict[str, Any]
    webhooks: int


class Evaluation(Record):
    at: float
    signals: dict[str, Any]
    fired: list[AlertPublic]
    resolved: list[AlertPublic]
    rolled_back: list[dict[str, Any]] = Field(description="canaries the engine rolled back")
