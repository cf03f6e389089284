"""Monitoring over time, per model: what the Monitoring page and ``aip monitoring show`` draw.

Each chart is one signal over a window (15 min to 7 days): request rate, errors by outcome,
latency p50/p99, batch sizes, predicted-class shares, drift per feature, live quality (accuracy
and macro-F1 of labeled predictions over the quality window, and how many), and the training
queue's depth and wait. With a Prometheus that scrapes the platform (``AIP_PROMETHEUS_URL``, which `aip up`
sets) the series come from PromQL range queries over the ``ray_aip_*`` metrics; without one, from
the alert engine's own signal history (``alerting.history``), which has no batch sizes or class
shares. Thresholds of the alert rules and the alerts that overlap the window come with the charts,
so they can be drawn on them.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Any

from aiplatform.alerting.store import Alert
from aiplatform.errors import InvalidArgument
from aiplatform.monitoring.metrics import METRICS
from aiplatform.monitoring.prometheus import PrometheusClient

WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
POINTS_PER_CHART = 120
MIN_RATE_RANGE_S = 60
"""PromQL rates look back at least this long: a dozen 5 s scrapes, so a rate stays drawn when a
few scrapes of a loaded node time out (with fewer than two samples in its range it is empty)."""
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:@+-]{1,200}")


@dataclass(frozen=True)
class ChartSpec:
    """One chart: ``promql`` is a ``string.Template`` over ``METRIC_NAMES`` and ``sel`` (the
    model's label selector), ``model_only`` and ``range`` (the rate range); ``signal`` is the alert
    engine's signal drawn without Prometheus (None: none is kept)."""

    name: str
    title: str
    unit: str
    promql: str
    signal: str | None
    series_by: tuple[str, ...]
    per_model: bool = True


_REQUESTS = "rate(${requests}{${sel}}[${range}])"
CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "request_rate", "Requests per second", "req/s", f"sum by (version) ({_REQUESTS})", "request_rate", ("version",)
    ),
    ChartSpec(
        "error_rate",
        "Errors by outcome (share of requests)",
        "share",
        'sum by (version, outcome) (rate(${requests}{${sel}, outcome!="ok"}[${range}])) '
        f"/ ignoring(outcome) group_left sum by (version) ({_REQUESTS})",
        "error_rate",
        ("version", "outcome"),
    ),
    ChartSpec(
        "latency_p50",
        "Latency p50",
        "s",
        "histogram_quantile(0.5, sum by (version, le) (rate(${latency}_bucket{${sel}}[${range}])))",
        "latency_p50",
        ("version",),
    ),
    ChartSpec(
        "latency_p99",
        "Latency p99",
        "s",
        "histogram_quantile(0.99, sum by (version, le) (rate(${latency}_bucket{${sel}}[${range}])))",
        "latency_p99",
        ("version",),
    ),
    ChartSpec(
        "batch_size",
        "Inputs per forward pass (mean)",
        "inputs",
        "sum by (version) (rate(${batch}_sum{${sel}}[${range}])) "
        "/ sum by (version) (rate(${batch}_count{${sel}}[${range}]))",
        None,
        ("version",),
    ),
    ChartSpec(
        "class_share",
        "Predicted classes (share)",
        "share",
        "sum by (label) (rate(${classes}{${sel}}[${range}])) "
        "/ ignoring(label) group_left sum(rate(${classes}{${sel}}[${range}]))",
        None,
        ("label",),
    ),
    ChartSpec(
        "drift_score",
        "Drift (PSI) per feature",
        "PSI",
        "max by (feature) (${drift}{${model_only}})",
        "drift_score",
        ("feature",),
    ),
    ChartSpec(
        "quality_accuracy",
        "Accuracy of labeled predictions (quality window)",
        "share",
        "max by (version) (${accuracy}{${sel}})",
        "quality_accuracy",
        ("version",),
    ),
    ChartSpec(
        "quality_macro_f1",
        "Macro-F1 of labeled predictions (quality window)",
        "share",
        "max by (version) (${macro_f1}{${sel}})",
        "quality_macro_f1",
        ("version",),
    ),
    ChartSpec(
        "labeled_predictions",
        "Labeled predictions (quality window)",
        "labels",
        "max by (version) (${labeled}{${sel}})",
        "labeled_predictions",
        ("version",),
    ),
    ChartSpec(
        "queued_tasks",
        "Training tasks waiting",
        "tasks",
        'sum(${queue}{state="QUEUED"})',
        "queued_tasks",
        (),
        per_model=False,
    ),
    ChartSpec(
        "queue_wait_p90",
        "Training queue wait p90",
        "s",
        "histogram_quantile(0.9, sum by (le) (rate(${wait}_bucket[${range}])))",
        "queue_wait_p90",
        (),
        per_model=False,
    ),
)
METRIC_NAMES = {
    "requests": METRICS["aip_requests"].prometheus_name,
    "latency": METRICS["aip_request_latency_seconds"].prometheus_name,
    "batch": METRICS["aip_batch_size"].prometheus_name,
    "classes": METRICS["aip_predicted_class"].prometheus_name,
    "drift": METRICS["aip_drift_score"].prometheus_name,
    "accuracy": METRICS["aip_quality_accuracy"].prometheus_name,
    "macro_f1": METRICS["aip_quality_macro_f1"].prometheus_name,
    "labeled": METRICS["aip_labeled_predictions"].prometheus_name,
    "queue": METRICS["aip_task_queue_depth"].prometheus_name,
    "wait": METRICS["aip_task_wait_seconds"].prometheus_name,
}
"""The ``${...}`` names the charts' PromQL uses, as Prometheus knows the metrics."""


