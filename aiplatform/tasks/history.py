"""The task history archive: each task's job logs and record, copied to the platform's storage.

Ray keeps a job's log on the head node and forgets it when the head is recreated (or the job is
deleted); the queue's SQLite lives in the state folder, which a lost machine may take with it.
So the scheduler copies each running task's job log here every ``task_log_archive_interval_s``
and, once the task has ended and its job stopped, the final log and the task's record (parameters,
curves, who created it, when, outcome, attempts): the task page, ``aip tasks logs`` and the
comparison page still answer for a task whose Ray job and head are long gone.

Keys, under the platform's storage::

    history/tasks/<task_id>/record.json            the task as the queue kept it, and its curves
    history/tasks/<task_id>/logs/attempt-<n>.log   the job log of attempt n (its last bytes)

Every attempt's log is kept (attempt 1 lost with a head, attempt 2 run after it). Every write
replaces a whole object, so copying again changes nothing; a log only grows, so a shorter copy
(a new head's Ray that lost the file) never replaces a longer one.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from aiplatform.errors import IntegrityError, NotFound, Unavailable
from aiplatform.storage import Storage
from aiplatform.tasks.queue import FINISHED_STATES, Task, TaskClient
from aiplatform.tasks.ray_jobs import JobState, RayJobs

logger = logging.getLogger(__name__)
HISTORY_PREFIX = "history/tasks"
RECORD_FORMAT = 1
RECOVERY_LOOKBACK = 50
"""Finished tasks a scheduler checks when it starts: one that ended while no scheduler followed
it gets its final copy then."""
READ_ATTEMPTS = 3
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ATTEMPT_LOG = re.compile(r"/attempt-(\d+)\.log$")


@dataclass(frozen=True)
class ArchivedLog:
    """One attempt's job log as kept in storage."""

    attempt: int
    text: str


class TaskHistory:
    """Each task's archived logs and record in ``storage``; reads answer None for a task with none.

    Args:
        storage: the platform's storage.
        max_log_bytes: the most of one attempt's log kept (its last bytes).
    """

    def __init__(self, storage: Storage, max_log_bytes: int) -> None:
        self.storage = storage
        self.max_log_bytes = max_log_bytes

    # -- writes ----------------------------------------------------------------------------
    def save_log(self, task_id: str, attempt: int, text: str) -> bool:
        """Keep attempt ``attempt``'s log (its last ``max_log_bytes``); False when the copy kept
        already is longer (a log only grows: a shorter one is a Ray that lost the file)."""
        key = self._log_key(task_id, attempt)
        data = text.encode("utf-8", errors="replace")
        if self.storage.exists(key) and len(data) < self.storage.info(key).size:
            return False
        if len(data) > self.max_log_bytes:
            dropped = len(data) - self.max_log_bytes
            data = f"[... the first {dropped} bytes of this log are not kept]\n".encode() + data[dropped:]
        self.storage.put_bytes(key, data)
        return True

    def save_record(self, task: Task, metrics_history: list[dict[str, Any]]) -> None:
        """Keep the task as the queue has it now, with every epoch's metrics."""
        record = {
            "format": RECORD_FORMAT,
            "task": task.to_dict(),
            "metrics_history": metrics_history,
            "archived_at": time.time(),
        }
        self.storage.put_bytes(self._record_key(task.id), json.dumps(record).encode())

    # -- reads -----------------------------------------------------------------------------
    def record(self, task_id: str) -> dict[str, Any] | None:
        """The task's archived record (``task``, ``metrics_history``, ``archived_at``)."""
        if not _TASK_ID.match(task_id):
            return None
        data = self._read(self._record_key(task_id))
        return None if data is None else json.loads(data)

    def task(self, task_id: str) -> Task | None:
        """The task as last archived."""
        record = self.record(task_id)
        if record is None:
            return None
        kept = record["task"]
        return Task(**{field.name: kept.get(field.name) for field in fields(Task)})

    def logs(self, task_id: str) -> list[ArchivedLog]:
        """Every archived attempt's log, first attempt first."""
        if not _TASK_ID.match(task_id):
            return []
        found = []
        for key in self.storage.list(f"{HISTORY_PREFIX}/{task_id}/logs"):
            match = _ATTEMPT_LOG.search(key)
            data = self._read(key) if match else None
            if match and data is not None:
                found.append(ArchivedLog(int(match.group(1)), data.decode("utf-8", errors="replace")))
        return sorted(found, key=lambda log: log.attempt)

    def log(self, task_id: str) -> str | None:
        """The task's archived log: one attempt's as it was; several, each after a line
        ``=== attempt N ===``, first attempt first. None when nothing is archived."""
        logs = self.logs(task_id)
        if not logs:
            return None
        if len(logs) == 1:
            return logs[0].text
        return "\n".join(f"=== attempt {log.attempt} ===\n{log.text.rstrip(chr(10))}" for log in logs) + "\n"

    def _read(self, key: str) -> bytes | None:
        # A write replaces the object, then its digest: a read in between sees them disagree.
        for attempt in range(READ_ATTEMPTS):
            try:
                return self.storage.get_bytes(key)
            except NotFound:
                return None
            except IntegrityError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                time.sleep(0.05)
        return None

    @staticmethod
    def _record_key(task_id: str) -> str:
        return f"{HISTORY_PREFIX}/{task_id}/record.json"

    @staticmethod
    def _log_key(task_id: str, attempt: int) -> str:
        return f"{HISTORY_PREFIX}/{task_id}/logs/attempt-{attempt}.log"


