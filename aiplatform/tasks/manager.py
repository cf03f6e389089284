"""The task manager: creates tasks from templates, runs queued ones as Ray jobs, follows them.

``reconcile()`` is the scheduler's whole job and is safe to run at any time, from any process,
any number of times: it compares the queue with the cluster's jobs and moves each task to where
the truth says it is. That is what makes restarts harmless: a task whose job the cluster no longer
knows (the platform restarted, the head was replaced) is re-queued while it has retries left and
otherwise marked FAILED with reason ``interrupted``; none stays RUNNING forever.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from typing import Any, Callable, Optional

import ray

from aiplatform.errors import AIPError, NotFound, Unavailable
from aiplatform.queue import CANCELLED, FAILED, QueueClient, Task
from aiplatform.registry.store import validate_model_name
from aiplatform.runtime import ray_env_passthrough
from aiplatform.settings import Settings
from aiplatform.tasks.ray_jobs import JobState, RayJobs
from aiplatform.training import get_template

logger = logging.getLogger(__name__)
STOP_WAIT_S = 20.0
UNSUBMITTED_GRACE_S = 30.0
LOG_TAIL_LINES = 20


def job_submission_id(task: Task) -> str:
    """The Ray job id of the task's next attempt (stable, so a retried submit is recognised)."""
    return f"aip-task-{task.id}-{task.attempts + 1}"


