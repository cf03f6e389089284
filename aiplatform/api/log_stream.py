"""A task's log as server-sent events: new lines as they appear, then the task's end.

A stream lasts at most ``STREAM_SECONDS`` (Serve ends requests that run longer than its timeout);
the client reconnects with ``after`` set to the lines it has, so nothing is sent twice. Each
replica serves at most ``MAX_STREAMS`` at once, ``MAX_STREAMS_PER_CLIENT`` of them to one client
address: every stream reads the job's log once a second. A stream holds its slot only while its
generator runs: from its first event until it ends or its client is gone.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiplatform.errors import NotFound, Unavailable
from aiplatform.tasks.queue import FINISHED_STATES

POLL_S = 1.0
STREAM_SECONDS = 60.0
KEEPALIVE_S = 15.0
MAX_STREAMS = 16
MAX_STREAMS_PER_CLIENT = 4
"""Streams one client address may hold at once on a replica: a client that opens streams and
never reads them cannot take every slot. The UI opens one per task page it shows."""
FIRST_LINES = 400
"""Lines sent first when a client starts without any (``after=0``): the log's tail, not all of it."""


class StreamSlots:
    """How many streams this process serves, in all and to each client address; past either
    limit a new one is refused (503). The route checks before the response starts, the stream's
    generator takes the slot when it starts and gives it back when it ends (its client gone
    included). A slot held past any stream's lifetime (a generator never closed) frees itself."""

    def __init__(self, limit: int = MAX_STREAMS, per_client: int = MAX_STREAMS_PER_CLIENT) -> None:
        self.limit = limit
        self.per_client = per_client
        self._open: dict[object, tuple[str, float]] = {}
        self._lock = threading.Lock()  # the route checks from a worker thread, generators take on the loop

    def check(self, client: str) -> None:
        """Raise :class:`Unavailable` naming the limit when ``client`` may not open a stream now."""
        with self._lock:
            self._check(client)

    def take(self, client: str) -> object:
        with self._lock:
            self._check(client)
            token = object()
            self._open[token] = (client, time.monotonic())
            return token

    def _check(self, client: str) -> None:
        now = time.monotonic()
        for token, (_, since) in list(self._open.items()):
            if now - since > STREAM_SECONDS + KEEPALIVE_S:
                del self._open[token]
        if len(self._open) >= self.limit:
            raise Unavailable(
                f"{self.limit} log streams are open on this server; read the log with "
                "GET /v1/tasks/{id}/logs, or try again shortly"
            )
        if sum(1 for holder, _ in self._open.values() if holder == client) >= self.per_client:
            raise Unavailable(
                f"{self.per_client} log streams are open from your address, the most one client "
                "may hold; close one, or read the log with GET /v1/tasks/{id}/logs"
            )

    def give_back(self, token: object) -> None:
        with self._lock:
            self._open.pop(token, None)

    @property
    def open(self) -> int:
        return len(self._open)


async def _connected() -> bool:
    return False


def event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def task_log_events(
    read_state: Callable[[], str],
    read_log: Callable[[], str],
    after: int,
    slots: StreamSlots,
    client: str,
    disconnected: Callable[[], Awaitable[bool]] = _connected,
) -> AsyncIterator[str]:
    """``lines`` events ({"from": index of the first line, "lines": [...]}) as the log grows, an
    ``end`` event ({"state": ...}) once the task has finished and its log is all sent, and a
    ``reconnect`` event ({"after": ...}) when this stream's time is up. ``read_state`` and
    ``read_log`` block (they ask the queue and Ray), so they run in worker threads.

    The stream takes one of ``slots`` for ``client`` when it starts (a response never started
    holds none; an ``error`` event if the slots filled up since the route checked) and gives it
    back when it ends, or when ``disconnected()`` says its client has gone (checked every poll:
    an idle stream writes nothing that could fail)."""
    try:
        slot = slots.take(client)
    except Unavailable as exc:
        yield event("error", exc.to_dict())
        return
    try:
        deadline, quiet_since = time.monotonic() + STREAM_SECONDS, time.monotonic()
        sent = after
        while True:
            if await disconnected():
                return
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