def window_seconds(window: str) -> int:
    if window not in WINDOWS:
        raise InvalidArgument(f"window must be one of {', '.join(WINDOWS)}, got {window[:20]!r}")
    return WINDOWS[window]


def _label(value: str, what: str) -> str:
    """A label value safe inside a PromQL string (model names are checked on registration, but
    this is also reached with whatever a caller typed)."""
    if not _LABEL_VALUE.fullmatch(value):
        raise InvalidArgument(f"{what} {value[:60]!r} is not a model name or version")
    return value


def _selector(model: str, version: str | None) -> str:
    """The PromQL label selector of a model's series (one version, or all)."""
    return f'model="{model}"' + (f', version="{version}"' if version else "")


def _match(model: str, version: str | None) -> dict[str, str]:
    """The labels a model's signals carry (one version, or all)."""
    return {"model": model, **({"version": version} if version else {})}


class PrometheusSeries:
    """Charts from PromQL range queries over the platform's metrics."""

    source = "prometheus"

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client

    def chart_series(
        self, spec: ChartSpec, model: str, version: str | None, since: float, until: float, step_s: float
    ) -> list[dict[str, Any]]:
        query = Template(spec.promql).substitute(
            METRIC_NAMES,
            sel=_selector(model, version),
            model_only=_selector(model, None),
            range=f"{max(MIN_RATE_RANGE_S, int(step_s * 2))}s",
        )
        return [
            {
                "labels": {key: r["metric"].get(key, "") for key in spec.series_by},
                "points": [[t, v] for t, v in r["values"] if math.isfinite(v)],
            }
            for r in self.client.query_range(query, since, until, step_s)
        ]

    def request_totals(
        self, model: str, version: str | None, since: float, until: float, step_s: float
    ) -> dict[str, float]:
        """Requests per outcome in the window, from the counters themselves: the increase
        between consecutive samples (a process restarting its counter starts again from its
        first value), and a series that first appears inside the window counts from zero."""
        totals: dict[str, float] = {}
        query = f"sum by (outcome, version) ({METRIC_NAMES['requests']}{{{_selector(model, version)}}})"
        for result in self.client.query_range(query, since, until, step_s):
            points = result["values"]
            if not points:
                continue
            outcome = result["metric"].get("outcome", "")
            gained = points[0][1] if points[0][0] > since + step_s else 0.0
            for (_, before), (_, after) in itertools.pairwise(points):
                gained += after - before if after >= before else after
            totals[outcome] = totals.get(outcome, 0.0) + gained
        return {outcome: round(total) for outcome, total in totals.items() if total > 0}