class TaskManager:
    """Task creation, start, cancel and logs for the API, and ``reconcile()`` for the scheduler."""

    def __init__(self, queue: QueueClient, jobs: RayJobs, settings: Settings,
                 wake_scheduler: Optional[Callable[[], None]] = None) -> None:
        self.queue = queue
        self.jobs = jobs
        self.settings = settings
        self.wake_scheduler = wake_scheduler or (lambda: None)

    # -- API -------------------------------------------------------------------------------
    def create(self, template: str, params: dict[str, Any], **options: Any) -> Task:
        """A task of ``template`` with validated parameters (defaults filled in); see
        :meth:`creation` for the options."""
        task = self.queue.create(**self.creation(template, params, **options))
        if task.state == "QUEUED":
            self.wake_scheduler()
        return task

    async def create_async(self, template: str, params: dict[str, Any], **options: Any) -> Task:
        """:meth:`create` from an event loop."""
        task = await self.queue.create_async(**self.creation(template, params, **options))
        if task.state == "QUEUED":
            self.wake_scheduler()
        return task

    def creation(self, template: str, params: dict[str, Any], *, priority: int = 0,
                 model_name: Optional[str] = None, idempotency_key: Optional[str] = None,
                 max_retries: Optional[int] = None, start: bool = False) -> dict[str, Any]:
        """Validate a new task (template, parameters, model name) into the queue's arguments."""
        parsed = get_template(template).parse_params(params)
        if model_name is not None:
            validate_model_name(model_name)
        return {
            "template": template, "params": parsed.model_dump(mode="json"), "priority": priority,
            "model_name": model_name, "idempotency_key": idempotency_key, "start": start,
            "max_retries": self.settings.task_max_retries if max_retries is None else max_retries,
        }

    def start(self, task_id: str) -> Task:
        task = self.queue.start(task_id)
        self.wake_scheduler()
        return task

    def cancel(self, task_id: str) -> Task:
        """A task that has not run is cancelled at once; a running one has its Ray job stopped and
        is CANCELLED when the job has ended (waited for up to ``STOP_WAIT_S``)."""
        task = self.queue.cancel(task_id)
        if task.state != "RUNNING" or not task.ray_job_id:
            return task
        self.jobs.stop(task.ray_job_id)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            job = self.jobs.state(task.ray_job_id)
            if job is None or job.terminal:
                return self.queue.finish(task_id, CANCELLED, reason="cancelled",
                                         error="cancelled by request", log_tail=self._log_tail(task))
            time.sleep(0.25)
        return self.queue.get(task_id)  # the scheduler finishes it when the job has stopped

    def logs(self, task_id: str) -> str:
        """The job's log; after the job is gone, the tail kept when the task ended."""
        task = self.queue.get(task_id)
        if task.ray_job_id:
            try:
                return self.jobs.logs(task.ray_job_id)
            except (NotFound, Unavailable):
                pass
        tail = self.queue.log_tail(task_id)
        if tail is None:
            raise NotFound(f"Task {task_id} has no logs yet (state {task.state})")
        return tail

    # -- scheduler -------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Follow every RUNNING task to its job's end, then start queued tasks while capacity allows."""
        try:
            jobs = self.jobs.states()
        except Unavailable as exc:
            logger.warning("not following tasks this round: %s", exc.message)
            return
        for task in self.queue.running():
            try:
                self._follow(task, jobs.get(task.ray_job_id or ""))
            except AIPError as exc:
                logger.warning("task %s: %s", task.id, exc.message)
        self._start_queued()

    def _follow(self, task: Task, job: Optional[JobState]) -> None:
        if task.ray_job_id is None:  # a run no Ray job follows: only its heartbeat says it lives
            if time.time() - task.updated_at > self.settings.task_heartbeat_timeout_s:
                self.queue.interrupt(task.id, "the run stopped reporting (its process is gone)")
            return
        if job is None:
            if task.source == "api" and task.submitted_at is None:
                if time.time() - (task.started_at or 0) < UNSUBMITTED_GRACE_S:
                    return  # being submitted right now by another process
                self._submit(task)  # claimed, then the submitter died before submitting
                return
            self.queue.interrupt(task.id, f"Ray job {task.ray_job_id} no longer exists (the cluster restarted)")
            return
        if not job.terminal:
            if task.cancel_requested:
                self.jobs.stop(task.ray_job_id)
            return
        tail = self._log_tail(task)
        if job.status == "SUCCEEDED":
            # The job finishes its task itself before it exits; still RUNNING means it did not.
            self.queue.finish(task.id, FAILED, reason="no_result", log_tail=tail,
                              error="The job ended without recording a result; see the logs")
        elif job.status == "STOPPED":
            self.queue.finish(task.id, CANCELLED if task.cancel_requested else FAILED, reason="stopped",
                              error=job.message or "the Ray job was stopped", log_tail=tail)
        else:
            self.queue.finish(task.id, FAILED, reason="job_failed", log_tail=tail,
                              error=_failure_message(job, tail))

    def _start_queued(self) -> None:
        running = len(self.queue.running())
        free_cpus = float(ray.available_resources().get("CPU", 0.0))
        for task in self.queue.queued(limit=max(1, self.settings.task_max_running)):
            if running >= self.settings.task_max_running:
                return
            needed = self.cpus_needed(task)
            if needed > free_cpus + 1e-9:
                return  # strict priority order: a smaller task behind it does not jump the queue
            self.queue.claim(task.id, job_submission_id(task))
            self._submit(self.queue.get(task.id))
            running += 1
            free_cpus -= needed

    def _submit(self, task: Task) -> None:
        assert task.ray_job_id is not None
        entrypoint = f"{shlex.quote(sys.executable)} -m jobs.train --task-id {shlex.quote(task.id)}"
        try:
            self.jobs.submit(
                task.ray_job_id, entrypoint,
                env_vars={**ray_env_passthrough(), **self.settings.to_env()},
                metadata={"aip_task_id": task.id, "template": task.template},
            )
        except Unavailable as exc:
            self.queue.finish(task.id, FAILED, reason="submit_failed", error=exc.message)
            return
        self.queue.mark_submitted(task.id)

    def cpus_needed(self, task: Task) -> float:
        """CPUs the task's Ray Train workers reserve."""
        return int(task.params.get("workers", 1)) * self.settings.train_worker_cpus

    def _log_tail(self, task: Task) -> Optional[str]:
        if not task.ray_job_id:
            return None
        try:
            return self.jobs.logs(task.ray_job_id)
        except (NotFound, Unavailable):
            return None


def _failure_message(job: JobState, logs: Optional[str]) -> str:
    lines = [line for line in (logs or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else "\n".join(lines[-LOG_TAIL_LINES:])
    return f"{job.message or 'The Ray job failed'}\n{detail}".strip()
