"""Bodies of ``/v1/loops``: retraining policies, their runs with their steps, skipped triggers."""

from __future__ import annotations

from typing import Any

from aiplatform.api.schemas.base import Body, Record


class LoopPolicyPublic(Record):
    model: str
    enabled: bool
    schedule: str | None
    on_alerts: list[str]
    on_new_data: bool
    cooldown_s: float
    data: dict[str, Any]
    train: dict[str, Any]
    gate: dict[str, Any]
    canary: dict[str, Any]
    created_at: float
    updated_at: float
    marks: dict[str, Any]


class LoopPolicyList(Body):
    policies: list[LoopPolicyPublic]


class LoopRunPublic(Record):
    id: str
    model: str
    state: str
    trigger: dict[str, Any]
    steps: list[dict[str, Any]]
    context: dict[str, Any]
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None


class LoopRunList(Body):
    runs: list[LoopRunPublic]


class SkippedTrigger(Record):
    model: str
    at: float
    trigger: dict[str, Any]
    reason: str


class SkippedList(Body):
    skipped: list[SkippedTrigger]


class TriggerOutcome(Body):
    run: LoopRunPublic | None = None
    skipped: SkippedTrigger | None = None


class LoopLineage(Body):
    run: str
    model: str
    chain: list[dict[str, Any]]


class LoopDelivery(Record):
    id: int
    run_id: str
    url: str
    attempts: int
    next_at: float | None
    done_at: float | None
    error: str | None


class LoopDeliveryList(Body):
    deliveries: list[LoopDelivery]
