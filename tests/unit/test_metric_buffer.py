"""The gateway's metric buffer: what reaches Ray's metrics per interval is what was recorded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aiplatform.monitoring import metrics
from aiplatform.monitoring.metrics import MetricBuffer

pytestmark = pytest.mark.unit


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The calls the buffer makes into the metrics module (each a ``ray.util.metrics`` call)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(metrics, "inc", lambda name, value=1.0, **tags: calls.append(("inc", name, value, tags)))
    monkeypatch.setattr(metrics, "observe", lambda name, value, **tags: calls.append(("observe", name, value, tags)))
    monkeypatch.setattr(metrics, "set_gauge", lambda name, value, **tags: calls.append(("gauge", name, value, tags)))
    return calls


def test_counters_are_summed_gauges_keep_their_last_value_and_every_observation_is_kept(
    recorded: list[tuple[Any, ...]],
) -> None:
    buffer = MetricBuffer(interval_s=3600)
    for latency in (0.01, 0.02, 0.03):
        buffer.inc("aip_requests", model="m", version=1, outcome="ok")
        buffer.observe("aip_request_latency_seconds", latency, model="m", version=1)
    buffer.inc("aip_requests", model="m", version=2, outcome="ok")
    buffer.set_gauge("aip_queued_requests", 5, replica="g")
    buffer.set_gauge("aip_queued_requests", 0, replica="g")
    assert recorded == []  # nothing reaches Ray on the request path
    buffer.flush()
    assert sorted(recorded, key=str) == sorted(
        [
            ("inc", "aip_requests", 3.0, {"model": "m", "version": 1, "outcome": "ok"}),
            ("inc", "aip_requests", 1.0, {"model": "m", "version": 2, "outcome": "ok"}),
            ("gauge", "aip_queued_requests", 0, {"replica": "g"}),
            ("observe", "aip_request_latency_seconds", 0.01, {"model": "m", "version": 1}),
            ("observe", "aip_request_latency_seconds", 0.02, {"model": "m", "version": 1}),
            ("observe", "aip_request_latency_seconds", 0.03, {"model": "m", "version": 1}),
        ],
        key=str,
    )
    recorded.clear()
    buffer.flush()
    assert recorded == []  # a flush hands each value over once


def test_the_background_thread_flushes_on_its_own(recorded: list[tuple[Any, ...]]) -> None:
    # Other buffers in this process (the process-wide one an earlier test's batcher used) flush
    # through the same patched functions on their own threads, so only this buffer's call counts.
    buffer = MetricBuffer(interval_s=0.05)
    buffer.inc("aip_rejected_requests", where="test-own-thread")
    expected = ("inc", "aip_rejected_requests", 1.0, {"where": "test-own-thread"})
    deadline = time.monotonic() + 30
    while expected not in recorded and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a few more intervals: a flush hands a value over once, not once per interval
    assert [call for call in recorded if call[3] == expected[3]] == [expected]
