"""Reading the platform's metrics straight from Ray's metrics endpoints (the targets in Ray's
service-discovery file), so alerting works with no Prometheus server; where one runs, the same
numbers are in it.

A ``Snapshot`` is every sample of every ``ray_aip_*`` series at one time; the alert engine turns
two snapshots into rates, error ratios and latency quantiles over the interval between them.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PLATFORM_PREFIX = "ray_aip_"
SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str:
        return dict(self.labels).get(key, "")


@dataclass
class Snapshot:
    """The platform's samples at ``at`` (worker-level series summed over the process labels)."""

    at: float
    samples: list[Sample] = field(default_factory=list)

    def series(
        self, name: str, by: tuple[str, ...] = (), *, gauge: bool = False, **match: str
    ) -> dict[tuple[str, ...], float]:
        """``name`` grouped by the ``by`` labels over samples whose labels match: counters summed
        over processes, gauges (``gauge=True``) their largest value (several processes may set one)."""
        totals: dict[tuple[str, ...], float] = {}
        for sample in self.samples:
            if sample.name != name:
                continue
            labels = dict(sample.labels)
            if any(labels.get(k) != v for k, v in match.items()):
                continue
            group = tuple(labels.get(k, "") for k in by)
            if group not in totals:
                totals[group] = sample.value
            else:
                totals[group] = max(totals[group], sample.value) if gauge else totals[group] + sample.value
        return totals

    def buckets(self, name: str, by: tuple[str, ...] = (), **match: str) -> dict[tuple[str, ...], dict[float, float]]:
        """Cumulative histogram buckets ``{group: {le: count}}`` of ``name`` (without ``_bucket``)."""
        grouped: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for sample in self.samples:
            if sample.name != f"{name}_bucket":
                continue
            labels = dict(sample.labels)
            if any(labels.get(k) != v for k, v in match.items()):
                continue
            le = math.inf if labels.get("le") in ("+Inf", "inf") else float(labels.get("le", "inf"))
            grouped[tuple(labels.get(k, "") for k in by)][le] += sample.value
        return {group: dict(b) for group, b in grouped.items()}


def discovered_targets(discovery_file: Path) -> list[str]:
    """``host:port`` of every metrics endpoint Ray lists (none if the file is not there yet)."""
    try:
        groups = json.loads(discovery_file.read_text())
    except (OSError, ValueError):
        return []
    return [target for group in groups for target in group.get("targets", [])]


def scrape(targets: Iterable[str], *, at: float | None = None, timeout_s: float = SCRAPE_TIMEOUT_S) -> Snapshot:
    """Fetch and parse every target's ``/metrics``; an unreachable target is skipped (a node
    that just left), so a snapshot may be partial but never fails."""
    from prometheus_client.parser import text_string_to_metric_families

    snapshot = Snapshot(at=at if at is not None else time.time())
    with httpx.Client(timeout=timeout_s) as client:
        for target in targets:
            try:
                text = client.get(f"http://{target}/metrics").text
            except httpx.HTTPError:
                continue
            # Ray exports hundreds of its own series; parse only the platform's.
            text = "\n".join(line for line in text.splitlines() if PLATFORM_PREFIX in line[:80]) + "\n"
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name.startswith(PLATFORM_PREFIX):
                        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in _PROCESS_LABELS))
                        snapshot.samples.append(Sample(sample.name, labels, float(sample.value)))
    return snapshot


# Labels that tell worker processes apart; alerting looks at the platform's series, not processes.
_PROCESS_LABELS = {
    "Component",
    "NodeAddress",
    "SessionName",
    "Version",
    "WorkerId",
    "otel_scope_name",
    "otel_scope_schema_url",
    "otel_scope_version",
    "instance",
    "job",
}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative buckets (None without observations)."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    total = buckets[edges[-1]]
    rank = q * total
    previous_edge, previous_count = 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if math.isinf(edge):
                return previous_edge
            width = count - previous_count
            return previous_edge + (edge - previous_edge) * ((rank - previous_count) / width if width > 0 else 1.0)
        previous_edge, previous_count = edge, count
    return previous_edge


def bucket_delta(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    """Observations between two snapshots of one histogram (a reset counts from zero)."""
    if not before:
        return dict(now)
    delta = {le: now[le] - before.get(le, 0.0) for le in now}
    return dict(now) if any(v < 0 for v in delta.values()) else delta
