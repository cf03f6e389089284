"""The scheduler: a detached, head-pinned actor that runs ``TaskManager.reconcile`` in a loop."""

from __future__ import annotations

import logging
import threading

import ray

from aiplatform.runtime import call, head_actor
from aiplatform.settings import Settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import TaskClient
from aiplatform.tasks.ray_jobs import RayJobs

logger = logging.getLogger(__name__)
SCHEDULER_ACTOR_NAME = "task-scheduler"


class SchedulerActor:
    """Follows running tasks and starts queued ones every ``task_poll_interval_s``, or at once
    when woken (a task was queued).

    On failure: it holds no state of its own. Ray restarts it and its first round puts every
    task where the queue and the cluster's jobs say it is (see ``TaskManager.reconcile``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        self._wake = threading.Event()
        self._rounds = 0
        threading.Thread(target=self._loop, name="task-scheduler", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                self.manager.reconcile()
            except Exception:
                logger.exception("scheduler round failed")
            self._rounds += 1
            self._wake.wait(self.settings.task_poll_interval_s)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def rounds(self) -> int:
        """Rounds completed (tests wait for one after a change)."""
        return self._rounds

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()


def scheduler_handle(settings: Settings) -> ray.actor.ActorHandle:
    """The platform's scheduler actor, created on the head node if needed."""
    return head_actor(SchedulerActor, SCHEDULER_ACTOR_NAME, settings)


def ensure_scheduler(settings: Settings) -> ray.actor.ActorHandle:
    """Create the scheduler if needed and wait until it runs."""
    handle = scheduler_handle(settings)
    call(handle.ping)
    return handle
