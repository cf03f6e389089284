"""How a running training job reports to its task: per-epoch progress, heartbeat, outcome."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import ray
import ray.train

from aiplatform.tasks.queue import FAILED, RUNNING, SUCCEEDED, Task, TaskClient

logger = logging.getLogger(__name__)
HEARTBEAT_INTERVAL_S = 30.0
SELF_STARTED_SOURCE = "ray-job"
LOCAL_SOURCE = "local"


def current_submission_id() -> str | None:
    """The Ray job submission id when this driver was started by ``ray job submit`` (Ray passes
    it in the job's config), else None."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except ValueError:
        return None


def record_self_started(
    queue: TaskClient,
    template: str,
    params: dict[str, Any],
    model_name: str | None,
    *,
    platform_key: str | None,
    project: str | None = None,
) -> Task:
    """A run started directly (``ray job submit -- python -m jobs.train ...``) records itself as a
    RUNNING task under its job id, which the scheduler then follows like any other. It lands in
    the project of the platform key it carries, which the queue actor authenticates on the head
    (``aiplatform.tasks.queue.submitters``); without one while authentication is on it is refused."""
    submission_id = current_submission_id()
    return queue.create_self_started(
        template,
        params,
        platform_key=platform_key,
        project=project,
        model_name=model_name,
        running_job_id=submission_id,
        source=SELF_STARTED_SOURCE if submission_id else LOCAL_SOURCE,
        idempotency_key=f"ray-job:{submission_id}" if submission_id else None,
    )


class ProgressCallback(ray.train.UserCallback):
    """Runs in the Ray Train controller: sends each epoch's metrics to the task."""

    def __init__(self, queue_handle: ray.actor.ActorHandle, task_id: str) -> None:
        self.queue_handle = queue_handle
        self.task_id = task_id

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:  # rank 0's metrics are already reduced over every worker
            self.queue_handle.report_progress.remote(self.task_id, dict(metrics[0]))


class TaskRun:
    """The task a job is running: heartbeats while it runs (when no Ray job follows it), and
    records its result or its failure."""

    def __init__(self, queue: TaskClient, task: Task) -> None:
        self.queue = queue
        self.task = task
        self._stop = threading.Event()
        if task.ray_job_id is None:
            threading.Thread(target=self._heartbeat, daemon=True).start()

    def callback(self) -> ProgressCallback:
        return ProgressCallback(self.queue.handle, self.task.id)

    def succeeded(self, result: dict[str, Any]) -> Task:
        self._stop.set()
        return self.queue.finish(self.task.id, SUCCEEDED, result=result)

    def failed(self, message: str, reason: str = "error") -> Task | None:
        self._stop.set()
        try:
            if self.queue.get(self.task.id).state == RUNNING:
                return self.queue.finish(self.task.id, FAILED, error=message, reason=reason)
        except Exception:
            logger.exception("could not record the failure of task %s", self.task.id)
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self.queue.heartbeat(self.task.id)
            except Exception:
                logger.warning("heartbeat of task %s failed", self.task.id)
