"""The platform's metrics, through ``ray.util.metrics``: Ray's metrics agent on every node exports
them for Prometheus (names prefixed ``ray_``; counters also get ``_total``) and the Ray dashboard
shows them.

``METRICS`` is the one list of what exists: the process-local metric objects, the Grafana
dashboards and the alert rules are all built from it, so a panel cannot name a metric that is
never recorded. Objects are made on first use in each process (a Ray worker, actor or replica).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
DURATION_BOUNDARIES_S = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200]
PROMETHEUS_PREFIX = "ray_"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its ``ray.util.metrics`` kind, name, help text and tag keys."""

    kind: str  # counter | gauge | histogram
    name: str
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The series name in Prometheus (histograms add ``_bucket``/``_sum``/``_count``)."""
        return PROMETHEUS_PREFIX + self.name + ("_total" if self.kind == "counter" else "")


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        # serving
        MetricSpec(
            "counter",
            "aip_requests",
            "Prediction requests by model, version and outcome (ok, client_error, server_error, rejected)",
            ("model", "version", "outcome"),
        ),
        MetricSpec(
            "histogram",
            "aip_request_latency_seconds",
            "Prediction latency at the gateway",
            ("model", "version"),
            tuple(LATENCY_BOUNDARIES_S),
        ),
        MetricSpec("counter", "aip_predicted_class", "Predictions by predicted class", ("model", "version", "label")),
        MetricSpec(
            "histogram",
            "aip_batch_size",
            "Inputs per forward pass on the model servers",
            ("model", "version"),
            tuple(BATCH_BOUNDARIES),
        ),
        MetricSpec(
            "histogram",
            "aip_model_load_seconds",
            "Time to fetch, verify and load a package on a model server",
            ("model", "version"),
            tuple(LATENCY_BOUNDARIES_S),
        ),
        MetricSpec("counter", "aip_model_cache", "Model-server cache events (hit, miss, eviction)", ("event",)),
        MetricSpec("gauge", "aip_queued_requests", "Requests waiting in a gateway's batcher", ("replica",)),
        MetricSpec("counter", "aip_rejected_requests", "Requests refused because a queue was full", ("where",)),
        MetricSpec(
            "histogram",
            "aip_result_write_lag_seconds",
            "From a prediction to its result being committed",
            (),
            tuple(LATENCY_BOUNDARIES_S),
        ),
        # tasks and training
        MetricSpec("gauge", "aip_task_queue_depth", "Tasks by state", ("state",)),
        MetricSpec(
            "histogram",
            "aip_task_wait_seconds",
            "From queued to started, by template",
            ("template",),
            tuple(DURATION_BOUNDARIES_S),
        ),
        MetricSpec(
            "histogram",
            "aip_task_duration_seconds",
            "From started to finished, by template and outcome",
            ("template", "outcome"),
            tuple(DURATION_BOUNDARIES_S),
        ),
        MetricSpec("gauge", "aip_training_samples_per_second", "Training throughput of the last epoch", ("template",)),
        # data and alerts
        MetricSpec(
            "gauge", "aip_drift_score", "Population stability index of the last drift analysis", ("model", "feature")
        ),
        MetricSpec("counter", "aip_alerts", "Alerts raised, by rule and severity", ("rule", "severity")),
        # ground truth
        MetricSpec(
            "gauge",
            "aip_quality_accuracy",
            "Accuracy of the labeled predictions made in the quality window",
            ("model", "version"),
        ),
        MetricSpec(
            "gauge",
            "aip_quality_macro_f1",
            "Macro-F1 of the labeled predictions made in the quality window",
            ("model", "version"),
        ),
        MetricSpec(
            "gauge",
            "aip_labeled_predictions",
            "Predictions made in the quality window that have a label",
            ("model", "version"),
        ),
    )
}

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_objects: dict[str, Any] = {}
_failed: set[str] = set()


def metric(name: str) -> Any:
    """This process's ``ray.util.metrics`` object for ``name`` (made on first use)."""
    existing = _objects.get(name)
    if existing is not None:
        return existing
    from ray.util import metrics as ray_metrics

    spec = METRICS[name]
    with _lock:
        if name not in _objects:
            if spec.kind == "counter":
                _objects[name] = ray_metrics.Counter(spec.name, description=spec.description, tag_keys=spec.tags)
            elif spec.kind == "gauge":
                _objects[name] = ray_metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.tags)
            else:
                _objects[name] = ray_metrics.Histogram(
                    spec.name, description=spec.description, boundaries=list(spec.boundaries or ()), tag_keys=spec.tags
                )
        return _objects[name]


