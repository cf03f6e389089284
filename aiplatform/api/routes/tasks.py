"""Training tasks: create from a template, list, start, cancel, logs, metrics history.

Every route acts in the request's project (``ProjectDep``): a new task is created there (its
model's name claimed there, ``claim_task_model``), listings and counts show its tasks only, and
another project's task is a 404 like one that does not exist (``owned_task``). A new task records
the caller as its ``created_by`` (``TaskManager.record_creator``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from aiplatform.api.deps import CreatorDep, ProjectDep, RegistryDep, SettingsDep, StorageDep, TasksDep
from aiplatform.api.log_stream import StreamSlots, task_log_events
from aiplatform.api.routes.batch import check_batch_job
from aiplatform.api.schemas.tasks import TaskDetail, TaskList, TaskLogs, TaskMetrics, TaskPublic, TaskRerunPublic
from aiplatform.api.scope import ModelScopeDep
from aiplatform.batch.params import BatchParams
from aiplatform.batch.template import BATCH_INFERENCE
from aiplatform.errors import AIPError, NotFound
from aiplatform.registry import RegistryAPI
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import MAX_PRIORITY, MIN_PRIORITY, Task
from aiplatform.tasks.queue.store import DEFAULT_PROJECT, MAX_LIST_LIMIT
from aiplatform.training.catalog import get_template

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
MAX_LOG_LINES = 5000
LOG_STREAMS = StreamSlots()


class TaskCreate(BaseModel):
    """A new task; ``params`` are checked against the template's schema."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(..., min_length=1, max_length=100, examples=["cnn-classification"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"epochs": 2}])
    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="higher starts first")
    model_name: str | None = Field(None, description="registry name (default: from the template)")
    start: bool = Field(False, description="queue it at once")
    max_retries: int | None = Field(None, ge=0, le=100, description="re-runs after an interruption")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="a repeated key returns the first task"
    )


def owned_task(tasks: TaskManager, task_id: str, project: str) -> Task:
    """The task, when it is ``project``'s; another project's is not found (its existence is not told)."""
    task = tasks.get(task_id)
    # a record the history archive kept from before projects has none: it is default's
    if (getattr(task, "project", None) or DEFAULT_PROJECT) != project:
        raise NotFound(f"Task {task_id!r} not found")
    return task


def claim_task_model(
    registry: RegistryAPI, template: str, params: dict[str, Any], model_name: str | None, project: str
) -> None:
    """Reserve the name the task's model will be registered under for ``project`` (409 when it
    is another project's), so the version its job registers lands in the task's project.
    Parameters the template refuses are left for the task's own checks to name."""
    if model_name is None:
        try:
            found = get_template(template)
            model_name = found.default_model_name(found.parse_params(params))
        except AIPError:
            return
    if registry.model_project(model_name) != project:
        registry.claim_model(model_name, project)


@router.post("", status_code=201, response_model=TaskPublic)
async def create_task(
    body: TaskCreate,
    tasks: TasksDep,
    registry: RegistryDep,
    storage: StorageDep,
    settings: SettingsDep,
    project: ProjectDep,
    scope: ModelScopeDep,
    creator: CreatorDep,
    idempotency_key: str | None = Header(None, max_length=200),
) -> dict[str, Any]:
    """A task from a template. A ``batch-inference`` task is checked as ``POST /v1/batch-jobs``
    checks it (``check_batch_job``: the project's model and upload, the version exists, the input
    fits it), whichever route creates it."""
    if body.template == BATCH_INFERENCE:
        params = get_template(BATCH_INFERENCE).parse_params(body.params)  # a bad one: 400
        assert isinstance(params, BatchParams)
        await check_batch_job(params, scope, storage, registry, settings)
    else:
        await run_in_threadpool(claim_task_model, registry, body.template, body.params, body.model_name, project)
    task = await tasks.create_async(
        body.template,
        body.params,
        priority=body.priority,
        model_name=body.model_name,
        start=body.start,
        max_retries=body.max_retries,
        idempotency_key=body.idempotency_key or idempotency_key,
        project=project,
    )
    return (await run_in_threadpool(tasks.record_creator, task, creator)).to_dict()


