"""The loop engine's durable state: policies, runs with their steps, skipped triggers (``loops.sqlite``).

A run is one row: the step it is at (``state``), the steps it finished (each with its time,
outcome and links), and what the step in progress has started (a task id, the canary's start).
Each step's end is one transaction, so after a restart a run carries on from its last finished
step. At most one run per model is open: a partial unique index says so, whoever asks.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiplatform.alerting.store import redacted_url
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.loops.policy import LoopPolicy
from aiplatform.sqlite import open_database, transaction

STEPS = ("data", "train", "gate", "canary", "decide")
"""The steps of a run, in order; a run's ``state`` is the step it is at until it ends."""
PROMOTED, ROLLED_BACK, REJECTED, FAILED = "promoted", "rolled_back", "rejected", "failed"
ENDS = (PROMOTED, ROLLED_BACK, REJECTED, FAILED)
MAX_LIST = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    model TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    marks TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    trigger TEXT NOT NULL,
    steps TEXT NOT NULL,
    context TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_open ON runs(model) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS runs_by_model ON runs(model, created_at);
CREATE TABLE IF NOT EXISTS skipped (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    at REAL NOT NULL,
    trigger TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS skipped_by_model ON skipped(model, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    done_at REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_at) WHERE next_at IS NOT NULL;
"""


@dataclass(frozen=True)
class Run:
    """One retraining run as stored."""

    id: str
    model: str
    state: str
    trigger: dict[str, Any]
    steps: list[dict[str, Any]]
    context: dict[str, Any]
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredPolicy:
    """A policy with its marks: the last schedule tick, alert and dataset version it has seen,
    and when its model's last run ended (the cool-down counts from there)."""

    policy: LoopPolicy
    created_at: float
    updated_at: float
    marks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.policy.model_dump(mode="json"),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "marks": self.marks,
        }


