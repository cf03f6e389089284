"""The result store as a detached head-node actor, and a batching writer for request paths."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Optional

import ray

from aiplatform.results.store import PredictionRecord, ResultStore
from aiplatform.runtime import call, head_actor
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
RESULT_STORE_ACTOR_NAME = "result-store"
FLUSH_INTERVAL_S = 0.05
MAX_BATCH_RECORDS = 512
MAX_BUFFERED_RECORDS = 100_000
RETRY_DELAY_S = 0.5


class ResultStoreActor(ResultStore):
    """Owns the results SQLite file on the head node.

    On failure: restarted by Ray (``max_restarts=-1``), it reopens the file; a batch is
    acknowledged only after its transaction commits, and re-sending a batch is harmless
    (records are keyed by request id).
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.resolved_state_dir / "results.sqlite")

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()


def result_store_handle(settings: Settings) -> "ray.actor.ActorHandle":
    """The platform's result-store actor, created on the head node if needed."""
    return head_actor(ResultStoreActor, RESULT_STORE_ACTOR_NAME, settings)


class ResultWriter:
    """Buffers records and flushes them to the actor from a background thread.

    ``record()`` only appends to memory, so the request path never waits on the store. Batches
    are retried until the actor acknowledges them; past ``MAX_BUFFERED_RECORDS`` the oldest are
    dropped (and counted) rather than growing without bound while the store is down.
    """

    def __init__(self, handle: "ray.actor.ActorHandle", flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.handle = handle
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self.written = 0
        self._buffer: collections.deque[PredictionRecord] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="result-writer", daemon=True)
        self._thread.start()

    def record(self, record: PredictionRecord) -> None:
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED_RECORDS:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(record)
            self._idle.clear()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything recorded so far is stored (tests, shutdown)."""
        self._wake.set()
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        self.flush()
        self._stopped = True
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            while True:
                with self._lock:
                    batch = [self._buffer[i] for i in range(min(MAX_BATCH_RECORDS, len(self._buffer)))]
                if not batch:
                    self._idle.set()
                    break
                try:
                    ray.get(self.handle.record_batch.remote(batch))
                except Exception as exc:  # noqa: BLE001 - store down or restarting: keep and retry
                    logger.warning("result store write failed (%s); retrying", exc)
                    time.sleep(RETRY_DELAY_S)
                    continue
                with self._lock:
                    for _ in range(len(batch)):
                        if self._buffer:
                            self._buffer.popleft()
                self.written += len(batch)


class ResultsClient:
    """Synchronous queries against the result-store actor."""

    def __init__(self, handle: "ray.actor.ActorHandle") -> None:
        self.handle = handle

    @classmethod
    def connect(cls, settings: Settings) -> "ResultsClient":
        return cls(result_store_handle(settings))

    def get(self, result_id: str) -> PredictionRecord:
        return call(self.handle.get, result_id)

    def query(self, **filters: Any) -> list[PredictionRecord]:
        return call(self.handle.query, **filters)

    def count(self, model: Optional[str] = None) -> int:
        return call(self.handle.count, model)
