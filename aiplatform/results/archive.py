"""Retention: older results move from the live SQLite table to parquet files in storage.

Partitioned by model and day (``results/archive/model=<m>/day=<YYYY-MM-DD>/<key>.parquet``, the
layout Spark, DuckDB and Ray Data read as partitions). A move is three steps, each durable:

1. one transaction marks the rows with the move's key and records the move as *pending*;
2. the file is written to storage (atomically: a temporary file renamed, or one S3 PUT);
3. one transaction deletes the marked rows and records the move as *committed*.

Readers take the live rows plus the committed moves' files, so a row is read exactly once at
every moment. A crash between steps leaves a pending move, settled on the next start
(:meth:`ResultArchive.recover`): a complete file in storage commits it, anything else unmarks its
rows and removes the file. Each row ends in exactly one place.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aiplatform.results.store import STORED_COLUMNS, PredictionRecord, ResultAPI, ResultStore, record_from_row
from aiplatform.storage import Storage

logger = logging.getLogger(__name__)
ARCHIVE_PREFIX = "results/archive"
MOVE_BATCH_ROWS = 20_000
"""Rows per move (and per file): a few MB of parquet, and a mark that holds the store's lock
for well under a second at 10^7 rows."""
DAY_S = 86_400
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("model", pa.string()),
        ("version", pa.int64()),
        ("input_digest", pa.string()),
        ("input_uri", pa.string()),
        ("output", pa.string()),
        ("latency_ms", pa.float64()),
        ("created_at", pa.float64()),
        ("features", pa.string()),
        ("client_id", pa.string()),
    ]
)
"""The archived columns: as stored in SQLite (``output`` and ``features`` stay JSON text)."""
assert tuple(SCHEMA.names) == STORED_COLUMNS
_PARTITION_VALUE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class RetentionPolicy:
    """What stays live: results younger than ``max_age_s`` and, per model, the newest
    ``max_rows_per_model`` (None: no limit of that kind; both None: nothing moves)."""

    max_age_s: float | None = None
    max_rows_per_model: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age_s is not None or self.max_rows_per_model is not None


class ResultArchive:
    """Moves due results out of ``store`` into ``storage`` and reads them back."""

    def __init__(
        self,
        store: ResultStore,
        storage: Storage,
        *,
        batch_rows: int = MOVE_BATCH_ROWS,
        step_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.batch_rows = batch_rows
        self._step_hook = step_hook
        """Called after each step of a move (``marked``, ``written``, ``committed``): the crash test's seam."""
        self._moving = threading.Lock()
        self._held_until = 0.0

    def hold_until(self, monotonic_deadline: float, *, replace: bool = False) -> None:
        """No move starts before ``monotonic_deadline`` (a reader of both places is at work);
        returns once the move in progress, if any, has committed."""
        with self._moving:
            self._held_until = monotonic_deadline if replace else max(self._held_until, monotonic_deadline)

    def recover(self) -> dict[str, int]:
        """Settle the moves a crash left pending: commit those whose file is complete, undo the rest."""
        settled = {"committed": 0, "undone": 0, "left": 0}
        with self._moving:
            for move in self.store.moves(state="pending"):
                key = move["key"]
                try:
                    if self._file_holds(key, {row[0] for row in self.store.moving_rows(key)}):
                        self.store.commit_move(key)
                        settled["committed"] += 1
                    else:
                        self._undo(key)
                        settled["undone"] += 1
                except Exception:
                    logger.exception("result archive: pending move %s left for a later run", key)
                    settled["left"] += 1
        if any(settled.values()):
            logger.info("result archive: pending moves settled: %s", settled)
        return settled

    def run(self, policy: RetentionPolicy, now: float | None = None) -> int:
        """Move every result the policy no longer keeps live; returns how many moved (stops
        early while held)."""
        if not policy.active:
            return 0
        cutoff = None if policy.max_age_s is None else (time.time() if now is None else now) - policy.max_age_s
        if self.store.moves(state="pending"):
            self.recover()  # a move a failure left (storage was down): settled before new ones
        boundaries = {} if policy.max_rows_per_model is None else self.store.boundaries(policy.max_rows_per_model)
        moved = 0
        while True:
            with self._moving:
                if time.monotonic() < self._held_until:
                    return moved
                due = self.store.next_due(cutoff, boundaries)
                if due is None:
                    return moved
                moved += self._move(due[0], due[1], cutoff, boundaries.get(due[0]))

    def _move(self, model: str, first_at: float, cutoff: float | None, boundary: tuple[float, str] | None) -> int:
        day_start = first_at // DAY_S * DAY_S
        key = archive_key(model, day_start, f"{int(first_at * 1000)}-{uuid.uuid4().hex[:12]}")
        marked = self.store.mark_move(key, model, day_start, day_start + DAY_S, cutoff, boundary, self.batch_rows)
        self._step("marked")
        if not marked:
            return 0
        rows = self.store.moving_rows(key)
        try:
            self.storage.put_bytes(key, _parquet_bytes(rows))
        except BaseException:
            self._undo(key)  # storage refused: the rows stay live, unmarked, for the next run
            raise
        self._step("written")
        self.store.commit_move(key)
        self._step("committed")
        return len(rows)

    def _undo(self, key: str) -> None:
        """Unmark a move's rows, after removing whatever of its file (and digest) was written; the
        rows stay marked when even that fails (storage unreachable), to be settled later."""
        self.storage.remove_tree(key)
        self.store.abandon_move(key)

    def _step(self, name: str) -> None:
        if self._step_hook is not None:
            self._step_hook(name)

    def _file_holds(self, key: str, ids: set[str]) -> bool:
        try:
            table = pq.read_table(io.BytesIO(self.storage.get_bytes(key)), columns=["id"])
        except Exception:
            return False
        return table.num_rows == len(ids) and set(table.column("id").to_pylist()) == ids


