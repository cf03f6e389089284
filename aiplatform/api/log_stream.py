"""A task's log as server-sent events: new lines as they appear, then the task's end.

A stream lasts at most ``STREAM_SECONDS`` (Serve ends requests that run longer than its timeout);
the client reconnects with ``after`` set to the lines it has, so nothing is sent twice. Each
replica serves at most ``MAX_STREAMS`` at once: every stream reads the job's log once a second.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable

from aiplatform.errors import NotFound, Unavailable
from aiplatform.tasks.queue import FINISHED_STATES

POLL_S = 1.0
STREAM_SECONDS = 60.0
KEEPALIVE_S = 15.0
MAX_STREAMS = 16
FIRST_LINES = 400
"""Lines sent first when a client starts without any (``after=0``): the log's tail, not all of it."""


class StreamSlots:
    """How many streams this process serves; past ``MAX_STREAMS`` a new one is refused (503).
    A slot whose stream never started (its client left first) frees itself once any stream would
    have ended."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self._open: dict[object, float] = {}

    def take(self) -> object:
        now = time.monotonic()
        for token, since in list(self._open.items()):
            if now - since > STREAM_SECONDS + KEEPALIVE_S:
                del self._open[token]
        if len(self._open) >= self.limit:
            raise Unavailable(f"{self.limit} log streams are open on this server; read the log with "
                              "GET /v1/tasks/{id}/logs, or try again shortly")
        token = object()
        self._open[token] = now
        return token

    def give_back(self, token: object) -> None:
        self._open.pop(token, None)

    @property
    def open(self) -> int:
        return len(self._open)


def event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def task_log_events(read_state: Callable[[], str], read_log: Callable[[], str], after: int,
                          slots: StreamSlots, slot: object) -> AsyncIterator[str]:
    """``lines`` events ({"from": index of the first line, "lines": [...]}) as the log grows, an
    ``end`` event ({"state": ...}) once the task has finished and its log is all sent, and a
    ``reconnect`` event ({"after": ...}) when this stream's time is up. ``read_state`` and
    ``read_log`` block (they ask the queue and Ray), so they run in worker threads."""
    try:
        deadline, quiet_since = time.monotonic() + STREAM_SECONDS, time.monotonic()
        sent = after
        while True:
            state = await asyncio.to_thread(read_state)
            try:
                lines = (await asyncio.to_thread(read_log)).replace("\r\n", "\n").split("\n")
            except (NotFound, Unavailable):
                lines = []
            if lines and lines[-1] == "":
                lines.pop()
            if len(lines) < sent:  # a new attempt's job: its log starts again
                yield event("restart", {"lines": len(lines)})
                sent = 0
            if sent == 0 and len(lines) > FIRST_LINES:
                sent = len(lines) - FIRST_LINES
            if len(lines) > sent:
                yield event("lines", {"from": sent, "lines": lines[sent:]})
                sent, quiet_since = len(lines), time.monotonic()
            if state in FINISHED_STATES:
                yield event("end", {"state": state, "after": sent})
                return
            if time.monotonic() >= deadline:
                yield event("reconnect", {"after": sent})
                return
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield ": still running\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(POLL_S)
    finally:
        slots.give_back(slot)
