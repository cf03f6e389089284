"""Alert rules: what to watch and when to speak.

Three kinds, each over one signal (``aiplatform.monitoring.signals``), per labelled series:

- ``threshold``: the value is past ``threshold`` for ``for_evaluations`` evaluations in a row.
- ``anomaly``: the value (EWMA-smoothed) leaves the robust band of its own recent past: more than
  ``sensitivity`` scaled MADs from the median of the last ``window`` values, and by at least
  ``min_delta``. Robust and free of seasonality assumptions: one outlier does not move the band.
- ``trend``: early warning. A line fitted to the last ``window`` values, projected ``horizon_s``
  ahead, crosses ``threshold`` while the value itself has not yet.

An alert resolves after ``resolve_after`` evaluations in a row without the condition. A rule with
``min_count`` looks only at values over at least that many observations (a quality figure over
too few labeled predictions counts as no value: it neither fires nor keeps an alert open).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiplatform.errors import InvalidArgument
from aiplatform.monitoring.signals import SIGNAL_NAMES

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., description="unique, lowercase letters, digits and dashes")
    kind: Literal["threshold", "anomaly", "trend"]
    signal: str = Field(..., description=f"one of {', '.join(SIGNAL_NAMES)}")
    match: dict[str, str] = Field(default_factory=dict, description="only series with these labels")
    op: Literal[">", "<"] = Field(">", description="which side is bad")
    threshold: float | None = Field(None, description="threshold and trend rules")
    for_evaluations: int = Field(1, ge=1, le=100)
    resolve_after: int = Field(2, ge=1, le=100)
    severity: Literal["info", "warning", "critical"] = "warning"
    window: int = Field(20, ge=5, le=1000, description="past values anomaly and trend rules look at")
    sensitivity: float = Field(5.0, gt=0, description="anomaly: scaled MADs from the median")
    min_delta: float = Field(0.0, ge=0, description="anomaly: smallest absolute departure that counts")
    horizon_s: float = Field(300.0, gt=0, description="trend: how far ahead to project")
    min_count: int = Field(
        0, ge=0, description="only values over at least this many observations (quality: labeled predictions)"
    )
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"name {self.name!r} must be lowercase letters, digits and dashes")
        if self.signal not in SIGNAL_NAMES:
            raise ValueError(f"signal {self.signal!r} is not one of {list(SIGNAL_NAMES)}")
        if self.kind in ("threshold", "trend") and self.threshold is None:
            raise ValueError(f"a {self.kind} rule needs a threshold")
        return self

    def breached(self, value: float, threshold: float) -> bool:
        return value > threshold if self.op == ">" else value < threshold


def parse_rules(raw: Any) -> list[Rule]:
    """Rules from data (a list of mappings); InvalidArgument names the rule and the problem."""
    if not isinstance(raw, list):
        raise InvalidArgument("Alert rules must be a list of rules")
    rules: list[Rule] = []
    for index, item in enumerate(raw):
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as exc:
            name = item.get("name", f"#{index + 1}") if isinstance(item, dict) else f"#{index + 1}"
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
            raise InvalidArgument(f"Alert rule {name!r} is invalid: {problems}") from exc
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArgument(f"Alert rule names must be unique; repeated: {duplicates}")
    return rules


def load_rules_file(path: Path) -> list[Rule]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidArgument(f"Alert rules file {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"Alert rules file {path} is not valid YAML: {exc}") from exc
    return parse_rules(raw.get("rules") if isinstance(raw, dict) else raw)


def default_rules(
    *,
    latency_p99_s: float,
    error_rate: float,
    queue_wait_s: float,
    drift_psi: float,
    quality_accuracy: float = 0.8,
    quality_min_labeled: int = 50,
) -> list[Rule]:
    """The rules the platform runs unless given a rules file."""
    return parse_rules(
        [
            {
                "name": "latency-p99-high",
                "kind": "threshold",
                "signal": "latency_p99",
                "threshold": latency_p99_s,
                "for_evaluations": 2,
                "severity": "critical",
                "description": "p99 latency of a model version is too high",
            },
            {
                "name": "error-rate-high",
                "kind": "threshold",
                "signal": "error_rate",
                "threshold": error_rate,
                "severity": "critical",
                "description": "too many server errors or rejections",
            },
            {
                "name": "queue-wait-high",
                "kind": "threshold",
                "signal": "queue_wait_p90",
                "threshold": queue_wait_s,
                "description": "training tasks wait too long to start",
            },
            {
                "name": "drift-significant",
                "kind": "threshold",
                "signal": "drift_score",
                "threshold": drift_psi,
                "resolve_after": 1,
                "description": "live inputs differ from the training data (PSI)",
            },
            {
                "name": "quality-low",
                "kind": "threshold",
                "signal": "quality_accuracy",
                "op": "<",
                "threshold": quality_accuracy,
                "min_count": quality_min_labeled,
                "description": "accuracy of a version's labeled predictions in the quality window is too low",
            },
            {
                "name": "latency-anomaly",
                "kind": "anomaly",
                "signal": "latency_p99",
                "sensitivity": 6.0,
                "min_delta": 0.05,
                "description": "p99 latency left its usual band",
            },
            {
                "name": "traffic-anomaly",
                "kind": "anomaly",
                "signal": "request_rate",
                "sensitivity": 6.0,
                "min_delta": 5.0,
                "severity": "info",
                "description": "request rate left its usual band",
            },
            {
                "name": "latency-trend",
                "kind": "trend",
                "signal": "latency_p99",
                "threshold": latency_p99_s,
                "window": 10,
                "horizon_s": 300,
                "description": "p99 latency is heading for its threshold",
            },
            {
                "name": "error-rate-trend",
                "kind": "trend",
                "signal": "error_rate",
                "threshold": error_rate,
                "window": 10,
                "horizon_s": 300,
                "description": "the error rate is heading for its threshold",
            },
        ]
    )
