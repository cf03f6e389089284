"""Adaptive micro-batching of concurrent requests into one downstream call per model.

A Ray handle call costs far more CPU than a small model's forward pass, so the gateway sends the
model servers batches, not single inputs. There is no fixed wait: a batch leaves as soon as one
of ``max_in_flight`` call slots for its key is free, so a lone request pays nothing, while under
load the requests that arrive during a call share the next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiplatform.errors import Unavailable
from aiplatform.monitoring.metrics import buffered

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class _Lane(Generic[Item, Answer]):
    waiting: deque[tuple[Item, asyncio.Future[Answer]]] = field(default_factory=deque)
    in_flight: int = 0


class AdaptiveBatcher(Generic[Item, Answer]):
    """``submit(key, item)`` resolves to ``call(key, items)[i]`` for the batch the item went in."""

    def __init__(
        self,
        call: Callable[[str, list[Item]], Awaitable[list[Answer]]],
        max_batch_size: int = 64,
        max_in_flight: int = 2,
        max_waiting: int = 4096,
        name: str = "batcher",
    ) -> None:
        """``name`` labels this batcher's queue-depth and rejection metrics."""
        if max_batch_size < 1 or max_in_flight < 1 or max_waiting < 1:
            raise ValueError("max_batch_size, max_in_flight and max_waiting must be at least 1")
        self._call = call
        self.max_batch_size = max_batch_size
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self._lanes: dict[str, _Lane[Item, Answer]] = {}
        self.name = name
        self._waiting = 0

    async def submit(self, key: str, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        lane = self._lanes.setdefault(key, _Lane())
        if len(lane.waiting) >= self.max_waiting:
            buffered.inc("aip_rejected_requests", where=self.name)
            raise Unavailable(f"{len(lane.waiting)} requests already wait for {key}; retry shortly")
        lane.waiting.append((item, future))
        self._waiting += 1
        self._dispatch(key, lane)
        return await future

    def _dispatch(self, key: str, lane: _Lane[Item, Answer]) -> None:
        while lane.waiting and lane.in_flight < self.max_in_flight:
            count = min(len(lane.waiting), self.max_batch_size)
            batch = [lane.waiting.popleft() for _ in range(count)]
            self._waiting -= count
            lane.in_flight += 1
            asyncio.get_running_loop().create_task(self._run(key, lane, batch))
        if not lane.waiting and lane.in_flight == 0:
            self._lanes.pop(key, None)
        buffered.set_gauge("aip_queued_requests", self._waiting, replica=self.name)

    async def _run(self, key: str, lane: _Lane[Item, Answer], batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._call(key, [item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"batch call for {key!r} answered {len(answers)} of {len(batch)} items")
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            lane.in_flight -= 1
            self._dispatch(key, lane)