def inc(name: str, value: float = 1.0, **tags: Any) -> None:
    _safely(name, lambda: metric(name).inc(value, tags=_tags(tags)))


def observe(name: str, value: float, **tags: Any) -> None:
    _safely(name, lambda: metric(name).observe(value, tags=_tags(tags)))


def set_gauge(name: str, value: float, **tags: Any) -> None:
    _safely(name, lambda: metric(name).set(value, tags=_tags(tags)))


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in tags.items()}


def _safely(name: str, record: Any) -> None:
    """A metric must never fail the work it measures; a failing one is logged once per process.
    Without a connected Ray (a driver after ``ray.shutdown``, or never connected) there is nowhere
    to record to: recording then reached into a shut-down core worker at interpreter exit."""
    import ray

    if not ray.is_initialized():
        return
    try:
        record()
    except Exception:
        if name not in _failed:
            _failed.add(name)
            logger.warning("metric %s could not be recorded", name, exc_info=True)


SeriesKey = tuple[str, tuple[tuple[str, Any], ...]]


class MetricBuffer:
    """Counts, gauges and observations kept in memory and handed to Ray's metrics by a background
    thread every ``interval_s``.

    A call into ``ray.util.metrics`` costs ~4.5 us of the caller's CPU; a gateway answering
    1,000 predictions a second made five per prediction on its event loop. Here a prediction
    costs a dict update: counters are summed and gauges keep their last value per series, so
    each is recorded once per interval; histograms still record every value (Ray's histograms
    take one value a call), but off the request path. Prometheus scrapes every few seconds, so
    the delay is not seen."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._counts: dict[SeriesKey, float] = {}
        self._gauges: dict[SeriesKey, float] = {}
        self._values: dict[SeriesKey, list[float]] = {}
        self._thread: threading.Thread | None = None

    def inc(self, name: str, value: float = 1.0, **tags: Any) -> None:
        key = (name, tuple(tags.items()))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + value
        self._started()

    def set_gauge(self, name: str, value: float, **tags: Any) -> None:
        with self._lock:
            self._gauges[(name, tuple(tags.items()))] = value
        self._started()

    def observe(self, name: str, value: float, **tags: Any) -> None:
        key = (name, tuple(tags.items()))
        with self._lock:
            values = self._values.get(key)
            if values is None:
                self._values[key] = [value]
            else:
                values.append(value)
        self._started()

    def flush(self) -> None:
        """Record everything buffered so far (the thread does this every interval)."""
        with self._lock:
            counts, gauges, values = self._counts, self._gauges, self._values
            self._counts, self._gauges, self._values = {}, {}, {}
        for (name, tags), total in counts.items():
            inc(name, total, **dict(tags))
        for (name, tags), value in gauges.items():
            set_gauge(name, value, **dict(tags))
        for (name, tags), observed in values.items():
            for value in observed:
                observe(name, value, **dict(tags))

    def _started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="metric-buffer", daemon=True)
                    self._thread.start()
                    atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.flush()
            except Exception:
                logger.warning("buffered metrics could not be recorded", exc_info=True)


buffered = MetricBuffer()
"""This process's buffer, for hot paths (the gateway's per-request metrics, its batcher)."""
