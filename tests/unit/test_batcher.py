"""AdaptiveBatcher: no wait when alone, shared calls under load, failures reach every waiter."""

from __future__ import annotations

import asyncio

import pytest

from aiplatform.errors import Unavailable
from aiplatform.serving.batcher import AdaptiveBatcher


class Recorder:
    def __init__(self, delay_s: float = 0.01, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self, key: str, items: list[int]) -> list[int]:
        self.calls.append((key, items))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError("model exploded")
            return [item * 10 for item in items]
        finally:
            self.in_flight -= 1


def test_a_lone_request_is_sent_at_once() -> None:
    recorder = Recorder(delay_s=0)
    batcher = AdaptiveBatcher(recorder, max_batch_size=8)

    async def run() -> int:
        return await batcher.submit("m", 4)

    assert asyncio.run(run()) == 40
    assert recorder.calls == [("m", [4])]


def test_concurrent_requests_share_calls_within_the_limits() -> None:
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch_size=8, max_in_flight=2)

    async def run() -> list[int]:
        return await asyncio.gather(*(batcher.submit("a" if i % 2 else "b", i) for i in range(60)))

    answers = asyncio.run(run())
    assert answers == [i * 10 for i in range(60)]
    assert all(len(items) <= 8 for _, items in recorder.calls)
    assert all({i % 2 for i in items} == ({1} if key == "a" else {0}) for key, items in recorder.calls)
    assert len(recorder.calls) < 30  # batched, not one call per request
    assert recorder.most_in_flight <= 4  # two per key


def test_a_failed_call_fails_each_of_its_requests_and_the_next_work() -> None:
    recorder = Recorder(fail=True)
    batcher = AdaptiveBatcher(recorder, max_batch_size=4)

    async def run() -> list[object]:
        return await asyncio.gather(*(batcher.submit("m", i) for i in range(6)), return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)
    recorder.fail = False
    assert asyncio.run(run()) == [i * 10 for i in range(6)]


def test_a_full_queue_is_refused_as_unavailable() -> None:
    batcher = AdaptiveBatcher(Recorder(delay_s=0.05), max_batch_size=1, max_in_flight=1, max_waiting=3)

    async def run() -> list[object]:
        return await asyncio.gather(*(batcher.submit("m", i) for i in range(10)), return_exceptions=True)

    results = asyncio.run(run())
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert refused and len(refused) == 10 - 1 - 3
    with pytest.raises(ValueError):
        AdaptiveBatcher(Recorder(), max_batch_size=0)