class HistorySeries:
    """Charts from the alert engine's signal history (``history(names, since, until, match)``)."""

    source = "signals"

    def __init__(self, history: Callable[..., list[dict[str, Any]]]) -> None:
        self.history = history

    def chart_series(
        self, spec: ChartSpec, model: str, version: str | None, since: float, until: float, step_s: float
    ) -> list[dict[str, Any]]:
        if spec.signal is None:
            return []
        match = _match(model, version) if spec.per_model else {}
        return [
            {
                "labels": {key: entry["labels"].get(key, "") for key in spec.series_by},
                "points": _downsampled(entry["points"], since, step_s),
            }
            for entry in self.history([spec.signal], since, until, match)
        ]

    def request_totals(
        self, model: str, version: str | None, since: float, until: float, step_s: float
    ) -> dict[str, float]:
        totals: dict[str, float] = {}
        for entry in self.history(["requests"], since, until, _match(model, version)):
            outcome = entry["labels"].get("outcome", "")
            totals[outcome] = totals.get(outcome, 0.0) + sum(value for _, value in entry["points"])
        return {outcome: round(total) for outcome, total in totals.items() if total > 0}


def _downsampled(points: list[list[float]], since: float, step_s: float) -> list[list[float]]:
    """At most one point per step (the mean of the step's values), so a week stays drawable."""
    buckets: dict[int, list[float]] = {}
    for at, value in points:
        buckets.setdefault(int((at - since) // step_s), []).append(value)
    return [[since + (index + 0.5) * step_s, sum(values) / len(values)] for index, values in sorted(buckets.items())]


def model_overview(
    source: PrometheusSeries | HistorySeries,
    model: str,
    version: str | None,
    window: str,
    rules: list[dict[str, Any]],
    alerts: list[Alert],
    now: float | None = None,
) -> dict[str, Any]:
    """Every chart of ``model`` (one version, or all) over ``window``, with the request totals by
    outcome, the alert rules' thresholds per chart and the alerts that overlap the window."""
    model = _label(model, "model")
    version = _label(version, "version") if version else None
    until = time.time() if now is None else now
    seconds = window_seconds(window)
    since = until - seconds
    step_s = max(5.0, seconds / POINTS_PER_CHART)
    charts = []
    for spec in CHARTS:
        thresholds = [
            {"rule": r["name"], "value": r["threshold"], "op": r["op"], "severity": r["severity"]}
            for r in rules
            if r["signal"] == spec.signal
            and r.get("threshold") is not None
            and r["kind"] == "threshold"
            and _rule_applies(r, model, version)
        ]
        charts.append(
            {
                "name": spec.name,
                "title": spec.title,
                "unit": spec.unit,
                "per_model": spec.per_model,
                "available": spec.signal is not None or source.source == "prometheus",
                "series": source.chart_series(spec, model, version, since, until, step_s),
                "thresholds": thresholds,
            }
        )
    overlapping = [
        a.to_dict()
        for a in alerts
        if a.started_at <= until
        and (a.resolved_at is None or a.resolved_at >= since)
        and (a.labels.get("model") in (None, model))
        and (version is None or a.labels.get("version") in (None, version))
    ]
    return {
        "model": model,
        "version": version,
        "window": window,
        "since": since,
        "until": until,
        "step_s": step_s,
        "source": source.source,
        "charts": charts,
        "totals": source.request_totals(model, version, since, until, step_s),
        "alerts": overlapping,
    }


def _rule_applies(rule: dict[str, Any], model: str, version: str | None) -> bool:
    match = rule.get("match") or {}
    return match.get("model", model) == model and (version is None or match.get("version", version) == version)
