"""Bodies of ``/v1/tasks``, ``/v1/sweeps`` and ``/v1/runs``."""

from __future__ import annotations

from typing import Any

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


class TaskListed(TaskPublic):
    waiting: str | None = Field(description="why a queued task has not started (null otherwise)")


class TaskDetail(TaskListed):
    ray_dashboard_url: str | None


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
