"""The task queue's durable store: task records, their state machine, progress and metrics.

    CREATED -> QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
    CREATED | QUEUED -> CANCELLED          (cancelled before it ran)
    QUEUED -> FAILED                       (its Ray job could not be submitted)
    RUNNING -> QUEUED                      (interrupted, with retries left)

Every task (a sweep is a task too, its trials in ``trials.py``) belongs to one project; a queue
from before projects upgrades in place, every task into ``default``. Listings and counts take
the project they show; the scheduler's reads (``queued``, ``running``) span every project.
A task records who created it (``created_by``, the principal's name; null on tasks from before).

Every change is one SQLite transaction committed (``synchronous=FULL``) before the call returns.
Every write is safe to repeat: a create with a known idempotency key returns the first task, and a
transition into the state a task is already in is a no-op. That is what lets the actor that owns
the store be restarted and its calls retried without losing or duplicating anything.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from aiplatform.access.quotas import check_queued_room
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.sqlite import open_database, transaction
from aiplatform.tasks.queue.trials import TRIALS_SCHEMA, Trial, TrialRecords

CREATED, QUEUED, RUNNING = "CREATED", "QUEUED", "RUNNING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (CREATED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED_STATES = (SUCCEEDED, FAILED, CANCELLED)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    CREATED: (QUEUED, CANCELLED),
    QUEUED: (RUNNING, CANCELLED, FAILED),
    RUNNING: (SUCCEEDED, FAILED, CANCELLED, QUEUED),
}
REASON_INTERRUPTED = "interrupted"
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_LIST_LIMIT = 1000
MAX_LOG_TAIL_CHARS = 64 * 1024
DEFAULT_PROJECT = "default"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    template TEXT NOT NULL,
    params TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    model_name TEXT,
    source TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    max_retries INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    ray_job_id TEXT,
    submitted_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    error_reason TEXT,
    log_tail TEXT,
    created_at REAL NOT NULL,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks(created_at);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state, seq);
CREATE INDEX IF NOT EXISTS tasks_by_template ON tasks(template, seq);
CREATE TABLE IF NOT EXISTS task_metrics (
    task_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (task_id, epoch)
);
"""
_UPGRADE = """
CREATE INDEX IF NOT EXISTS tasks_by_project ON tasks(project, seq);
CREATE INDEX IF NOT EXISTS tasks_queue_by_project ON tasks(state, project, priority DESC, seq);
"""


def _add_project_column(db: sqlite3.Connection) -> None:
    """Add ``project`` to a queue from before projects, in place: every task lands in ``default``."""
    if "project" not in {row[1] for row in db.execute("PRAGMA table_info(tasks)")}:
        with transaction(db):
            db.execute(f"ALTER TABLE tasks ADD COLUMN project TEXT NOT NULL DEFAULT '{DEFAULT_PROJECT}'")
    if "created_by" not in {row[1] for row in db.execute("PRAGMA table_info(tasks)")}:
        with transaction(db):  # tasks from before it: null, shown as unknown
            db.execute("ALTER TABLE tasks ADD COLUMN created_by TEXT")