@router.get("", response_model=TaskList)
def list_tasks(
    tasks: TasksDep,
    project: ProjectDep,
    state: list[str] = Query(default_factory=list, description="repeat for several states"),
    template: str | None = None,
    since: float | None = Query(None, description="created at or after (unix seconds)"),
    until: float | None = Query(None, description="created before (unix seconds)"),
    limit: int = Query(100, ge=1, le=MAX_LIST_LIMIT),
    offset: int = Query(0, ge=0, le=10**9),
    before: str | None = Query(None, max_length=64, description="the next page: a page's next_before"),
) -> dict[str, Any]:
    """Newest first; ``next_before`` (null on the last page) goes in ``before`` for the next."""
    found = tasks.list_tasks(
        states=state,
        template=template,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
        before=before,
        project=project,
    )
    waiting = tasks.why_waiting(found)
    return {
        "tasks": [{**t.to_dict(), "waiting": waiting.get(t.id)} for t in found],
        "counts": tasks.counts(project),
        "next_before": found[-1].id if len(found) == limit else None,
    }


@router.get("/counts", response_model=dict[str, int])
def task_counts(tasks: TasksDep, project: ProjectDep) -> dict[str, int]:
    """The project's tasks by state."""
    return tasks.counts(project)


@router.get("/{task_id}", response_model=TaskDetail)
def get_task(task_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    """The task; a queued one also says why it waits (``waiting``). The Ray dashboard's link is
    given only while Ray has the job (``ray_job_known``); after that its log, curves and record
    are the copies kept in storage."""
    task = owned_task(tasks, task_id, project)
    known = tasks.ray_job_known(task)
    return {
        **task.to_dict(),
        "waiting": tasks.why_waiting([task]).get(task.id),
        "ray_dashboard_url": None if known is False else tasks.dashboard_url(task),
        "ray_job_known": known,
    }


@router.post("/{task_id}/start", response_model=TaskPublic)
def start_task(task_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    owned_task(tasks, task_id, project)
    return tasks.start(task_id).to_dict()


class TaskRerun(BaseModel):
    """Options of a rerun; template, parameters (code archive included) and model name are the task's."""

    model_config = ConfigDict(extra="forbid")

    start: bool = Field(True, description="queue it at once")
    priority: int | None = Field(None, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="default: the task's")


@router.post("/{task_id}/rerun", status_code=201, response_model=TaskRerunPublic)
async def rerun_task(
    task_id: str, tasks: TasksDep, project: ProjectDep, creator: CreatorDep, body: TaskRerun | None = None
) -> dict[str, Any]:
    """Run again: a new task with exactly the same template, parameters and model name (a user-code
    task's archive by its digest, so the same code runs)."""
    options = body or TaskRerun()
    task = await run_in_threadpool(owned_task, tasks, task_id, project)
    created = await tasks.create_async(
        task.template,
        task.params,
        priority=task.priority if options.priority is None else options.priority,
        model_name=task.model_name,
        start=options.start,
        project=project,
    )
    created = await run_in_threadpool(tasks.record_creator, created, creator)
    return {**created.to_dict(), "rerun_of": task.id}


@router.post("/{task_id}/cancel", response_model=TaskPublic)
def cancel_task(task_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    owned_task(tasks, task_id, project)
    return tasks.cancel(task_id).to_dict()


@router.get("/{task_id}/logs", response_model=TaskLogs)
def task_logs(
    task_id: str, tasks: TasksDep, project: ProjectDep, tail: int = Query(MAX_LOG_LINES, ge=1, le=MAX_LOG_LINES)
) -> dict[str, Any]:
    """The job's log from Ray while Ray has the job, else the copy kept in storage (``source``)."""
    owned_task(tasks, task_id, project)
    log = tasks.read_logs(task_id)
    lines = log.text.splitlines()
    return {
        "task_id": task_id,
        "logs": "\n".join(lines[-tail:]),
        "truncated": len(lines) > tail,
        "source": log.source,
        "ray_job_known": log.ray_job_known,
    }


@router.get(
    "/{task_id}/logs/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events: `lines`, then `end` (or `reconnect` with the `after` to resume from)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
def stream_task_logs(
    task_id: str,
    tasks: TasksDep,
    request: Request,
    project: ProjectDep,
    after: int = Query(0, ge=0, le=10_000_000, description="lines the client already has"),
) -> StreamingResponse:
    """The task's log as it grows (server-sent events), until the task ends. 503 when this
    server's streams, or the caller's address's share of them, are all open."""
    owned_task(tasks, task_id, project)  # an unknown task is a 404 before the stream starts
    client = request.client.host if request.client else "unknown"
    LOG_STREAMS.check(client)  # refused before the response starts; the stream takes its slot itself
    events = task_log_events(
        lambda: tasks.get(task_id).state,
        lambda: tasks.logs(task_id),
        after,
        LOG_STREAMS,
        client,
        request.is_disconnected,
    )
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.get("/{task_id}/metrics", response_model=TaskMetrics)
def task_metrics(task_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    owned_task(tasks, task_id, project)
    return {"task_id": task_id, "history": tasks.metrics_history(task_id)}
