"""The result store as a detached head-node actor, and a batching writer for request paths."""

from __future__ import annotations

import collections
import logging
import threading
import time

import ray

from aiplatform.monitoring.metrics import observe
from aiplatform.results.archive import ArchivedResultAPI, RetainedResultStore, RetentionPolicy
from aiplatform.results.store import PredictionRecord
from aiplatform.runtime import ActorProxy, freeze_startup_heap, head_actor
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings

logger = logging.getLogger(__name__)
RESULT_STORE_ACTOR_NAME = "result-store"
FLUSH_INTERVAL_S = 0.05
MAX_BATCH_RECORDS = 512
MAX_BUFFERED_RECORDS = 100_000
RETRY_DELAY_S = 0.5
MAX_BUFFERED_INPUT_BYTES = 256 * 1024 * 1024
MAX_KNOWN_INPUTS = 65_536
"""Digests of inputs the writer remembers as queued or stored (~6 MiB)."""
INPUTS_PREFIX = "results/inputs"


def input_key(digest: str) -> str:
    """Where a prediction's raw input is kept (content-addressed: one copy per distinct input)."""
    return f"{INPUTS_PREFIX}/{digest}"


class ResultActor(RetainedResultStore):
    """Owns the results SQLite file on the head node, and moves old results to the archive.

    On failure: restarted by Ray (``max_restarts=-1``), it reopens the file and settles a move the
    failure interrupted; a batch is acknowledged only after its transaction commits, and
    re-sending a batch is harmless (records are keyed by request id).
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings.resolved_state_dir / "results.sqlite",
            storage_from_settings(settings),
            retention_policy(settings),
            settings.result_retention_interval_s,
        )
        freeze_startup_heap()

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()


def retention_policy(settings: Settings) -> RetentionPolicy:
    days = settings.result_retention_days
    return RetentionPolicy(
        max_age_s=None if days is None else days * 86_400, max_rows_per_model=settings.result_retention_rows_per_model
    )


def result_store_handle(settings: Settings) -> ray.actor.ActorHandle:
    """The platform's result-store actor, created on the head node if needed."""
    return head_actor(ResultActor, RESULT_STORE_ACTOR_NAME, settings)


class ResultWriter:
    """Buffers records and flushes them to the actor from a background thread.

    ``record()`` only appends to memory, so the request path never waits on the store. Batches
    are retried until the actor acknowledges them; past ``MAX_BUFFERED_RECORDS`` the oldest are
    dropped (and counted) rather than growing without bound while the store is down.
    """

    def __init__(
        self,
        handle: ray.actor.ActorHandle,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        input_storage: Storage | None = None,
    ) -> None:
        self.handle = handle
        self.input_storage = input_storage
        self._inputs: collections.deque[tuple[str, bytes]] = collections.deque()
        self._input_bytes = 0
        # Digests of inputs queued or known stored: a repeated input (a client retrying, a load
        # test, the same photo sent twice) is neither copied again nor looked up in storage.
        self._known_inputs: collections.OrderedDict[str, None] = collections.OrderedDict()
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

    def record(self, record: PredictionRecord, raw_input: bytes | None = None) -> None:
        """Queue ``record``; with an input storage configured, its raw input is stored too."""
        with self._lock:
            if self.input_storage is not None and raw_input and not self._known(record.input_digest):
                self._inputs.append((record.input_digest, raw_input))
                self._input_bytes += len(raw_input)
                while self._input_bytes > MAX_BUFFERED_INPUT_BYTES:
                    dropped_digest, dropped = self._inputs.popleft()
                    self._input_bytes -= len(dropped)
                    self._known_inputs.pop(dropped_digest, None)
                    self.dropped += 1
            if len(self._buffer) >= MAX_BUFFERED_RECORDS:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(record)
            self._idle.clear()

    def _known(self, digest: str) -> bool:
        """Whether ``digest`` is queued or stored already; else it is remembered now (the
        ``MAX_KNOWN_INPUTS`` most recent)."""
        if digest in self._known_inputs:
            self._known_inputs.move_to_end(digest)
            return True
        self._known_inputs[digest] = None
        if len(self._known_inputs) > MAX_KNOWN_INPUTS:
            self._known_inputs.popitem(last=False)
        return False

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
            self._store_inputs()
            while True:
                with self._lock:
                    batch = [self._buffer[i] for i in range(min(MAX_BATCH_RECORDS, len(self._buffer)))]
                if not batch:
                    self._idle.set()
                    break
                try:
                    ray.get(self.handle.record_batch.remote(batch))
                except Exception as exc:
                    logger.warning("result store write failed (%s); retrying", exc)
                    time.sleep(RETRY_DELAY_S)
                    continue
                with self._lock:
                    for _ in range(len(batch)):
                        if self._buffer:
                            self._buffer.popleft()
                self.written += len(batch)
                committed = time.time()
                for record in batch:
                    observe("aip_result_write_lag_seconds", max(0.0, committed - record.created_at))

    def _store_inputs(self) -> None:
        while self.input_storage is not None:
            with self._lock:
                if not self._inputs:
                    return
                digest, data = self._inputs.popleft()
                self._input_bytes -= len(data)
            key = input_key(digest)
            try:
                if not self.input_storage.exists(key):
                    self.input_storage.put_bytes(key, data)
            except Exception as exc:
                self.dropped += 1
                with self._lock:
                    self._known_inputs.pop(digest, None)  # the next one like it tries again
                logger.warning("could not store input %s: %s", key, exc)


class ResultClient(ActorProxy, ArchivedResultAPI, protocol=ArchivedResultAPI):
    """The result-store actor, queried like the store (see ``ActorProxy``)."""

    @classmethod
    def connect(cls, settings: Settings) -> ResultClient:
        return cls(result_store_handle(settings))
