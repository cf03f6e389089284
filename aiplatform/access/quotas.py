"""Projects' quotas and weights, and the scheduler's record of every task it admitted, in the
state folder's ``access.db`` (tables ``project_quotas`` and ``quota_admissions``, beside the
projects they name).

A project with no quota set is unlimited, with weight 1. The scheduler reads the quotas every
round and writes one admission per task it starts (the task, its project, when, what it holds,
what its project held before it and the quota checked), then the time it saw the task end:
that record is what fair share measures CPU-seconds from (``aiplatform.tasks.fair_share``) and
what ``bench/fair_share.py`` checks "never over quota" against.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiplatform.access.roles import DEFAULT_PROJECT
from aiplatform.access.store import ACCESS_DB
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.sqlite import conditions, open_database, transaction

ADMISSIONS_KEPT_S = 7 * 24 * 3600.0
"""Ended admissions older than this are dropped (fair share's window is far shorter)."""
MAX_ADMISSIONS_PAGE = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS project_quotas (
    project TEXT PRIMARY KEY,
    cpus REAL,
    gpus REAL,
    queued INTEGER,
    replicas INTEGER,
    weight REAL NOT NULL DEFAULT 1,
    set_at REAL NOT NULL,
    set_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quota_admissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    project TEXT NOT NULL,
    admitted_at REAL NOT NULL,
    cpus REAL NOT NULL,
    gpus REAL NOT NULL,
    cpus_in_use REAL NOT NULL,
    gpus_in_use REAL NOT NULL,
    quota_cpus REAL,
    quota_gpus REAL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS quota_admissions_open ON quota_admissions(ended_at);
CREATE INDEX IF NOT EXISTS quota_admissions_at ON quota_admissions(admitted_at);
"""


@dataclass(frozen=True)
class Quota:
    """What a project's running tasks may hold at once and how many may wait; None: unlimited."""

    project: str
    cpus: float | None = None
    gpus: float | None = None
    queued: int | None = None
    """Tasks of the project QUEUED at once; creating or starting one more is refused."""
    replicas: int | None = None
    """Serving replicas its models may run on at once: a project with one set has model servers of
    its own, at most this many (``aiplatform.serving.pools``); unset, it shares the platform's."""
    weight: float = 1.0
    """Its share of a contended cluster against other projects' weights."""

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus", "queued", "replicas"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidArgument(f"Quota {name} must be >= 0 (or unset for unlimited), got {value}")
        if not self.weight > 0:
            raise InvalidArgument(f"Quota weight must be > 0, got {self.weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Admission:
    """One task the scheduler started: what it holds, what its project held before it, the quota
    it was checked against, and when the scheduler saw it end (None: still running)."""

    task_id: str
    project: str
    admitted_at: float
    cpus: float
    gpus: float
    cpus_in_use: float
    gpus_in_use: float
    quota_cpus: float | None
    quota_gpus: float | None
    ended_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_not_below(quota: Quota, cpus: float, gpus: float, running: list[str]) -> None:
    """``Conflict`` when ``quota`` is below what the project's ``running`` tasks hold now: a quota
    never stops a running task, so one set below them could not hold."""
    over = [
        f"{held:g} {unit}"
        for limit, held, unit in ((quota.cpus, cpus, "CPUs"), (quota.gpus, gpus, "GPUs"))
        if limit is not None and held > limit + 1e-9
    ]
    if over:
        shown = ", ".join(running[:10]) + (f" and {len(running) - 10} more" if len(running) > 10 else "")
        raise Conflict(
            f"Project {quota.project!r} runs tasks holding {' and '.join(over)} now ({shown}): a quota of "
            f"{quota.cpus if quota.cpus is not None else 'unlimited'} CPUs and "
            f"{quota.gpus if quota.gpus is not None else 'unlimited'} GPUs is below that; "
            "cancel them or wait for them to finish, then set it"
        )


def check_queued_room(project: str, queued: int, limit: int | None) -> None:
    """``Conflict`` naming the quota when ``project`` already has ``queued`` QUEUED tasks and its
    queued-task quota is ``limit`` (None: unlimited)."""
    if limit is not None and queued >= limit:
        raise Conflict(
            f"Project {project!r} has {queued} of {limit} queued tasks (its queued-task quota): wait for some "
            "to start, cancel some, or ask a platform admin to raise it (aip quotas set)"
        )


class QuotaStore:
    """Quotas and admissions in ``access.db``; safe to open from several processes (WAL)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.RLock()
        self._db = open_database(self.db_path, _SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> QuotaStore:
        return cls(state_dir / ACCESS_DB)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- quotas ----------------------------------------------------------------------------
    def get(self, project: str) -> Quota:
        """The project's quota (unlimited, weight 1, when none is set); ``NotFound`` for an
        unknown project."""
        with self._lock:
            self._check_project(project)
            row = self._db.execute("SELECT * FROM project_quotas WHERE project = ?", (project,)).fetchone()
        return _to_quota(row) if row is not None else Quota(project)

    def quotas(self) -> dict[str, Quota]:
        """Every quota set, by project (the scheduler reads this each round)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM project_quotas").fetchall()
        return {row["project"]: _to_quota(row) for row in rows}

    def replica_quotas(self) -> dict[str, int]:
        """The projects with a serving-replica quota set, and its value (the gateways route
        their models to model servers of their own: ``aiplatform.serving.pools``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project, replicas FROM project_quotas WHERE replicas IS NOT NULL"
            ).fetchall()
        return {row["project"]: int(row["replicas"]) for row in rows}

    def set(
        self,
        quota: Quota,
        *,
        by: str,
        cpus_in_use: float = 0.0,
        gpus_in_use: float = 0.0,
        running: list[str] | None = None,
    ) -> Quota:
        """Replace the project's quota (a field left None: unlimited). Refused with ``Conflict``
        when it is below what the project's running tasks hold (see :func:`check_not_below`)."""
        check_not_below(quota, cpus_in_use, gpus_in_use, running or [])
        with self._lock, transaction(self._db):
            self._check_project(quota.project)
            self._db.execute(
                "INSERT OR REPLACE INTO project_quotas VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (quota.project, quota.cpus, quota.gpus, quota.queued, quota.replicas, quota.weight, time.time(), by),
            )
        return quota

    def _check_project(self, project: str) -> None:
        try:
            known = self._db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is not None
        except sqlite3.OperationalError:  # the access store has not made its tables yet: default only
            known = project == DEFAULT_PROJECT
        if not known:
            raise NotFound(f"Project {str(project)[:80]!r} not found")

    # -- admissions --------------------------------------------------------------------------
    def record_admission(self, admission: Admission) -> None:
        with self._lock, transaction(self._db):
            self._db.execute(
                "INSERT INTO quota_admissions (task_id, project, admitted_at, cpus, gpus, cpus_in_use, gpus_in_use,"
                " quota_cpus, quota_gpus, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    admission.task_id,
                    admission.project,
                    admission.admitted_at,
                    admission.cpus,
                    admission.gpus,
                    admission.cpus_in_use,
                    admission.gpus_in_use,
                    admission.quota_cpus,
                    admission.quota_gpus,
                    admission.ended_at,
                ),
            )

    def end_admissions(self, running: set[str], at: float) -> int:
        """Mark ended every open admission whose task is not in ``running`` (the scheduler's view
        each round); drop those ended long ago. Returns how many ended now."""
        with self._lock:
            open_ = self._db.execute("SELECT seq, task_id FROM quota_admissions WHERE ended_at IS NULL").fetchall()
            ended = [row["seq"] for row in open_ if row["task_id"] not in running]
            if not ended:
                return 0
            with transaction(self._db):
                self._db.executemany("UPDATE quota_admissions SET ended_at = ? WHERE seq = ?", [(at, s) for s in ended])
                self._db.execute("DELETE FROM quota_admissions WHERE ended_at < ?", (at - ADMISSIONS_KEPT_S,))
        return len(ended)

    def admissions(self, *, since: float | None = None, project: str | None = None) -> list[Admission]:
        """Admissions still open or ended after ``since``, oldest first (of ``project``, or all)."""
        clauses, params = conditions([("project", "=", project)])
        if since is not None:
            clauses.append("(ended_at IS NULL OR ended_at >= ?)")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM quota_admissions {where} ORDER BY seq LIMIT {MAX_ADMISSIONS_PAGE}", params
            ).fetchall()
        return [Admission(*tuple(row)[1:]) for row in rows]  # the columns after seq, in field order


def _to_quota(row: sqlite3.Row) -> Quota:
    return Quota(row["project"], row["cpus"], row["gpus"], row["queued"], row["replicas"], row["weight"])
