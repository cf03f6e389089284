"""Bodies of ``/v1/tasks``, ``/v1/sweeps`` and ``/v1/runs``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from aiplatform.api.schemas.base import Body, Record


class TaskPublic(Record):
    """A training task as the queue keeps it (``Task.to_dict()``)."""

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
    progress: dict[str, Any] = Field(description="latest epoch, epochs and metrics")
    result: dict[str, Any] | None
    error: str | None
    error_reason: str | None
    created_at: float
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    project: str = "default"
    created_by: str | None = Field(None, description="who created it (null: from before this was recorded)")


class TaskListed(TaskPublic):
    waiting: str | None = Field(description="why a queued task has not started (null otherwise)")


RAY_JOB_KNOWN = (
    "whether Ray still has the task's job: false once it is gone (deleted, or lost with the head; the "
    "task's log, curves and record are then the copies kept in storage), null when the task has no job "
    "or Ray cannot say"
)


class TaskDetail(TaskListed):
    ray_dashboard_url: str | None = Field(description="the job's page in Ray's dashboard, while Ray has the job")
    ray_job_known: bool | None = Field(description=RAY_JOB_KNOWN)


class TaskRerunPublic(TaskPublic):
    rerun_of: str = Field(description="the task that was run again")


class TaskList(Body):
    tasks: list[TaskListed]
    counts: dict[str, int] = Field(description="tasks by state")
    next_before: str | None = Field(description="``before`` of the next page (null on the last)")


class TaskLogs(Body):
    task_id: str
    logs: str
    truncated: bool
    source: Literal["ray", "storage", "queue"] = Field(
        description="where the log was read: Ray's job, the copy kept in storage (every attempt's), "
        "or the tail the queue kept when the task ended"
    )
    ray_job_known: bool | None = Field(description=RAY_JOB_KNOWN)


class TaskMetrics(Body):
    task_id: str
    history: list[dict[str, Any]] = Field(description="the metrics of each epoch, in order")


class TrialPublic(Record):
    """One trial of a sweep (``Trial.to_dict()``)."""

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
    run_id: str = Field(description="the id runs are compared by")


class SweepPublic(TaskPublic):
    """A sweep's task with its trials and the best finished one so far."""

    trials: list[TrialPublic]
    trial_counts: dict[str, int]
    best_trial: TrialPublic | None
    waiting: str | None


class SweepList(Body):
    sweeps: list[TaskPublic]
    next_before: str | None


class RunComparison(Body):
    runs: list[dict[str, Any]] = Field(description="each run's id, kind, parameters, state, metrics and curves")
    differing_params: list[str]
