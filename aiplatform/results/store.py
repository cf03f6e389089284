"""The result store: every prediction (id, model, version, input digest, output, latency, time).

SQLite on the head node; one transaction per batch of records, committed before the call
returns. Batching happens in the caller (:class:`aiplatform.results.actor.ResultWriter`), so the
request path never waits on a disk write.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.results.feedback import (
    FEEDBACK_SCHEMA,
    LabeledPrediction,
    LabelRequest,
    LabelTarget,
    VersionQuality,
    at_row,
    filter_clauses,
    quality_by_version,
    resolve,
    result_time,
    store_labels,
    window_clauses,
)
from aiplatform.sqlite import open_database, transaction

MAX_QUERY_LIMIT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    input_digest TEXT NOT NULL,
    input_uri TEXT,
    output TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    created_at REAL NOT NULL,
    features TEXT,
    client_id TEXT,
    move_key TEXT
);
CREATE TABLE IF NOT EXISTS archive_moves (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    rows INTEGER NOT NULL,
    min_at REAL NOT NULL,
    max_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed')),
    moved_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_by_model ON archive_moves(model, max_at);
DROP INDEX IF EXISTS results_model_time;
DROP INDEX IF EXISTS results_time;
CREATE INDEX IF NOT EXISTS results_by_model ON results(model, created_at, id);
CREATE INDEX IF NOT EXISTS results_by_version ON results(model, version, created_at, id);
CREATE INDEX IF NOT EXISTS results_by_time ON results(created_at, id);
"""
_MOVING_INDEX = "CREATE INDEX IF NOT EXISTS results_moving ON results(move_key) WHERE move_key IS NOT NULL"
STORED_COLUMNS = (
    "id",
    "model",
    "version",
    "input_digest",
    "input_uri",
    "output",
    "latency_ms",
    "created_at",
    "features",
    "client_id",
)
"""The columns of a kept prediction, in the archive's order too (``move_key`` is the store's own)."""
"""Every query the API and UI make reads an index in its own order, newest first, and stops at
its page: a model's (``results_by_model``: with only a (model, version, time) index SQLite sorted
every row of the model, 410 ms at 10^6 rows), a version's, all models' (test_result_store.py
checks the plans). The first two indexes of earlier versions are replaced on opening."""


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction as the result store keeps it."""

    id: str
    model: str
    version: int
    input_digest: str
    output: dict[str, Any]
    latency_ms: float
    created_at: float = field(default_factory=time.time)
    input_uri: str | None = None
    features: dict[str, float] = field(default_factory=dict)
    """Summary features of the input (mean intensity, text length...), what drift analysis compares."""
    client_id: str | None = None
    """The id the client gave its request (v2 ``id``); never the record's own ``id``, which the
    server makes, so one client cannot name, or overwrite, another client's result."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResultAPI(Protocol):
    """What callers may ask of the result store: the store itself, or its actor through a client."""

    def get(self, result_id: str) -> PredictionRecord: ...

    def query(self, **filters: Any) -> list[PredictionRecord]: ...

    def count(self, model: str | None = None) -> int: ...

    def resolve_labels(
        self, requests: list[LabelRequest], models: Sequence[str] | None = None
    ) -> list[LabelTarget]: ...

    def label(
        self,
        requests: list[LabelRequest],
        allowed: dict[tuple[str, int], list[str]],
        by: str,
        models: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]: ...

    def feedback_of(self, result_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def feedback_history(self, result_id: str) -> list[dict[str, Any]]: ...

    def quality(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        since: float | None = None,
        until: float | None = None,
        models: Sequence[str] | None = None,
    ) -> list[VersionQuality]: ...

    def labeled(
        self,
        *,
        model: str,
        version: int | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int = ...,
    ) -> list[LabeledPrediction]: ...


class ResultStore:
    """SQLite-backed, thread-safe; writing a record twice keeps the first (retries are safe)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.Lock()
        self._db = open_database(self.db_path, _SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(results)")}
        # Stores written by earlier versions: before inputs had summary features, before client
        # ids, before results moved to the archive.
        for column in ("features", "client_id", "move_key"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT")
        self._db.execute(_MOVING_INDEX)
        self._db.executescript(FEEDBACK_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_batch(self, records: list[PredictionRecord]) -> int:
        """Store records in one transaction; returns how many were new."""
        rows = [
            (
                r.id,
                r.model,
                int(r.version),
                r.input_digest,
                r.input_uri,
                json.dumps(r.output),
                float(r.latency_ms),
                float(r.created_at),
                json.dumps(r.features) if r.features else None,
                r.client_id,
            )
            for r in records
        ]
        with self._lock:
            before = self._db.total_changes
            with transaction(self._db) as db:
                db.executemany(
                    "INSERT OR IGNORE INTO results(id, model, version, input_digest, input_uri,"
                    " output, latency_ms, created_at, features, client_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
            return self._db.total_changes - before

    def get(self, result_id: str) -> PredictionRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            raise NotFound(f"Result {result_id!r} not found")
        return record_from_row(row)

    def query(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        since: float | None = None,
        until: float | None = None,
        before: str | None = None,
        limit: int = 100,
        label: str | None = None,
        models: Sequence[str] | None = None,
    ) -> list[PredictionRecord]:
        """Newest first, filtered by model, version, time range, predicted label and ``models``
        (a project's models; None: every model); ``before``
        (a page's ``next_cursor(records)``) continues after the last record of a previous page,
        stable while new results arrive. The label is checked on the rows the index gives, newest
        first, until a page is full (no index of its own: it narrows a model's page)."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_QUERY_LIMIT}, got {limit}")
        if version is not None and model is None:
            raise InvalidArgument("version filter needs a model filter")
        clauses, params = filter_clauses(model, version, since, until, models)
        if before is not None:
            at, last_id = parse_cursor(before)
            clauses.append("(created_at, id) < (?, ?)")  # a row value: the index's range, not a scan to it
            params.extend((at, last_id))
        if label is not None:
            clauses.append("json_extract(output, '$.label') = ?")
            params.append(label)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM results {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [record_from_row(row) for row in rows]

    def scan(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int = MAX_QUERY_LIMIT,
        models: Sequence[str] | None = None,
    ) -> list[PredictionRecord]:
        """Oldest first, after the cursor ``after`` (``next_cursor`` of the previous page): what
        an export reads, page by page, in the order of the archive before it (of ``models``
        only, when given)."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_QUERY_LIMIT}, got {limit}")
        clauses, params = filter_clauses(model, None, since, until, models)
        if after is not None:
            at, last_id = parse_cursor(after)
            clauses.append("(created_at, id) > (?, ?)")
            params.extend((at, last_id))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM results {where} ORDER BY created_at, id LIMIT ?", (*params, limit)
            ).fetchall()
        return [record_from_row(row) for row in rows]

    # Moving results to the archive (aiplatform.results.archive): a move marks its rows with its
    # key, the archive writes them to storage, and one transaction deletes them and commits the
    # move. Readers take live rows plus committed moves, so each row is read exactly once.

    def next_due(self, cutoff: float | None, boundaries: dict[str, tuple[float, str]]) -> tuple[str, float] | None:
        """(model, time) of an oldest result due to move: older than ``cutoff``, or at or
        before its model's boundary (the newest result past those it keeps); None when none is."""
        with self._lock:
            if cutoff is not None:
                row = self._db.execute(
                    "SELECT model, created_at FROM results WHERE created_at < ? AND move_key IS NULL"
                    " ORDER BY created_at, id LIMIT 1",
                    (cutoff,),
                ).fetchone()
                if row is not None:
                    return row["model"], float(row["created_at"])
            for model, (at, last_id) in boundaries.items():
                row = self._db.execute(
                    "SELECT created_at, id FROM results WHERE model = ? AND move_key IS NULL"
                    " ORDER BY created_at, id LIMIT 1",
                    (model,),
                ).fetchone()
                if row is not None and (row["created_at"], row["id"]) <= (at, last_id):
                    return model, float(row["created_at"])
        return None

    def boundaries(self, keep_per_model: int) -> dict[str, tuple[float, str]]:
        """Per model with more than ``keep_per_model`` results, the newest one past those kept."""
        with self._lock:
            models = [
                row[0]
                for row in self._db.execute(
                    "WITH RECURSIVE m(model) AS (SELECT MIN(model) FROM results UNION ALL"
                    " SELECT (SELECT MIN(model) FROM results WHERE model > m.model) FROM m WHERE m.model IS NOT NULL)"
                    " SELECT model FROM m WHERE model IS NOT NULL"
                )
            ]  # distinct models by index skip-scan
            found = {}
            for model in models:
                row = self._db.execute(
                    "SELECT created_at, id FROM results WHERE model = ? ORDER BY created_at DESC, id DESC"
                    " LIMIT 1 OFFSET ?",
                    (model, keep_per_model),
                ).fetchone()
                if row is not None:
                    found[model] = (float(row["created_at"]), row["id"])
        return found

    def mark_move(
        self,
        key: str,
        model: str,
        since: float,
        until: float,
        cutoff: float | None,
        boundary: tuple[float, str] | None,
        limit: int,
    ) -> int:
        """Mark up to ``limit`` of ``model``'s due results in [since, until) as moving under
        ``key`` (a pending move); returns how many."""
        due, params = [], []
        if cutoff is not None:
            due.append("created_at < ?")
            params.append(cutoff)
        if boundary is not None:
            due.append("(created_at < ? OR (created_at = ? AND id <= ?))")
            params.extend((boundary[0], boundary[0], boundary[1]))
        if not due:
            return 0
        with self._lock, transaction(self._db) as db:
            marked = db.execute(
                "UPDATE results SET move_key = ? WHERE rowid IN (SELECT rowid FROM results WHERE model = ?"
                " AND move_key IS NULL AND created_at >= ? AND created_at < ?"
                f" AND ({' OR '.join(due)}) ORDER BY created_at, id LIMIT ?)",
                (key, model, since, until, *params, limit),
            ).rowcount
            if marked:
                low, high = db.execute(
                    "SELECT MIN(created_at), MAX(created_at) FROM results WHERE move_key = ?", (key,)
                ).fetchone()
                db.execute(
                    "INSERT INTO archive_moves(key, model, rows, min_at, max_at, state, moved_at)"
                    " VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                    (key, model, marked, low, high, time.time()),
                )
        return int(marked)

    def moving_rows(self, key: str) -> list[tuple[Any, ...]]:
        """The rows of a pending move, as stored (columns ``STORED_COLUMNS``)."""
        with self._lock:
            return [
                tuple(row)
                for row in self._db.execute(
                    f"SELECT {', '.join(STORED_COLUMNS)} FROM results WHERE move_key = ? ORDER BY created_at, id",
                    (key,),
                )
            ]

    def commit_move(self, key: str) -> None:
        """The move's file is complete in storage: its rows leave the live table, in one transaction."""
        with self._lock, transaction(self._db) as db:
            db.execute("DELETE FROM results WHERE move_key = ?", (key,))
            db.execute("UPDATE archive_moves SET state = 'committed' WHERE key = ?", (key,))

    def abandon_move(self, key: str) -> None:
        """The move's file is not (completely) in storage: its rows stay live, unmarked."""
        with self._lock, transaction(self._db) as db:
            db.execute("UPDATE results SET move_key = NULL WHERE move_key = ?", (key,))
            db.execute("DELETE FROM archive_moves WHERE key = ? AND state = 'pending'", (key,))

    def moves(
        self,
        *,
        state: str = "committed",
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        models: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Moves in ``state`` (whose rows overlap [since, until) when given, of ``models`` when
        given), oldest first."""
        clauses, params = ["state = ?"], [state]
        for clause, value in (("model = ?", model), ("max_at >= ?", since), ("min_at < ?", until)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if models is not None:
            clauses.append(f"model IN ({','.join('?' * len(models))})" if models else "0")
            params.extend(models)
        with self._lock:
            return [
                dict(row)
                for row in self._db.execute(
                    f"SELECT * FROM archive_moves WHERE {' AND '.join(clauses)} ORDER BY min_at, key", params
                )
            ]

    # -- ground truth (aiplatform.results.feedback) ----------------------------------------------
    def resolve_labels(self, requests: list[LabelRequest], models: Sequence[str] | None = None) -> list[LabelTarget]:
        """The live result each request names, in order (a result of ``models`` only, when
        given: a project's); the first that names none raises (NotFound; Conflict when retention
        archived it; InvalidArgument when it names several)."""
        owned = None if models is None else frozenset(models)
        with self._lock:
            return [resolve(self._db, request, self._archived_reason, owned) for request in requests]

    def label(
        self,
        requests: list[LabelRequest],
        allowed: dict[tuple[str, int], list[str]],
        by: str,
        models: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Label every request's result (of ``models`` only, when given), all in one transaction
        or none: each label must be one of ``allowed[(model, version)]`` (its version's classes).
        Returns what changed per row."""
        owned = None if models is None else frozenset(models)
        with self._lock, transaction(self._db) as db:
            targets = []
            for request in requests:
                target = resolve(db, request, self._archived_reason, owned)
                classes = allowed.get((target.model, target.version))
                if classes is None:
                    raise InvalidArgument(
                        f"{at_row(request)}the classes of {target.model} v{target.version} were not given"
                    )
                if request.label not in classes:
                    raise InvalidArgument(
                        f"{at_row(request)}{request.label!r} is not a class of {target.model} "
                        f"v{target.version}; allowed: {', '.join(classes)}"
                    )
                targets.append((target, request.label))
            return store_labels(db, targets, by)

    def feedback_of(self, result_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The current label of each of ``result_ids`` that has one (a page of results)."""
        if not result_ids:
            return {}
        marks = ",".join("?" * len(result_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT result_id, label, labeled_at, labeled_by FROM feedback WHERE result_id IN ({marks})",
                list(result_ids),
            ).fetchall()
        return {row["result_id"]: {k: row[k] for k in ("label", "labeled_at", "labeled_by")} for row in rows}

    def feedback_history(self, result_id: str) -> list[dict[str, Any]]:
        """Every label ``result_id`` was given, oldest first (label, previous label, who, when)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT result_id, label, previous_label, labeled_by, labeled_at FROM feedback_history"
                " WHERE result_id = ? ORDER BY seq",
                (result_id,),
            ).fetchall()
        return [dict(row) for row in rows]

    def quality(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        since: float | None = None,
        until: float | None = None,
        models: Sequence[str] | None = None,
    ) -> list[VersionQuality]:
        """Accuracy and macro-F1 per model version of the predictions made in [since, until)
        that have a label (archived ones included), with how many there were (of ``models``
        only, when given)."""
        if version is not None and model is None:
            raise InvalidArgument("version filter needs a model filter")
        where, params = window_clauses(model, version, since, until, models)
        with self._lock:
            rows = self._db.execute(
                f"SELECT model, version, predicted, label, COUNT(*) FROM feedback {where}"
                " GROUP BY model, version, predicted, label",
                params,
            ).fetchall()
        return quality_by_version(tuple(row) for row in rows)

    def labeled(
        self,
        *,
        model: str,
        version: int | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int = MAX_QUERY_LIMIT,
    ) -> list[LabeledPrediction]:
        """``model``'s labeled predictions made in [since, until), oldest first, a page after the
        cursor ``after`` (``labeled_cursor`` of the previous page): what a retraining run reads
        to add them to its dataset."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_QUERY_LIMIT}, got {limit}")
        where, params = window_clauses(model, version, since, until)
        clauses = [where]
        if after is not None:
            at, last_id = parse_cursor(after)
            clauses.append("AND (created_at, result_id) > (?, ?)")
            params.extend((at, last_id))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM feedback {' '.join(clauses)} ORDER BY created_at, result_id LIMIT ?", (*params, limit)
            ).fetchall()
        return [LabeledPrediction(**dict(row)) for row in rows]

    def _archived_reason(self, result_id: str) -> str | None:
        """Why a result that is not live cannot be labeled, when retention moved it (a committed
        move covers the time its id was made); None when it never was one."""
        at = result_time(result_id)
        if at is None:
            return None
        moved = self._db.execute(
            "SELECT 1 FROM archive_moves WHERE state = 'committed' AND min_at <= ? AND max_at >= ? LIMIT 1",
            (at + 1.0, at - 1.0),
        ).fetchone()
        if moved is None:
            return None
        return (
            "it is older than the result store keeps live and was archived by retention "
            "(AIP_RESULT_RETENTION_DAYS / AIP_RESULT_RETENTION_ROWS_PER_MODEL); only live results take labels"
        )

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM results WHERE model = ?", (model,)).fetchone()[0])


def new_result_id() -> str:
    """A prediction's id: microseconds since the epoch (14 hex digits), then 72 random bits.

    Ids made later sort later, so the store's primary-key index grows at its end; with random
    (uuid4) ids every insert landed on a random page of it, and batches slowed as the index
    outgrew the cache (bench/scale.py). Unguessable still: the random part alone is 2**72."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def labeled_since(
    results: ResultAPI,
    model: str,
    since: float | None = None,
    *,
    until: float | None = None,
    version: int | None = None,
    page_rows: int = MAX_QUERY_LIMIT,
) -> Iterator[LabeledPrediction]:
    """Every labeled prediction of ``model`` made in [since, until), oldest first, a page at a
    time from the store or its actor: what a retraining run adds to its dataset (each one's kept
    input is at ``input_uri`` in storage, when inputs are kept)."""
    after = None
    while True:
        page = results.labeled(model=model, version=version, since=since, until=until, after=after, limit=page_rows)
        yield from page
        if len(page) < page_rows:
            return
        after = labeled_cursor(page)


def labeled_cursor(page: list[LabeledPrediction]) -> str | None:
    """Where the page of labeled predictions after ``page`` starts (None for an empty page)."""
    return f"{page[-1].created_at!r}~{page[-1].result_id}" if page else None


def next_cursor(page: list[PredictionRecord]) -> str | None:
    """Where the page after ``page`` starts (None for an empty page)."""
    return f"{page[-1].created_at!r}~{page[-1].id}" if page else None


def parse_cursor(cursor: str) -> tuple[float, str]:
    at, _, last_id = cursor.partition("~")
    try:
        value = float(at)
    except ValueError:
        value = float("nan")
    if not last_id or len(cursor) > 200 or value != value:
        raise InvalidArgument(f"cursor {cursor[:60]!r} is not one this API gave (use a page's next_cursor)")
    return value, last_id


def record_from_row(row: sqlite3.Row) -> PredictionRecord:
    return PredictionRecord(
        id=row["id"],
        model=row["model"],
        version=int(row["version"]),
        input_digest=row["input_digest"],
        output=json.loads(row["output"]),
        latency_ms=float(row["latency_ms"]),
        created_at=float(row["created_at"]),
        input_uri=row["input_uri"],
        features=json.loads(row["features"]) if row["features"] else {},
        client_id=row["client_id"],
    )
