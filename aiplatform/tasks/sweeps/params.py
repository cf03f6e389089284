"""What a sweep is, as its creator writes it: a template, fixed parameters, a typed search space,
the metric to optimise, trials and how many at once, a scheduler and a search algorithm.

Plain pydantic (no Ray Tune here): the API validates a sweep with it, and only the sweep's job
turns it into Tune's objects (``search.py``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiplatform.tasks.queue.trials import FINISHED, Trial

MAX_DIMENSIONS = 20
MAX_CHOICES = 100
MAX_TRIALS = 1000

Scalar = bool | int | float | str


class Dimension(BaseModel):
    """One searched parameter: ``uniform``/``loguniform`` between ``low`` and ``high``, ``int``
    from ``low`` to ``high`` inclusive, or ``choice`` among ``values``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Scalar | list[Scalar]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if self.type == "choice":
            if self.low is not None or self.high is not None:
                raise ValueError("a choice takes 'values', not 'low'/'high'")
            if not self.values:
                raise ValueError("a choice needs at least one value in 'values'")
            if len(self.values) > MAX_CHOICES:
                raise ValueError(f"a choice takes at most {MAX_CHOICES} values")
            return self
        if self.values is not None:
            raise ValueError(f"a {self.type} range takes 'low' and 'high', not 'values'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range needs both 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"'low' must be below 'high' (got {self.low:g} and {self.high:g})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform range needs 'low' > 0 (got {self.low:g})")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs whole 'low' and 'high'")
        return self

    def corners(self) -> list[Any]:
        """The extreme values this dimension can take (checked against the template's schema)."""
        if self.type == "choice":
            return list(self.values or [])
        if self.type == "int":
            return [int(self.low or 0), int(self.high or 0)]
        return [self.low, self.high]


class SchedulerSpec(BaseModel):
    """Early stopping: ASHA (a trial below the top ``1/reduction_factor`` at a rung stops there;
    the first rung is at ``grace_period`` epochs), or none (every trial runs to the end)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, le=10_000)
    reduction_factor: float = Field(3.0, gt=1, le=16)


class SweepParams(BaseModel):
    """A sweep's parameters (the ``sweep`` template's schema)."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(description="the template each trial trains with (e.g. cnn-classification, user-code)")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters every trial shares")
    space: dict[str, Dimension] = Field(description="the searched parameters (for user-code: keys of its config)")
    metric: str = Field("val_accuracy", description="the reported metric that ranks trials")
    mode: Literal["max", "min"] = "max"
    trials: int = Field(8, ge=1, le=MAX_TRIALS, description="trials in all (extending a sweep raises it)")
    max_concurrent_trials: int = Field(2, ge=1, le=256)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    search: Literal["random", "tpe"] = Field("random", description="random sampling, or Optuna's TPE")
    seed: int = Field(0, ge=0)
    max_failures: int = Field(0, ge=0, le=5, description="retries of a failed trial before it counts as failed")
    deploy: bool = Field(False, description="put the best trial's model through the deploy gate to production")

    @model_validator(mode="after")
    def _space(self) -> SweepParams:
        if not self.space:
            raise ValueError("the search space is empty: give at least one parameter to search")
        if len(self.space) > MAX_DIMENSIONS:
            raise ValueError(f"the search space has {len(self.space)} parameters; at most {MAX_DIMENSIONS}")
        both = sorted(set(self.space) & set(self.params))
        if both:
            raise ValueError(f"{both[0]!r} is both searched and fixed: give it in 'space' or 'params', not both")
        if self.search == "tpe":
            for name, dimension in self.space.items():
                if dimension.type == "choice" and any(isinstance(v, list) for v in dimension.values or []):
                    raise ValueError(f"space.{name}: TPE chooses among single values, not lists; use search 'random'")
        return self


def best_trial(trials: list[Trial], sweep: SweepParams) -> Trial | None:
    """The finished trial with the best last value of the sweep's metric (a trial stopped early
    fell below a rung's cut, and a failed one has no model)."""
    ranked = [t for t in trials if t.state == FINISHED and finite(t.metrics.get(sweep.metric))]
    if not ranked:
        return None
    sign = 1.0 if sweep.mode == "max" else -1.0
    return max(ranked, key=lambda t: sign * float(t.metrics[sweep.metric]))


def finite(value: Any) -> bool:
    """A number a sweep can rank by (not NaN, not infinite, not a flag)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
