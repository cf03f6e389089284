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

__all__ = [
    "CANCELLED", "CREATED", "FAILED", "FINISHED_STATES", "MAX_PRIORITY", "MIN_PRIORITY", "QUEUED", "QUEUE_ACTOR_NAME", "REASON_INTERRUPTED",
    "RUNNING", "STATES", "SUCCEEDED", "TaskActor", "TaskClient", "Task", "TaskStore",
    "validate_priority", "validate_state",
]
