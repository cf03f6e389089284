"""The result store: every prediction (id, model, version, input digest, output, latency, time).

SQLite on the head node; one transaction per batch of records, committed before the call
returns. Batching happens in the caller (:class:`aiplatform.results.client.ResultWriter`), so the
request path never waits on a disk write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from aiplatform.errors import InvalidArgument, NotFound
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
    client_id TEXT
);
DROP INDEX IF EXISTS results_model_time;
DROP INDEX IF EXISTS results_time;
CREATE INDEX IF NOT EXISTS results_by_model ON results(model, created_at, id);
CREATE INDEX IF NOT EXISTS results_by_version ON results(model, version, created_at, id);
CREATE INDEX IF NOT EXISTS results_by_time ON results(created_at, id);
"""
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
    input_uri: Optional[str] = None
    features: dict[str, float] = field(default_factory=dict)
    """Summary features of the input (mean intensity, text length...), what drift analysis compares."""
    client_id: Optional[str] = None
    """The id the client gave its request (v2 ``id``); never the record's own ``id``, which the
    server makes, so one client cannot name, or overwrite, another client's result."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResultAPI(Protocol):
    """What callers may ask of the result store: the store itself, or its actor through a client."""

    def get(self, result_id: str) -> PredictionRecord: ...

    def query(self, **filters: Any) -> list[PredictionRecord]: ...

    def count(self, model: Optional[str] = None) -> int: ...


class ResultStore:
    """SQLite-backed, thread-safe; writing a record twice keeps the first (retries are safe)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.Lock()
        self._db = open_database(self.db_path, _SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(results)")}
        # Stores written by earlier versions: before inputs had summary features, before client ids.
        for column in ("features", "client_id"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_batch(self, records: list[PredictionRecord]) -> int:
        """Store records in one transaction; returns how many were new."""
        rows = [
            (
                r.id, r.model, int(r.version), r.input_digest, r.input_uri,
                json.dumps(r.output), float(r.latency_ms), float(r.created_at),
                json.dumps(r.features) if r.features else None, r.client_id,
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
        return _to_record(row)

    def query(
        self,
        *,
        model: Optional[str] = None,
        version: Optional[int] = None,
        since: Optional[float] = None,
        until: Optional[float] = None,
        before: Optional[str] = None,
        limit: int = 100,
    ) -> list[PredictionRecord]:
        """Newest first, filtered by model, version and time range; ``before`` (a page's
        ``next_cursor(records)``) continues after the last record of a previous page, stable
        while new results arrive."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_QUERY_LIMIT}, got {limit}")
        if version is not None and model is None:
            raise InvalidArgument("version filter needs a model filter")
        clauses, params = [], []
        for column, op, value in (
            ("model", "=", model), ("version", "=", version),
            ("created_at", ">=", since), ("created_at", "<", until),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        if before is not None:
            at, last_id = parse_cursor(before)
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params.extend((at, at, last_id))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM results {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [_to_record(row) for row in rows]

    def count(self, model: Optional[str] = None) -> int:
        with self._lock:
            if model is None:
                return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return int(
                self._db.execute("SELECT COUNT(*) FROM results WHERE model = ?", (model,)).fetchone()[0]
            )


def next_cursor(page: list[PredictionRecord]) -> Optional[str]:
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


def _to_record(row: sqlite3.Row) -> PredictionRecord:
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
