"""A model's retraining policy: what starts a run, what it trains on and how, the gate, the canary.

Checked as it is stored (a cron expression that does not parse, a margin or weight out of range:
:class:`InvalidArgument` naming it); the names it refers to (alert rules, the model) are checked
against the running platform by the engine (``aiplatform.loops.engine``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiplatform.errors import InvalidArgument
from aiplatform.loops.cron import parse_cron

ANY_ALERT = "any"
"""In ``on_alerts``: any alert naming the model starts a run."""
DEFAULT_CANARY_ALERTS = ("canary-rollback", "error-rate-high", "latency-p99-high")
SPLIT_PARAMS = ("seed", "val_fraction", "test_fraction")
"""Template parameters that split production's data: a run keeps production's, so production's
test rows (the gate's original slice) stay test rows and the candidate never trains on them."""


class DataPolicy(BaseModel):
    """The run's data: the production version's training data plus labeled predictions since."""

    model_config = ConfigDict(extra="forbid")

    max_labeled: int = Field(10_000, ge=1, le=1_000_000, description="most labeled predictions one run takes (newest)")
    min_labeled: int = Field(0, ge=0, description="fewer labeled predictions than this: the run stops (no data)")
    holdout_fraction: float = Field(0.3, gt=0, lt=1, description="share of the fresh rows kept out for the gate")
    seed: int = Field(0, ge=0, description="seeds the split of the fresh rows")


class TrainPolicy(BaseModel):
    """How: the production version's template and parameters, with overrides; or a sweep over
    ``sweep.space`` around them (``aiplatform.tasks.sweeps``: its best trial is the candidate)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, description="overrides of production's parameters")
    priority: int = Field(0, ge=-100, le=100)
    sweep: dict[str, Any] | None = Field(
        None, description="a sweep's space, metric, mode, trials... (the sweep template's fields but template/params)"
    )

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        _refuse_split(value, "params")
        return value

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        _refuse_split(value.get("space") or {}, "sweep.space")
        from aiplatform.tasks.sweeps.params import SweepParams

        fixed = sorted({"template", "params", "deploy"} & set(value))
        if fixed:
            raise ValueError(f"a loop's sweep takes production's template and parameters; drop {fixed}")
        SweepParams.model_validate({**value, "template": "checked-later"})  # the space, metric, trials...
        return value


def _refuse_split(params: dict[str, Any], where: str) -> None:
    named = [name for name in SPLIT_PARAMS if name in params]
    if named:
        raise ValueError(
            f"{where} may not set {named}: a run splits production's data as production did, so the gate's"
            " test split is one neither model trained on"
        )


class GatePolicy(BaseModel):
    """The candidate must beat production by ``margin`` accuracy on both slices."""

    model_config = ConfigDict(extra="forbid")

    margin: float = Field(0.0, ge=0, le=1, description="accuracy the candidate must gain on each slice")
    min_fresh: int = Field(1, ge=0, description="fresh held-out rows needed for the fresh check to count")


class CanaryPolicy(BaseModel):
    """The canary: its share of traffic and how long it is watched before the decision."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(10.0, gt=0, lt=100, description="percent of the default route the candidate gets")
    watch_s: float = Field(300.0, ge=0, le=7 * 86400, description="seconds of clean watch before promotion")
    alerts: list[str] = Field(default_factory=lambda: list(DEFAULT_CANARY_ALERTS), description="rules that roll back")


class LoopPolicy(BaseModel):
    """A model's retraining policy (one per model)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    enabled: bool = True
    schedule: str | None = Field(None, description="cron, five fields, UTC")
    on_alerts: list[str] = Field(default_factory=list, description=f"alert rules that start a run ({ANY_ALERT!r}: any)")
    on_new_data: bool = Field(False, description="a new version of the production version's dataset starts a run")
    cooldown_s: float = Field(3600.0, ge=0, le=30 * 86400, description="after a run ends, triggers start nothing")
    data: DataPolicy = Field(default_factory=DataPolicy)
    train: TrainPolicy = Field(default_factory=TrainPolicy)
    gate: GatePolicy = Field(default_factory=GatePolicy)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return parse_cron(value).expression


def parse_policy(body: dict[str, Any]) -> LoopPolicy:
    """A policy from JSON, or :class:`InvalidArgument` naming each field that is wrong."""
    try:
        return LoopPolicy.model_validate(body)
    except InvalidArgument:
        raise
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors())
        raise InvalidArgument(f"Invalid loop policy: {problems}") from None


def check_alert_names(policy: LoopPolicy, known_rules: list[str]) -> None:
    """Every rule the policy names exists (``any`` aside)."""
    unknown = [r for r in (*policy.on_alerts, *policy.canary.alerts) if r != ANY_ALERT and r not in known_rules]
    if unknown:
        raise InvalidArgument(
            f"Loop policy for {policy.model!r} names unknown alert rule(s) {unknown}; known: {known_rules}"
        )