@dataclass
class _Attempt:
    """One task attempt's Ray job the copier follows until its final copy."""

    task_id: str
    attempt: int
    ray_job_id: str
    copied_at: float = float("-inf")
    copied_chars: int = -1
    recorded_update: float | None = None


class HistoryCopier:
    """The scheduler's part: copies what :class:`TaskHistory` keeps, each round.

    A running task's log and record are copied at most every ``interval_s``; once the task has
    left RUNNING (the job finished it, the scheduler did, it was cancelled or interrupted) and its
    job has stopped or is gone, the final log and record are copied once. Nothing here may break
    a scheduler round: a failed copy is logged and tried again on a later round.
    """

    def __init__(self, history: Callable[[], TaskHistory], queue: TaskClient, jobs: RayJobs, interval_s: float) -> None:
        self._history = history
        self.queue = queue
        self.jobs = jobs
        self.interval_s = interval_s
        self._following: dict[str, _Attempt] = {}
        self._recovered = False

    @property
    def history(self) -> TaskHistory:
        return self._history()

    def followed(self, running: list[Task]) -> set[str]:
        """The Ray jobs a round needs the states of: ``running``'s and those whose history is still
        to be copied (found once, on the first round, among tasks that ended unarchived)."""
        self._recover_once()
        return {task.ray_job_id for task in running if task.ray_job_id} | set(self._following)

    def _recover_once(self) -> None:
        if not self._recovered:
            self._guard("finding tasks that ended unarchived", self._recover)
            self._recovered = True

    def copy(self, running: list[Task], jobs: dict[str, JobState]) -> None:
        """One round: ``running`` are the tasks RUNNING at its start, ``jobs`` the states of the
        jobs ``followed`` named."""
        self._recover_once()
        now = time.monotonic()
        live = {task.ray_job_id: task for task in running if task.ray_job_id}
        for job_id, task in live.items():
            attempt = self._following.setdefault(job_id, _Attempt(task.id, max(task.attempts, 1), job_id))
            if now - attempt.copied_at >= self.interval_s:
                attempt.copied_at = now
                self._guard(f"copying the log of task {task.id}", lambda a=attempt, t=task: self._copy_running(a, t))
        for job_id, attempt in list(self._following.items()):
            job = jobs.get(job_id)
            if job_id in live:
                continue
            if job is not None and not job.terminal:  # finished its task, still printing its last lines
                if now - attempt.copied_at >= self.interval_s:
                    attempt.copied_at = now
                    self._guard(f"copying the log of task {attempt.task_id}", lambda a=attempt: self._copy_log(a))
                continue
            if self._guard(
                f"copying the history of task {attempt.task_id}", lambda a=attempt, j=job: self._copy_final(a, j)
            ):
                del self._following[job_id]

    def _copy_running(self, attempt: _Attempt, task: Task) -> None:
        self._copy_log(attempt)
        if task.updated_at != attempt.recorded_update:
            self.history.save_record(task, self.queue.metrics_history(task.id))
            attempt.recorded_update = task.updated_at

    def _copy_final(self, attempt: _Attempt, job: JobState | None) -> None:
        try:
            task = self.queue.get(attempt.task_id)
        except NotFound:  # no longer in the queue: nothing more to copy
            return
        if job is not None:
            self._copy_log(attempt)
        elif attempt.copied_chars < 0 and task.finished and task.ray_job_id == attempt.ray_job_id:
            tail = self.queue.log_tail(task.id)  # Ray lost the job before a copy: what the queue kept
            if tail:
                self.history.save_log(task.id, attempt.attempt, tail)
        self.history.save_record(task, self.queue.metrics_history(task.id))

    def _copy_log(self, attempt: _Attempt) -> None:
        try:
            text = self.jobs.logs(attempt.ray_job_id)
        except (NotFound, Unavailable):
            return
        if len(text) != attempt.copied_chars:
            self.history.save_log(attempt.task_id, attempt.attempt, text)
            attempt.copied_chars = len(text)

    def _recover(self) -> None:
        for task in self.queue.list(states=list(FINISHED_STATES), limit=RECOVERY_LOOKBACK):
            if not task.ray_job_id or task.ray_job_id in self._following:
                continue
            record = self.history.record(task.id)
            if (
                record is None
                or record["task"]["state"] != task.state
                or record["task"]["updated_at"] < task.updated_at
            ):
                self._following[task.ray_job_id] = _Attempt(task.id, max(task.attempts, 1), task.ray_job_id)

    @staticmethod
    def _guard(what: str, step: Callable[[], None]) -> bool:
        try:
            step()
        except Exception as exc:  # storage down, Ray's job API busy: the next round tries again
            logger.warning("task history: %s failed: %s", what, exc)
            return False
        return True
