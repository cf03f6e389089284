"""A sweep's trials, kept beside its task in the queue's database.

A sweep is one task (one Ray job); each of its Ray Tune trials is a *run* recorded here with the
values it tried, its state and its per-epoch metrics (in ``task_metrics`` under the run id
``<sweep id>:<trial id>``, so a trial's curves read like a task's). A trial's states:

    PENDING -> RUNNING -> FINISHED | STOPPED (early, by the scheduler) | FAILED
    RUNNING -> PAUSED (its sweep was stopped)  -> RUNNING (the sweep resumed)

A finished, stopped or failed trial never changes again, so every call is safe to repeat.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.sqlite import transaction

PENDING, TRIAL_RUNNING, PAUSED = "PENDING", "RUNNING", "PAUSED"
FINISHED, STOPPED, TRIAL_FAILED = "FINISHED", "STOPPED", "FAILED"
TRIAL_STATES = (PENDING, TRIAL_RUNNING, PAUSED, FINISHED, STOPPED, TRIAL_FAILED)
TRIAL_DONE_STATES = (FINISHED, STOPPED, TRIAL_FAILED)
RUN_SEPARATOR = ":"
MAX_COMPARED_RUNS = 2000

TRIALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    sweep_id TEXT NOT NULL,
    trial_id TEXT NOT NULL,
    segment INTEGER NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    epoch INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}',
    checkpoint TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (sweep_id, trial_id)
);
"""


