"""A task's log as server-sent events: only new lines, a restart when a new attempt's log begins,
the end once the task finishes, a reconnect when the stream's time is up, bounded streams."""

from __future__ import annotations

import asyncio
import json

import pytest

from aiplatform.api import log_stream
from aiplatform.api.log_stream import StreamSlots, task_log_events
from aiplatform.errors import NotFound, Unavailable


def collect(states: list[str], logs: list[object], after: int = 0, slots: StreamSlots | None = None) -> list[tuple[str, dict]]:
    """Runs a stream over successive (state, log) readings; a log reading may be an exception."""
    slots = slots or StreamSlots()
    slot = slots.take()
    readings = iter(zip(states, logs))
    current: dict[str, object] = {}

    def read_state() -> str:
        current["state"], current["log"] = next(readings)
        return str(current["state"])

    def read_log() -> str:
        if isinstance(current["log"], Exception):
            raise current["log"]
        return str(current["log"])

    async def run() -> list[tuple[str, dict]]:
        events = []
        async for text in task_log_events(read_state, read_log, after, slots, slot):
            if text.startswith("event:"):
                head, data = text.strip().split("\n")
                events.append((head.split(": ")[1], json.loads(data[len("data: "):])))
        return events

    events = asyncio.run(run())
    assert slots.open == 0  # the slot is given back however the stream ends
    return events


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_stream, "POLL_S", 0.0)


def test_new_lines_only_then_the_end() -> None:
    events = collect(["QUEUED", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"],
                     [NotFound("no job yet"), "a\nb\n", "a\nb\n", "a\nb\nc\n", "a\nb\nc\nd"])
    assert events == [("lines", {"from": 0, "lines": ["a", "b"]}), ("lines", {"from": 2, "lines": ["c"]}),
                      ("lines", {"from": 3, "lines": ["d"]}), ("end", {"state": "SUCCEEDED", "after": 4})]


def test_a_resumed_stream_sends_what_the_client_lacks_and_a_new_attempt_restarts_it() -> None:
    events = collect(["RUNNING", "RUNNING", "FAILED"], ["a\nb\nc", "x", "x\ny"], after=2)
    assert events == [("lines", {"from": 2, "lines": ["c"]}), ("restart", {"lines": 1}),
                      ("lines", {"from": 0, "lines": ["x"]}), ("lines", {"from": 1, "lines": ["y"]}),
                      ("end", {"state": "FAILED", "after": 2})]


def test_a_long_log_starts_at_its_tail_and_a_stream_ends_with_a_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    log = "\n".join(str(i) for i in range(log_stream.FIRST_LINES + 50))
    monkeypatch.setattr(log_stream, "STREAM_SECONDS", 0.0)
    events = collect(["RUNNING"], [log])
    assert events[0] == ("lines", {"from": 50, "lines": [str(i) for i in range(50, log_stream.FIRST_LINES + 50)]})
    assert events[1] == ("reconnect", {"after": log_stream.FIRST_LINES + 50})


def test_streams_are_bounded_and_an_unstarted_streams_slot_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    slots = StreamSlots(limit=2)
    first, _ = slots.take(), slots.take()
    with pytest.raises(Unavailable, match="2 log streams are open"):
        slots.take()
    slots.give_back(first)
    slots.take()
    clock = [log_stream.time.monotonic()]
    monkeypatch.setattr(log_stream.time, "monotonic", lambda: clock[0])
    clock[0] += log_stream.STREAM_SECONDS + log_stream.KEEPALIVE_S + 1  # their clients never read them
    slots.take()
    assert slots.open == 1
