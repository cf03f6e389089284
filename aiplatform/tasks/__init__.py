"""The task manager: templates -> tasks -> Ray jobs, followed to their end."""

from aiplatform.tasks.manager import TaskManager, job_submission_id
from aiplatform.tasks.ray_jobs import JobState, RayJobs
from aiplatform.tasks.scheduler import (
    SCHEDULER_ACTOR_NAME,
    SchedulerActor,
    ensure_scheduler,
    scheduler_handle,
)

__all__ = [
    "JobState", "RayJobs", "SCHEDULER_ACTOR_NAME", "SchedulerActor", "TaskManager", "ensure_scheduler",
    "job_submission_id", "scheduler_handle",
]