@dataclass(frozen=True)
class Task:
    """One training task as stored (``progress``: latest epoch, epochs and metrics)."""

    id: str
    template: str
    params: dict[str, Any]
    priority: int
    state: str
    model_name: str | None
    source: str
    idempotency_key: str | None
    max_retries: int
    attempts: int
    ray_job_id: str | None
    submitted_at: float | None
    cancel_requested: bool
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    error_reason: str | None
    created_at: float
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    project: str = DEFAULT_PROJECT
    created_by: str | None = None
    """The principal that created it (a user, ``platform``); None: from before it was recorded."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidArgument(f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY} (got {priority!r})")
    return priority


def validate_state(state: str) -> str:
    if state not in STATES:
        raise InvalidArgument(f"Unknown task state {state!r}; use one of {list(STATES)}")
    return state


class TaskAPI(Protocol):
    """What callers may ask of the task queue: the store itself, or its actor through a client."""

    def create(
        self, template: str, params: dict[str, Any], *, idempotency_key: str | None = None, **options: Any
    ) -> Task: ...

    def start(self, task_id: str, queued_limit: int | None = None) -> Task: ...

    def claim(self, task_id: str, ray_job_id: str) -> Task: ...

    def mark_submitted(self, task_id: str) -> Task: ...

    def finish(self, task_id: str, state: str, **fields: Any) -> Task: ...

    def cancel(self, task_id: str) -> Task: ...

    def interrupt(self, task_id: str, error: str) -> Task: ...

    def report_progress(self, task_id: str, metrics: dict[str, Any]) -> Task: ...

    def heartbeat(self, task_id: str) -> Task: ...

    def set_created_by(self, task_id: str, by: str) -> Task: ...

    def set_log_tail(self, task_id: str, log_tail: str) -> Task: ...

    def get(self, task_id: str) -> Task: ...

    def log_tail(self, task_id: str) -> str | None: ...

    def list(self, *, states: Iterable[str] | None = None, **filters: Any) -> list[Task]: ...

    def queued(self, limit: int = 100) -> list[Task]: ...

    def running(self) -> list[Task]: ...

    def counts(self, project: str | None = None) -> dict[str, int]: ...

    def metrics_history(self, task_id: str) -> list[dict[str, Any]]: ...

    def requeue(self, task_id: str, params: dict[str, Any] | None = None, queued_limit: int | None = None) -> Task: ...

    # A sweep's trials (``trials.py``).
    def record_trial(
        self, sweep_id: str, trial_id: str, *, params: dict[str, Any], segment: int, state: str = ...
    ) -> Trial: ...

    def report_trial(
        self, sweep_id: str, trial_id: str, metrics: dict[str, Any], checkpoint: str | None = None
    ) -> None: ...

    def finish_trial(self, sweep_id: str, trial_id: str, state: str, error: str | None = None) -> Trial: ...

    def pause_trials(self, sweep_id: str) -> int: ...

    def trial(self, sweep_id: str, trial_id: str) -> Trial: ...

    def trials(self, sweep_id: str) -> list[Trial]: ...

    def compare_runs(self, run_ids: list[str]) -> list[dict[str, Any]]: ...


class TaskStore(TrialRecords):
    """SQLite-backed task queue; thread-safe; every write idempotent (see the module docstring)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.RLock()
        self._db = open_database(self.db_path, _SCHEMA + TRIALS_SCHEMA)
        _add_project_column(self._db)
        self._db.executescript(_UPGRADE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- creation ---------------------------------------------------------------------------
    def create(
        self,
        template: str,
        params: dict[str, Any],
        *,
        priority: int = 0,
        model_name: str | None = None,
        idempotency_key: str | None = None,
        max_retries: int = 0,
        start: bool = False,
        source: str = "api",
        running_job_id: str | None = None,
        running: bool = False,
        project: str = DEFAULT_PROJECT,
        created_by: str | None = None,
        queued_limit: int | None = None,
    ) -> Task:
        """Record a new task (already validated by the task manager).

        ``start`` queues it at once, refused (``Conflict``) when its project already has
        ``queued_limit`` QUEUED tasks (its quota, checked under the lock that orders every
        write); ``running`` records a run that started itself (``ray job submit -- python -m
        jobs.train ...``) with its job id. A known ``idempotency_key`` returns the task it
        created first; the same key with other content is a :class:`Conflict`.
        """
        validate_priority(priority)
        if max_retries < 0:
            raise InvalidArgument(f"max_retries must be >= 0 (got {max_retries})")
        now = time.time()
        state = RUNNING if running else (QUEUED if start else CREATED)
        with self._lock:
            if idempotency_key is not None:
                existing = self._by_key(idempotency_key)
                if existing is not None:
                    if existing.project != project:
                        raise Conflict(f"Idempotency key {idempotency_key!r} was already used; choose another")
                    if existing.template != template or existing.params != params:
                        raise Conflict(
                            f"Idempotency key {idempotency_key!r} was used for task {existing.id} with a "
                            "different template or parameters"
                        )
                    return existing
            if state == QUEUED:
                check_queued_room(project, self._queued_in(project), queued_limit)
            task_id = uuid.uuid4().hex[:16]
            with transaction(self._db) as db:
                db.execute(
                    "INSERT INTO tasks(id, template, params, priority, state, model_name, source,"
                    " idempotency_key, max_retries, attempts, ray_job_id, submitted_at, created_at,"
                    " queued_at, started_at, updated_at, project, created_by)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        task_id,
                        template,
                        json.dumps(params),
                        priority,
                        state,
                        model_name,
                        source,
                        idempotency_key,
                        max_retries,
                        1 if running else 0,
                        running_job_id,
                        now if running else None,
                        now,
                        now if state != CREATED else None,
                        now if running else None,
                        now,
                        project,
                        created_by,
                    ),
                )
            return self.get(task_id)

    # -- transitions ------------------------------------------------------------------------
    def start(self, task_id: str, queued_limit: int | None = None) -> Task:
        """CREATED -> QUEUED (a queued task stays queued); refused when its project already has
        ``queued_limit`` QUEUED tasks."""
        with self._lock:
            task = self.get(task_id)
            if task.state == QUEUED:
                return task
            if task.state != CREATED:
                raise Conflict(f"Task {task_id} is {task.state}; only a CREATED task can be started")
            check_queued_room(task.project, self._queued_in(task.project), queued_limit)
            return self._update(task_id, state=QUEUED, queued_at=time.time())

    def _queued_in(self, project: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE project = ? AND state = ?", (project, QUEUED)
        ).fetchone()
        return int(row[0])

    def claim(self, task_id: str, ray_job_id: str) -> Task:
        """QUEUED -> RUNNING under ``ray_job_id`` (recorded before the job is submitted)."""
        with self._lock:
            task = self.get(task_id)
            if task.state == RUNNING and task.ray_job_id == ray_job_id:
                return task
            self._check_transition(task, RUNNING)
            return self._update(
                task_id,
                state=RUNNING,
                ray_job_id=ray_job_id,
                attempts=task.attempts + 1,
                started_at=time.time(),
                submitted_at=None,
                error=None,
                error_reason=None,
            )

    def mark_submitted(self, task_id: str) -> Task:
        with self._lock:
            task = self.get(task_id)
            return task if task.submitted_at else self._update(task_id, submitted_at=time.time())

    def finish(
        self,
        task_id: str,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        reason: str | None = None,
        log_tail: str | None = None,
    ) -> Task:
        """RUNNING (or, for FAILED, QUEUED) -> a finished state. A task whose cancel was asked for
        ends CANCELLED however its job ended, unless it succeeded first."""
        if state not in FINISHED_STATES:
            raise InvalidArgument(f"{state!r} is not a finished state; use one of {list(FINISHED_STATES)}")
        with self._lock:
            task = self.get(task_id)
            if task.cancel_requested and state == FAILED:
                state, reason = CANCELLED, "cancelled"
            if task.state == state:
                return task
            self._check_transition(task, state)
            fields: dict[str, Any] = {"state": state, "finished_at": time.time()}
            if result is not None:
                fields["result"] = json.dumps(result)
            if error is not None or reason is not None:
                fields["error"], fields["error_reason"] = error, reason
            if log_tail is not None:
                fields["log_tail"] = log_tail[-MAX_LOG_TAIL_CHARS:]
            return self._update(task_id, **fields)

    def cancel(self, task_id: str) -> Task:
        """A task that has not run is CANCELLED at once; a RUNNING one is marked for cancellation
        (the task manager stops its job and then finishes it)."""
        with self._lock:
            task = self.get(task_id)
            if task.state in (CREATED, QUEUED):
                return self._update(task_id, state=CANCELLED, finished_at=time.time(), error_reason="cancelled")
            if task.state == RUNNING:
                return task if task.cancel_requested else self._update(task_id, cancel_requested=1)
            if task.state == CANCELLED:
                return task
            raise Conflict(f"Task {task_id} already {task.state}; there is nothing to cancel")

    def interrupt(self, task_id: str, error: str) -> Task:
        """The task's run is gone (its job vanished, the platform restarted): queued again while it
        has retries left, otherwise FAILED with reason ``interrupted``."""
        with self._lock:
            task = self.get(task_id)
            if task.state != RUNNING:
                return task
            if task.cancel_requested:
                return self.finish(task_id, CANCELLED, reason="cancelled", error=error)
            if task.attempts <= task.max_retries:
                return self._update(
                    task_id,
                    state=QUEUED,
                    queued_at=time.time(),
                    ray_job_id=None,
                    submitted_at=None,
                    error=error,
                    error_reason=REASON_INTERRUPTED,
                )
            return self.finish(task_id, FAILED, error=error, reason=REASON_INTERRUPTED)

    def report_progress(self, task_id: str, metrics: dict[str, Any]) -> Task:
        """Record one epoch's metrics (a resumed run re-reporting an epoch replaces it)."""
        epoch = metrics.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise InvalidArgument(f"Progress metrics need an integer 'epoch' (got {epoch!r})")
        with self._lock:
            task = self.get(task_id)
            if task.state != RUNNING:
                return task  # a late report after the task ended changes nothing
            clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
            with transaction(self._db) as db:
                db.execute(
                    "INSERT INTO task_metrics(task_id, epoch, metrics, at) VALUES (?,?,?,?)"
                    " ON CONFLICT(task_id, epoch) DO UPDATE SET metrics = excluded.metrics, at = excluded.at",
                    (task_id, epoch, json.dumps(clean), time.time()),
                )
            progress = {"epoch": epoch, "epochs": clean.get("epochs"), "metrics": clean}
            return self._update(task_id, progress=json.dumps(progress))

    def requeue(self, task_id: str, params: dict[str, Any] | None = None, queued_limit: int | None = None) -> Task:
        """A task that ended (stopped, failed, or succeeded and is to be extended) QUEUED again
        under the same id, with new parameters when given: how a sweep resumes and grows
        (refused when its project already has ``queued_limit`` QUEUED tasks)."""
        with self._lock:
            task = self.get(task_id)
            if task.state == QUEUED and (params is None or params == task.params):
                return task
            if not task.finished:
                raise Conflict(f"Task {task_id} is {task.state}; only a task that has ended can be queued again")
            check_queued_room(task.project, self._queued_in(task.project), queued_limit)
            fields: dict[str, Any] = {
                "state": QUEUED,
                "queued_at": time.time(),
                "finished_at": None,
                "cancel_requested": 0,
                "ray_job_id": None,
                "submitted_at": None,
                "error": None,
                "error_reason": None,
                "result": None,
            }
            if params is not None:
                fields["params"] = json.dumps(params)
            return self._update(task_id, **fields)

    def heartbeat(self, task_id: str) -> Task:
        """A run that no Ray job follows (a plain local ``python -m jobs.train``) says it lives."""
        with self._lock:
            return self._update(task_id)

    def set_created_by(self, task_id: str, by: str) -> Task:
        """Record who created the task, once: a task that names its creator keeps it (a retried
        create with the same idempotency key does not change hands)."""
        with self._lock:
            task = self.get(task_id)
            return task if task.created_by is not None else self._update(task_id, created_by=by)

    def set_log_tail(self, task_id: str, log_tail: str) -> Task:
        with self._lock:
            return self._update(task_id, log_tail=log_tail[-MAX_LOG_TAIL_CHARS:])

    # -- reads ------------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (str(task_id),)).fetchone()
        if row is None:
            raise NotFound(f"Task {task_id!r} not found")
        return _to_task(row)

    def log_tail(self, task_id: str) -> str | None:
        self.get(task_id)
        with self._lock:
            row = self._db.execute("SELECT log_tail FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row[0]

    def list(
        self,
        *,
        states: Iterable[str] | None = None,
        template: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
        before: str | None = None,
        project: str | None = None,
    ) -> list[Task]:
        """Tasks (of ``project``; None: of every project), newest first, filtered by state(s),
        template and creation time; ``before`` (the
        id of a page's last task) continues after it, as fast on the thousandth page as on the
        first (an offset reads every row it skips)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT} (got {limit})")
        if offset < 0:
            raise InvalidArgument(f"offset must be >= 0 (got {offset})")
        clauses, args = [], []  # type: ignore[var-annotated]
        if before is not None:
            with self._lock:
                row = self._db.execute("SELECT seq FROM tasks WHERE id = ?", (before,)).fetchone()
            if row is None:
                raise InvalidArgument(f"before={before[:40]!r} is not a task id (use a page's next_before)")
            clauses.append("seq < ?")
            args.append(row[0])
        state_list = sorted({validate_state(s) for s in states or ()})
        for clause, value in (
            ("project = ?", project),
            ("template = ?", template),
            ("created_at >= ?", since),
            ("created_at < ?", until),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        # One indexed, limited branch per state, merged: with ``state IN (...)`` SQLite sorted
        # every matching task (all finished ones, at 100k tasks) to take a page.
        branches = [(["state = ?", *clauses], [state, *args]) for state in state_list] or [(clauses, args)]
        sql = " UNION ALL ".join(
            f"SELECT * FROM (SELECT * FROM tasks {'WHERE ' + ' AND '.join(c) if c else ''} ORDER BY seq DESC LIMIT ?)"
            for c, _ in branches
        )
        params = [p for _, a in branches for p in (*a, limit + offset)]
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM ({sql}) ORDER BY seq DESC LIMIT ? OFFSET ?", (*params, limit, offset)
            ).fetchall()
        return [_to_task(row) for row in rows]

    def queued(self, limit: int = 100) -> list[Task]:
        """QUEUED tasks in the order they should start (highest priority, then oldest), the first
        ``limit`` of each project: the scheduler's view, in which one project's long queue of
        urgent tasks cannot hide another project's first tasks from the fair share."""
        with self._lock:
            projects = [r[0] for r in self._db.execute("SELECT DISTINCT project FROM tasks WHERE state = ?", (QUEUED,))]
            rows = [
                row
                for project in projects
                for row in self._db.execute(
                    "SELECT * FROM tasks WHERE state = ? AND project = ? ORDER BY priority DESC, seq LIMIT ?",
                    (QUEUED, project, limit),
                )
            ]
        rows.sort(key=lambda row: (-row["priority"], row["seq"]))
        return [_to_task(row) for row in rows]

    def running(self) -> list[Task]:
        return self.list(states=[RUNNING], limit=MAX_LIST_LIMIT)

    def counts(self, project: str | None = None) -> dict[str, int]:
        """Tasks per state (of ``project``; None: of every project), plus ``waiting`` (QUEUED),
        ``running`` and ``finished``."""
        where, args = ("WHERE project = ?", (project,)) if project is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT state, COUNT(*) FROM tasks {where} GROUP BY state", args).fetchall()
        per_state = dict.fromkeys(STATES, 0)
        per_state.update({row[0]: int(row[1]) for row in rows})
        return {
            **per_state,
            "waiting": per_state[QUEUED],
            "running": per_state[RUNNING],
            "finished": sum(per_state[s] for s in FINISHED_STATES),
            "total": sum(per_state.values()),
        }

    def metrics_history(self, task_id: str) -> list[dict[str, Any]]:
        """Every reported epoch's metrics, in epoch order."""
        self.get(task_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT metrics FROM task_metrics WHERE task_id = ? ORDER BY epoch", (task_id,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    # -- helpers ----------------------------------------------------------------------------
    def _by_key(self, key: str) -> Task | None:
        row = self._db.execute("SELECT * FROM tasks WHERE idempotency_key = ?", (key,)).fetchone()
        return None if row is None else _to_task(row)

    @staticmethod
    def _check_transition(task: Task, state: str) -> None:
        if state not in TRANSITIONS.get(task.state, ()):
            raise Conflict(f"Task {task.id} is {task.state}; it cannot become {state}")

    def _update(self, task_id: str, **fields: Any) -> Task:
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with transaction(self._db) as db:
            db.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", (*fields.values(), task_id))
        return self.get(task_id)


def _to_task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        template=row["template"],
        params=json.loads(row["params"]),
        priority=int(row["priority"]),
        state=row["state"],
        model_name=row["model_name"],
        source=row["source"],
        idempotency_key=row["idempotency_key"],
        max_retries=int(row["max_retries"]),
        attempts=int(row["attempts"]),
        ray_job_id=row["ray_job_id"],
        submitted_at=row["submitted_at"],
        cancel_requested=bool(row["cancel_requested"]),
        progress=json.loads(row["progress"]),
        result=json.loads(row["result"]) if row["result"] else None,
        error=row["error"],
        error_reason=row["error_reason"],
        created_at=float(row["created_at"]),
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=float(row["updated_at"]),
        project=row["project"],
        created_by=row["created_by"],
    )