class ArchivedResultAPI(ResultAPI, Protocol):
    """The result store with its archive (the head actor, or ``RetainedResultStore`` in-process)."""

    def scan(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int = ...,
        models: Sequence[str] | None = None,
    ) -> list[PredictionRecord]: ...

    def moves(
        self,
        *,
        state: str = ...,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        models: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]: ...

    def retain(self, now: float | None = None) -> int: ...

    def hold_moves(self, lease: str, seconds: float) -> None: ...

    def release_moves(self, lease: str) -> None: ...


class RetainedResultStore(ResultStore):
    """The result store with its archive, as the head actor runs it: pending moves settled on
    opening, then the policy applied every ``interval_s`` by a background thread."""

    def __init__(
        self, db_path: str | Path, storage: Storage, policy: RetentionPolicy, interval_s: float = 3600.0
    ) -> None:
        super().__init__(db_path)
        self.policy = policy
        self.archive = ResultArchive(self, storage)
        self.archive.recover()
        self._leases: dict[str, float] = {}
        self._leases_lock = threading.Lock()
        self._stop = threading.Event()
        if policy.active:
            threading.Thread(
                target=self._retain_every, args=(interval_s,), name="result-retention", daemon=True
            ).start()

    def retain(self, now: float | None = None) -> int:
        """Apply the retention policy now; returns how many results moved to the archive."""
        return self.archive.run(self.policy, now)

    def hold_moves(self, lease: str, seconds: float) -> None:
        """No result moves while ``lease`` holds (at most ``seconds``, renewed by calling again):
        a reader of both places sees each row once. Returns once a move in progress has committed."""
        with self._leases_lock:
            self._leases[lease] = time.monotonic() + seconds
            self.archive.hold_until(max(self._leases.values()))

    def release_moves(self, lease: str) -> None:
        with self._leases_lock:
            self._leases.pop(lease, None)
            now = time.monotonic()
            self._leases = {k: t for k, t in self._leases.items() if t > now}
            self.archive.hold_until(max(self._leases.values(), default=0.0), replace=True)

    def close(self) -> None:
        self._stop.set()
        super().close()

    def _retain_every(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                moved = self.retain()
            except Exception:
                logger.exception("result retention failed; the results stay in the live table")
                continue
            if moved:
                logger.info("result retention moved %d results to the archive", moved)


def read_archived(
    storage: Storage, move: dict[str, Any], since: float | None = None, until: float | None = None
) -> pa.Table:
    """A committed move's rows in [since, until), from its verified file."""
    table = pq.read_table(io.BytesIO(storage.get_bytes(move["key"])), schema=SCHEMA)
    if since is not None:
        table = table.filter(pc.greater_equal(table["created_at"], since))
    if until is not None:
        table = table.filter(pc.less(table["created_at"], until))
    return table


def archive_key(model: str, day_start: float, name: str) -> str:
    """Where a move's file goes; a model name that is not a safe path part is named by its digest."""
    part = model if _PARTITION_VALUE.fullmatch(model) else f"x-{hashlib.sha256(model.encode()).hexdigest()[:16]}"
    day = time.strftime("%Y-%m-%d", time.gmtime(day_start))
    return f"{ARCHIVE_PREFIX}/model={part}/day={day}/{name}.parquet"


def _parquet_bytes(rows: list[tuple[Any, ...]]) -> bytes:
    table = pa.Table.from_pylist([dict(zip(STORED_COLUMNS, row)) for row in rows], schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def records(table: pa.Table) -> Iterator[PredictionRecord]:
    """The archived rows of ``table`` as the store's records."""
    for row in table.to_pylist():
        yield record_from_row(row)