def run_id(sweep_id: str, trial_id: str) -> str:
    """The id a trial is compared and charted by, beside plain task ids."""
    return f"{sweep_id}{RUN_SEPARATOR}{trial_id}"


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: the values it tried, where it got to, and how it ended."""

    sweep_id: str
    trial_id: str
    segment: int
    params: dict[str, Any]
    state: str
    epoch: int | None
    metrics: dict[str, Any]
    checkpoint: str | None
    error: str | None
    created_at: float
    updated_at: float

    @property
    def run_id(self) -> str:
        return run_id(self.sweep_id, self.trial_id)

    @property
    def done(self) -> bool:
        return self.state in TRIAL_DONE_STATES

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_id": self.run_id}


class TrialRecords:
    """The trial half of the task store (mixed into ``TaskStore``, sharing its database and lock)."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def record_trial(
        self, sweep_id: str, trial_id: str, *, params: dict[str, Any], segment: int, state: str = TRIAL_RUNNING
    ) -> Trial:
        """A trial started (or started again after its sweep resumed). A done trial stays done."""
        _check_state(state)
        now = time.time()
        with self._lock, transaction(self._db) as db:
            db.execute(
                "INSERT INTO trials(sweep_id, trial_id, segment, params, state, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(sweep_id, trial_id) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at WHERE trials.state NOT IN (?,?,?)",
                (sweep_id, trial_id, segment, json.dumps(params), state, now, now, *TRIAL_DONE_STATES),
            )
        return self.trial(sweep_id, trial_id)

    def report_trial(
        self, sweep_id: str, trial_id: str, metrics: dict[str, Any], checkpoint: str | None = None
    ) -> None:
        """One epoch of a trial: its curves' point (replacing a re-reported epoch) and its latest
        metrics and checkpoint."""
        epoch = metrics.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise InvalidArgument(f"Trial metrics need an integer 'epoch' (got {epoch!r})")
        # A diverged run reports NaN or infinity: kept as null (JSON has neither, and no ranking should see them).
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()
            if isinstance(v, (int, float, str, bool)) or v is None
        }
        now = time.time()
        with self._lock, transaction(self._db) as db:
            db.execute(
                "INSERT INTO task_metrics(task_id, epoch, metrics, at) VALUES (?,?,?,?)"
                " ON CONFLICT(task_id, epoch) DO UPDATE SET metrics = excluded.metrics, at = excluded.at",
                (run_id(sweep_id, trial_id), epoch, json.dumps(clean), now),
            )
            db.execute(
                "UPDATE trials SET epoch = ?, metrics = ?, checkpoint = COALESCE(?, checkpoint),"
                " updated_at = ? WHERE sweep_id = ? AND trial_id = ?",
                (epoch, json.dumps(clean), checkpoint, now, sweep_id, trial_id),
            )

    def finish_trial(self, sweep_id: str, trial_id: str, state: str, error: str | None = None) -> Trial:
        """FINISHED, STOPPED or FAILED (the first of them wins), or PAUSED while its sweep is stopped."""
        _check_state(state)
        with self._lock, transaction(self._db) as db:
            # The first reason recorded stays (the trial's own one line, before Tune's wrapping of it).
            db.execute(
                "UPDATE trials SET state = ?, error = COALESCE(error, ?), updated_at = ?"
                " WHERE sweep_id = ? AND trial_id = ? AND state NOT IN (?,?,?)",
                (state, error, time.time(), sweep_id, trial_id, *TRIAL_DONE_STATES),
            )
        return self.trial(sweep_id, trial_id)

    def pause_trials(self, sweep_id: str) -> int:
        """Every trial still running or pending is PAUSED (its sweep stopped); how many were."""
        with self._lock, transaction(self._db) as db:
            return db.execute(
                "UPDATE trials SET state = ?, updated_at = ? WHERE sweep_id = ? AND state IN (?,?)",
                (PAUSED, time.time(), sweep_id, PENDING, TRIAL_RUNNING),
            ).rowcount

    def trial(self, sweep_id: str, trial_id: str) -> Trial:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM trials WHERE sweep_id = ? AND trial_id = ?", (sweep_id, trial_id)
            ).fetchone()
        if row is None:
            raise NotFound(f"Sweep {sweep_id!r} has no trial {trial_id!r}")
        return _to_trial(row)

    def trials(self, sweep_id: str) -> list[Trial]:
        """A sweep's trials in the order they started."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM trials WHERE sweep_id = ? ORDER BY created_at, trial_id", (sweep_id,)
            ).fetchall()
        return [_to_trial(row) for row in rows]

    def compare_runs(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Tasks and trials side by side, in the order asked: for each, its parameters, state,
        latest metrics and every epoch's metrics (one query per kind, however many runs)."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            raise InvalidArgument("Name at least one run to compare (task ids, or sweep:trial ids)")
        if len(ids) > MAX_COMPARED_RUNS:
            raise InvalidArgument(f"At most {MAX_COMPARED_RUNS} runs can be compared at once (got {len(ids)})")
        found: dict[str, dict[str, Any]] = {}
        pairs = [tuple(i.split(RUN_SEPARATOR, 1)) for i in ids if RUN_SEPARATOR in i]
        task_ids = [i for i in ids if RUN_SEPARATOR not in i]
        with self._lock:
            for chunk in _chunks(pairs, 400):
                where = " OR ".join("(sweep_id = ? AND trial_id = ?)" for _ in chunk)
                for row in self._db.execute(f"SELECT * FROM trials WHERE {where}", [v for p in chunk for v in p]):
                    trial = _to_trial(row)
                    found[trial.run_id] = {
                        "id": trial.run_id,
                        "kind": "trial",
                        "sweep_id": trial.sweep_id,
                        "name": trial.trial_id,
                        "state": trial.state,
                        "params": trial.params,
                        "metrics": trial.metrics,
                    }
            for chunk in _chunks(task_ids, 400):
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT id, template, params, state, progress, result FROM tasks WHERE id IN ({marks})", chunk
                ):
                    result = json.loads(row["result"]) if row["result"] else {}
                    latest = json.loads(row["progress"]).get("metrics", {})
                    found[row["id"]] = {
                        "id": row["id"],
                        "kind": "task",
                        "name": row["template"],
                        "state": row["state"],
                        "params": json.loads(row["params"]),
                        "metrics": {**latest, **{k: v for k, v in result.items() if isinstance(v, (int, float))}},
                    }
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(
                    f"No task or trial {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            histories: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
            for chunk in _chunks(ids, 400):
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT task_id, metrics FROM task_metrics WHERE task_id IN ({marks}) ORDER BY task_id, epoch",
                    chunk,
                ):
                    histories[row["task_id"]].append(json.loads(row["metrics"]))
        return [{**found[i], "history": histories[i]} for i in ids]


def _check_state(state: str) -> None:
    if state not in TRIAL_STATES:
        raise InvalidArgument(f"Unknown trial state {state!r}; use one of {list(TRIAL_STATES)}")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _to_trial(row: sqlite3.Row) -> Trial:
    return Trial(
        sweep_id=row["sweep_id"],
        trial_id=row["trial_id"],
        segment=int(row["segment"]),
        params=json.loads(row["params"]),
        state=row["state"],
        epoch=row["epoch"],
        metrics=json.loads(row["metrics"]),
        checkpoint=row["checkpoint"],
        error=row["error"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )
