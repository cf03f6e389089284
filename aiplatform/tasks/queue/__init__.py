"""The task queue: durable task records and their state machine, owned by a head-node actor."""

from aiplatform.tasks.queue.actor import QUEUE_ACTOR_NAME, TaskActor, TaskClient
from aiplatform.tasks.queue.store import (
    CANCELLED,
    CREATED,
    FAILED,
    FINISHED_STATES,
    MAX_PRIORITY,
    MIN_PRIORITY,
    QUEUED,
    REASON_INTERRUPTED,
    RUNNING,
    STATES,
    SUCCEEDED,
    Task,
    TaskStore,
    validate_priority,
    validate_state,
)
from aiplatform.tasks.queue.trials import (
    FINISHED,
    PAUSED,
    PENDING,
    STOPPED,
    TRIAL_DONE_STATES,
    TRIAL_FAILED,
    TRIAL_RUNNING,
    TRIAL_STATES,
    Trial,
    run_id,
)

__all__ = [
    "CANCELLED", "CREATED", "FAILED", "FINISHED_STATES", "MAX_PRIORITY", "MIN_PRIORITY", "QUEUED", "QUEUE_ACTOR_NAME", "REASON_INTERRUPTED",
    "RUNNING", "STATES", "SUCCEEDED", "TaskActor", "TaskClient", "Task", "TaskStore",
    "validate_priority", "validate_state",
    "FINISHED", "PAUSED", "PENDING", "STOPPED", "TRIAL_DONE_STATES", "TRIAL_FAILED", "TRIAL_RUNNING", "TRIAL_STATES",
    "Trial", "run_id",
]
