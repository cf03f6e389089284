"""A task's log as server-sent events: only new lines, a restart when a new attempt's log begins,
the end once the task finishes, a reconnect when the stream's time is up, bounded streams."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from aiplatform.api import log_stream
from aiplatform.api.log_stream import StreamSlots, task_log_events
from aiplatform.errors import NotFound, Unavailable


def collect(
    states: list[str], logs: list[object], after: int = 0, slots: StreamSlots | None = None
) -> list[tuple[str, dict]]:
    """Runs a stream over successive (state, log) readings; a log reading may be an exception."""
    slots = slots or StreamSlots()
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
        async for text in task_log_events(read_state, read_log, after, slots, "127.0.0.1"):
            if text.startswith("event:"):
                head, data = text.strip().split("\n")
                events.append((head.split(": ")[1], json.loads(data[len("data: ") :])))
        return events

    events = asyncio.run(run())
    assert slots.open == 0  # the slot is given back however the stream ends
    return events


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_stream, "POLL_S", 0.0)


def test_new_lines_only_then_the_end() -> None:
    events = collect(
        ["QUEUED", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"],
        [NotFound("no job yet"), "a\nb\n", "a\nb\n", "a\nb\nc\n", "a\nb\nc\nd"],
    )
    assert events == [
        ("lines", {"from": 0, "lines": ["a", "b"]}),
        ("lines", {"from": 2, "lines": ["c"]}),
        ("lines", {"from": 3, "lines": ["d"]}),
        ("end", {"state": "SUCCEEDED", "after": 4}),
    ]


def test_a_resumed_stream_sends_what_the_client_lacks_and_a_new_attempt_restarts_it() -> None:
    events = collect(["RUNNING", "RUNNING", "FAILED"], ["a\nb\nc", "x", "x\ny"], after=2)
    assert events == [
        ("lines", {"from": 2, "lines": ["c"]}),
        ("restart", {"lines": 1}),
        ("lines", {"from": 0, "lines": ["x"]}),
        ("lines", {"from": 1, "lines": ["y"]}),
        ("end", {"state": "FAILED", "after": 2}),
    ]


def test_a_long_log_starts_at_its_tail_and_a_stream_ends_with_a_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    log = "\n".join(str(i) for i in range(log_stream.FIRST_LINES + 50))
    monkeypatch.setattr(log_stream, "STREAM_SECONDS", 0.0)
    events = collect(["RUNNING"], [log])
    assert events[0] == ("lines", {"from": 50, "lines": [str(i) for i in range(50, log_stream.FIRST_LINES + 50)]})
    assert events[1] == ("reconnect", {"after": log_stream.FIRST_LINES + 50})


def test_streams_are_bounded_in_all_and_per_client_and_a_forgotten_slot_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slots = StreamSlots(limit=3, per_client=2)
    first, _ = slots.take("10.0.0.1"), slots.take("10.0.0.1")
    with pytest.raises(Unavailable, match="2 log streams are open from your address"):
        slots.check("10.0.0.1")
    slots.take("10.0.0.2")  # another client still gets one
    with pytest.raises(Unavailable, match="3 log streams are open on this server"):
        slots.take("10.0.0.3")
    slots.give_back(first)
    slots.take("10.0.0.1")
    clock = [log_stream.time.monotonic()]
    monkeypatch.setattr(log_stream.time, "monotonic", lambda: clock[0])
    clock[0] += log_stream.STREAM_SECONDS + log_stream.KEEPALIVE_S + 1  # generators never closed
    slots.take("10.0.0.1")
    assert slots.open == 1


def test_a_stream_takes_its_slot_when_it_starts_and_gives_it_back_once_its_client_is_gone() -> None:
    slots, gone = StreamSlots(limit=1), asyncio.Event()
    polled = []

    async def disconnected() -> bool:
        return gone.is_set()

    def read_state() -> str:
        polled.append(slots.open)
        gone.set()  # the client leaves during its first poll
        return "RUNNING"

    async def run() -> list[str]:
        events = task_log_events(read_state, lambda: "", 0, slots, "127.0.0.1", disconnected)
        assert slots.open == 0  # a response never started holds no slot
        return [text async for text in events]

    assert asyncio.run(run()) == [] and polled == [1] and slots.open == 0


def test_a_stream_that_finds_the_slots_taken_since_its_route_checked_says_so() -> None:
    slots = StreamSlots(limit=1)
    slots.take("10.0.0.9")

    async def run() -> list[str]:
        return [text async for text in task_log_events(lambda: "RUNNING", lambda: "", 0, slots, "127.0.0.1")]

    [text] = asyncio.run(run())
    assert text.startswith("event: error\n") and "1 log streams are open on this server" in text
    assert slots.open == 1


def _stream_app() -> Any:
    """The real API app (routes, guard, error handlers) over a stand-in platform with one task
    that runs for ever and has one log line."""
    from fastapi import FastAPI

    from aiplatform.api.app import include_api
    from aiplatform.api.security import AccessPolicy

    app = FastAPI()
    include_api(app)
    app.state.platform = SimpleNamespace(
        access=AccessPolicy("off", None, ("127.0.0.1",)),
        tasks=SimpleNamespace(get=lambda task_id: SimpleNamespace(state="RUNNING"), logs=lambda task_id: "line one\n"),
    )
    return app


def _scope(spec_version: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/tasks/t1/logs/stream",
        "raw_path": b"/v1/tasks/t1/logs/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def test_a_stream_whose_client_left_before_its_response_started_holds_no_slot() -> None:
    from aiplatform.api.routes.tasks import LOG_STREAMS

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}  # gone before anything is sent

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        await asyncio.sleep(0)

    asyncio.run(_stream_app()(_scope("2.3"), receive, send))
    assert not [m for m in sent if m.get("body")]  # the stream never started
    assert LOG_STREAMS.open == 0  # (taken in the route, as before, it stayed taken for 75 s)


def test_a_stream_notices_its_client_has_gone_even_where_starlette_does_not_listen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ASGI 2.4 servers leave it to a failed write to tell a response its client is gone, and an
    idle stream writes nothing: the stream asks at every poll."""
    from aiplatform.api.routes.tasks import LOG_STREAMS

    monkeypatch.setattr(log_stream, "POLL_S", 0.01)
    sent: list[bytes] = []

    async def run() -> None:
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message.get("body"):
                sent.append(message["body"])
                assert LOG_STREAMS.open == 1
                gone.set()  # the client leaves once it has the first lines; writes still "succeed"

        await _stream_app()(_scope("2.4"), receive, send)

    asyncio.run(run())
    assert sent[0].startswith(b"event: lines") and not any(b"reconnect" in body for body in sent)
    assert LOG_STREAMS.open == 0
