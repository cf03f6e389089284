"""What the alert rules look at: per-interval signals computed from two metric snapshots.

Signals (labels in brackets): ``requests`` [model, version, outcome] requests in the interval;
``request_rate`` [model, version] requests/s; ``error_rate``
[model, version] share of server errors and rejections; ``latency_p50`` / ``latency_p99``
[model, version] seconds; ``queued_tasks`` waiting tasks; ``queue_wait_p90`` seconds a started
task had waited (all from the metrics); ``drift_score`` [model, feature] PSI of the last drift
analysis (reported by the analysis itself); ``quality_accuracy``, ``quality_macro_f1`` and
``labeled_predictions`` [model, version] of the predictions labeled in the quality window (read
from the result store; the first two carry that count, which a rule's ``min_count`` asks for).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiplatform.monitoring.metrics import METRICS
from aiplatform.monitoring.scrape import Snapshot, bucket_delta, quantile

MIN_REQUESTS_FOR_RATIOS = 5
"""Fewer requests in an interval give no error rate or latency quantile (too noisy to alert on)."""

SIGNAL_NAMES = (
    "requests",
    "request_rate",
    "error_rate",
    "latency_p50",
    "latency_p99",
    "queued_tasks",
    "queue_wait_p90",
    "drift_score",
    "quality_accuracy",
    "quality_macro_f1",
    "labeled_predictions",
)
FAILED_OUTCOMES = ("server_error", "rejected")


@dataclass(frozen=True)
class Signal:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    count: float | None = None
    """How many observations the value is over, where that matters (labeled predictions)."""

    @property
    def key(self) -> str:
        """``name{a=1,b=2}``: one series of one signal."""
        return self.name + "{" + ",".join(f"{k}={v}" for k, v in self.labels) + "}"


def compute_signals(before: Snapshot | None, now: Snapshot) -> list[Signal]:
    """Signals over the interval ``before`` -> ``now`` (gauges need only ``now``)."""
    signals: list[Signal] = []
    requests = METRICS["aip_requests"].prometheus_name
    latency = METRICS["aip_request_latency_seconds"].prometheus_name
    if before is not None and now.at > before.at:
        seconds = now.at - before.at
        by = ("model", "version", "outcome")
        current, earlier = now.series(requests, by), before.series(requests, by)
        totals: dict[tuple[str, str], float] = {}
        failed: dict[tuple[str, str], float] = {}
        for (model, version, outcome), value in current.items():
            delta = value - earlier.get((model, version, outcome), 0.0)
            delta = value if delta < 0 else delta  # a restarted process starts its counter again
            if delta > 0:
                signals.append(
                    Signal("requests", (("model", model), ("version", version), ("outcome", outcome)), delta)
                )
            totals[(model, version)] = totals.get((model, version), 0.0) + delta
            if outcome in FAILED_OUTCOMES:
                failed[(model, version)] = failed.get((model, version), 0.0) + delta
        buckets_now = now.buckets(latency, ("model", "version"))
        buckets_before = before.buckets(latency, ("model", "version"))
        for (model, version), total in totals.items():
            labels = (("model", model), ("version", version))
            signals.append(Signal("request_rate", labels, total / seconds))
            if total >= MIN_REQUESTS_FOR_RATIOS:
                signals.append(Signal("error_rate", labels, failed.get((model, version), 0.0) / total))
            delta = bucket_delta(buckets_now.get((model, version), {}), buckets_before.get((model, version)))
            if delta and max(delta.values()) >= MIN_REQUESTS_FOR_RATIOS:
                for q, name in ((0.5, "latency_p50"), (0.99, "latency_p99")):
                    value = quantile(q, delta)
                    if value is not None:
                        signals.append(Signal(name, labels, value))
        wait_name = METRICS["aip_task_wait_seconds"].prometheus_name
        wait = bucket_delta(now.buckets(wait_name).get((), {}), before.buckets(wait_name).get(()))
        if wait and max(wait.values()) > 0:
            value = quantile(0.9, wait)
            if value is not None:
                signals.append(Signal("queue_wait_p90", (), value))
    queued = now.series(METRICS["aip_task_queue_depth"].prometheus_name, (), gauge=True, state="QUEUED")
    if queued:
        signals.append(Signal("queued_tasks", (), sum(queued.values())))
    return signals


def drift_signals(scores: dict[tuple[str, str], float]) -> list[Signal]:
    """``drift_score`` signals from the latest drift analysis per (model, feature), which the
    analysis reports to the alert engine (one owner, so no stale copy in another process)."""
    return [
        Signal("drift_score", (("model", model), ("feature", feature)), value)
        for (model, feature), value in sorted(scores.items())
    ]


def quality_signals(figures: Iterable[Mapping[str, Any]]) -> list[Signal]:
    """``quality_accuracy``, ``quality_macro_f1`` (each with its count) and ``labeled_predictions``
    per model version, from the result store's quality figures (``model``, ``version``,
    ``labeled``, ``accuracy``, ``macro_f1``)."""
    signals = []
    for q in figures:
        labels = (("model", str(q["model"])), ("version", str(q["version"])))
        labeled = float(q["labeled"])
        signals.append(Signal("quality_accuracy", labels, float(q["accuracy"]), labeled))
        signals.append(Signal("quality_macro_f1", labels, float(q["macro_f1"]), labeled))
        signals.append(Signal("labeled_predictions", labels, labeled))
    return signals