class LoopStore:
    """SQLite-backed, thread-safe."""

    def __init__(self, db_path: str | Path, clock: Any = time.time, webhooks: list[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._db = open_database(Path(db_path), _SCHEMA)
        self.clock = clock
        self.webhooks = list(webhooks or [])
        """Where each run's decision is sent: queued in the transaction that ends the run."""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- policies --------------------------------------------------------------------------
    def put_policy(self, policy: LoopPolicy, marks: dict[str, Any]) -> StoredPolicy:
        """Create or replace ``policy.model``'s policy; a replaced one keeps its marks."""
        now = self.clock()
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT * FROM policies WHERE model = ?", (policy.model,)).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO policies(model, policy, created_at, updated_at, marks) VALUES (?, ?, ?, ?, ?)",
                    (policy.model, policy.model_dump_json(), now, now, json.dumps(marks)),
                )
            else:
                kept = {**marks, **json.loads(row["marks"])}
                self._db.execute(
                    "UPDATE policies SET policy = ?, updated_at = ?, marks = ? WHERE model = ?",
                    (policy.model_dump_json(), now, json.dumps(kept), policy.model),
                )
        return self.policy(policy.model)

    def policy(self, model: str) -> StoredPolicy:
        with self._lock:
            row = self._db.execute("SELECT * FROM policies WHERE model = ?", (model,)).fetchone()
        if row is None:
            raise NotFound(f"No loop policy for model {model!r}")
        return _policy(row)

    def policies(self) -> list[StoredPolicy]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM policies ORDER BY model").fetchall()
        return [_policy(row) for row in rows]

    def delete_policy(self, model: str) -> None:
        with self._lock, transaction(self._db):
            if self._db.execute("DELETE FROM policies WHERE model = ?", (model,)).rowcount == 0:
                raise NotFound(f"No loop policy for model {model!r}")

    def set_marks(self, model: str, **marks: Any) -> None:
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT marks FROM policies WHERE model = ?", (model,)).fetchone()
            if row is None:
                return
            merged = {**json.loads(row["marks"]), **marks}
            self._db.execute("UPDATE policies SET marks = ? WHERE model = ?", (json.dumps(merged), model))

    # -- runs ------------------------------------------------------------------------------
    def open_run(self, model: str, trigger: dict[str, Any], now: float | None = None) -> Run:
        """A new run at its first step; :class:`Conflict` when the model has one open."""
        now = self.clock() if now is None else now
        run_id = f"loop-{uuid.uuid4().hex[:12]}"
        started = {"step": "triggered", "at": now, "outcome": "ok", **trigger}
        try:
            with self._lock, transaction(self._db):
                self._db.execute(
                    "INSERT INTO runs(id, model, state, trigger, steps, context, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
                    (run_id, model, STEPS[0], json.dumps(trigger), json.dumps([started]), now, now),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"Model {model!r} already has a retraining run open") from None
        return self.run(run_id)

    def run(self, run_id: str) -> Run:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"Loop run {run_id!r} not found")
        return _run(row)

    def open_runs(self) -> list[Run]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs WHERE finished_at IS NULL ORDER BY created_at").fetchall()
        return [_run(row) for row in rows]

    def open_run_of(self, model: str) -> Run | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE model = ? AND finished_at IS NULL", (model,)).fetchone()
        return None if row is None else _run(row)

    def run_of_version(self, model: str, version: int) -> Run | None:
        """The run whose training made ``version`` of ``model`` (None for a version no run made)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM runs WHERE model = ? AND json_extract(context, '$.candidate') = ?"
                " ORDER BY created_at DESC LIMIT 1",
                (model, int(version)),
            ).fetchone()
        return None if row is None else _run(row)

    def runs(self, model: str | None = None, limit: int = 50) -> list[Run]:
        """Newest first."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST}, got {limit}")
        where, params = ("WHERE model = ?", [model]) if model else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM runs {where} ORDER BY created_at DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [_run(row) for row in rows]

    def note(self, run_id: str, now: float | None = None, **context: Any) -> Run:
        """Record what the step in progress started (a task id...), before waiting on it."""
        with self._lock, transaction(self._db):
            row = self._row(run_id)
            merged = {**json.loads(row["context"]), **context}
            self._db.execute(
                "UPDATE runs SET context = ?, updated_at = ? WHERE id = ?",
                (json.dumps(merged), self.clock() if now is None else now, run_id),
            )
        return self.run(run_id)

    def finish_step(
        self, run_id: str, step: str, outcome: str, links: dict[str, Any], next_state: str, now: float | None = None
    ) -> Run:
        """End the run's current step ``step`` with ``outcome`` and its links, and move it on to
        ``next_state`` (a step, or an end: the run is then finished). A step already ended (a
        retried call) changes nothing."""
        now = self.clock() if now is None else now
        with self._lock, transaction(self._db):
            row = self._row(run_id)
            if row["state"] != step:
                return _run(row)
            steps = [*json.loads(row["steps"]), {"step": step, "at": now, "outcome": outcome, **links}]
            finished = now if next_state in ENDS else None
            error = links.get("error") if next_state == FAILED else row["error"]
            self._db.execute(
                "UPDATE runs SET state = ?, steps = ?, updated_at = ?, finished_at = ?, error = ? WHERE id = ?",
                (next_state, json.dumps(steps), now, finished, error, run_id),
            )
            if finished is not None:
                payload = json.dumps({"event": "loop.decision", "run": _run(self._row(run_id)).to_dict()})
                for url in self.webhooks:
                    self._db.execute(
                        "INSERT INTO deliveries(run_id, url, payload, next_at) VALUES (?, ?, ?, ?)",
                        (run_id, url, payload, now),
                    )
        return self.run(run_id)

    def _row(self, run_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"Loop run {run_id!r} not found")
        return row

    # -- skipped triggers ------------------------------------------------------------------
    def skip(self, model: str, trigger: dict[str, Any], reason: str, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        with self._lock, transaction(self._db):
            self._db.execute(
                "INSERT INTO skipped(model, at, trigger, reason) VALUES (?, ?, ?, ?)",
                (model, now, json.dumps(trigger), reason),
            )
        return {"model": model, "at": now, "trigger": trigger, "reason": reason}

    def skipped(self, model: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM skipped WHERE model = ? ORDER BY seq DESC LIMIT ?", (model, limit)
            ).fetchall()
        return [
            {"model": r["model"], "at": r["at"], "trigger": json.loads(r["trigger"]), "reason": r["reason"]}
            for r in rows
        ]

    # -- the decisions' webhook outbox -----------------------------------------------------
    def due_deliveries(self, now: float) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deliveries WHERE next_at IS NOT NULL AND next_at <= ? ORDER BY id", (now,)
            ).fetchall()
        return [dict(row) for row in rows]

    def delivery_done(self, delivery_id: int, now: float) -> None:
        with self._lock, transaction(self._db):
            self._db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_at = NULL, done_at = ?, error = NULL WHERE id = ?",
                (now, delivery_id),
            )

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        with self._lock, transaction(self._db):
            self._db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, error = ? WHERE id = ?",
                (retry_at, error, delivery_id),
            )

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        """A run's decision webhooks: attempts, done or not, the last error (the URL to its host)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM deliveries WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [{**dict(row), "url": redacted_url(row["url"]), "payload": None} for row in rows]


def _policy(row: sqlite3.Row) -> StoredPolicy:
    return StoredPolicy(
        LoopPolicy.model_validate_json(row["policy"]), row["created_at"], row["updated_at"], json.loads(row["marks"])
    )


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        model=row["model"],
        state=row["state"],
        trigger=json.loads(row["trigger"]),
        steps=json.loads(row["steps"]),
        context=json.loads(row["context"]),
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )
