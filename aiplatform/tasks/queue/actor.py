"""The task queue as a detached, head-pinned Ray actor, and the client every process uses."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import ray

from aiplatform.monitoring.metrics import observe, set_gauge
from aiplatform.runtime import ActorProxy, call, call_async, freeze_startup_heap, head_actor
from aiplatform.settings import Settings
from aiplatform.tasks.queue.store import RUNNING, STATES, Task, TaskAPI, TaskStore
from aiplatform.tasks.queue.submitters import Submitters

QUEUE_ACTOR_NAME = "task-queue"


class TaskActor(TaskStore):
    """The task store, run as an actor that owns ``tasks.sqlite`` on the head node.

    On failure: Ray restarts the actor (``max_restarts=-1``) and retries the calls in flight
    (``max_task_retries=-1``); it reopens the same file, so every acknowledged change is kept, and
    the store's writes are idempotent, so a retried call changes nothing twice.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.resolved_state_dir / "tasks.sqlite")
        self._submitters = Submitters.from_settings(settings)
        self._export_depth()
        freeze_startup_heap()

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    # State changes also feed the queue's metrics (depth by state, wait and run times); a retried
    # call that changes nothing records nothing.
    def create(self, *args: Any, **kwargs: Any) -> Task:
        task = super().create(*args, **kwargs)
        self._export_depth()
        return task

    def submitter_project(self, platform_key: str | None, project: str | None = None) -> str:
        """The project a job submitted straight to Ray with ``platform_key`` acts in, the key
        authenticated here on the head (``submitters.py``); refused, saying why, without one."""
        return self._submitters.project(platform_key, project)

    def create_self_started(
        self,
        template: str,
        params: dict[str, Any],
        *,
        platform_key: str | None,
        project: str | None = None,
        **options: Any,
    ) -> Task:
        """Record a run started straight with ``ray job submit`` as RUNNING in the project its
        key may create in (never a project the job merely names)."""
        where = self.submitter_project(platform_key, project)
        return self.create(template, params, running=True, project=where, **options)

    def start(self, task_id: str, queued_limit: int | None = None) -> Task:
        return self._changing(task_id, lambda: super(TaskActor, self).start(task_id, queued_limit))

    def claim(self, task_id: str, ray_job_id: str) -> Task:
        return self._changing(task_id, lambda: super(TaskActor, self).claim(task_id, ray_job_id))

    def finish(self, task_id: str, state: str, **fields: Any) -> Task:
        return self._changing(task_id, lambda: super(TaskActor, self).finish(task_id, state, **fields))

    def cancel(self, task_id: str) -> Task:
        return self._changing(task_id, lambda: super(TaskActor, self).cancel(task_id))

    def requeue(self, task_id: str, params: dict[str, Any] | None = None, queued_limit: int | None = None) -> Task:
        return self._changing(task_id, lambda: super(TaskActor, self).requeue(task_id, params, queued_limit))

    def interrupt(self, task_id: str, error: str) -> Task:
        return self._changing(task_id, lambda: super(TaskActor, self).interrupt(task_id, error))

    def report_progress(self, task_id: str, metrics: dict[str, Any]) -> Task:
        task = super().report_progress(task_id, metrics)
        if isinstance(metrics.get("samples_per_second"), (int, float)):
            set_gauge("aip_training_samples_per_second", float(metrics["samples_per_second"]), template=task.template)
        return task

    def _changing(self, task_id: str, change: Callable[[], Task]) -> Task:
        before = self.get(task_id).state
        task = change()
        if task.state != before:
            if task.state == RUNNING and task.queued_at is not None and task.started_at is not None:
                observe("aip_task_wait_seconds", max(0.0, task.started_at - task.queued_at), template=task.template)
            if task.finished and task.started_at is not None and task.finished_at is not None:
                observe(
                    "aip_task_duration_seconds",
                    max(0.0, task.finished_at - task.started_at),
                    template=task.template,
                    outcome=task.state,
                )
            self._export_depth()
        return task

    def _export_depth(self) -> None:
        for state, count in self.counts().items():
            if state in STATES:
                set_gauge("aip_task_queue_depth", count, state=state)


class TaskClient(ActorProxy, TaskAPI, protocol=TaskAPI):
    """The queue actor, called like the store (see ``ActorProxy``); creation makes its own
    idempotency key when the caller gives none, and has an async form for the API's event loop."""

    @classmethod
    def connect(cls, settings: Settings) -> TaskClient:
        """Get the platform's queue actor, creating it on the head node if needed."""
        return cls(head_actor(TaskActor, QUEUE_ACTOR_NAME, settings))

    def create(
        self, template: str, params: dict[str, Any], *, idempotency_key: str | None = None, **options: Any
    ) -> Task:
        """Create a task. Without a caller's key a fresh one is used, so that the call's own
        retries (after an actor restart) never create a second task."""
        key = idempotency_key or f"auto-{uuid.uuid4().hex}"
        return call(self.handle.create, template, params, idempotency_key=key, **options)

    def create_self_started(
        self,
        template: str,
        params: dict[str, Any],
        *,
        platform_key: str | None,
        project: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Task:
        """:meth:`TaskActor.create_self_started`, with an idempotency key of its own (as :meth:`create`)."""
        key = idempotency_key or f"auto-{uuid.uuid4().hex}"
        return call(
            self.handle.create_self_started,
            template,
            params,
            platform_key=platform_key,
            project=project,
            idempotency_key=key,
            **options,
        )

    def submitter_project(self, platform_key: str | None, project: str | None = None) -> str:
        """:meth:`TaskActor.submitter_project`."""
        return call(self.handle.submitter_project, platform_key, project)  # type: ignore[no-any-return]

    async def create_async(
        self, template: str, params: dict[str, Any], *, idempotency_key: str | None = None, **options: Any
    ) -> Task:
        """:meth:`create` from an event loop (the API's hot path)."""
        key = idempotency_key or f"auto-{uuid.uuid4().hex}"
        return await call_async(self.handle.create, template, params, idempotency_key=key, **options)

    def list(self, *, states: Iterable[str] | None = None, **filters: Any) -> list[Task]:
        return call(self.handle.list, states=list(states or ()), **filters)
