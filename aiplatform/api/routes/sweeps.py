"""Sweeps (a task of the ``sweep`` template and its trials) and comparing any runs side by side,
in the request's project (another project's sweep or run is a 404, as in ``routes/tasks.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiplatform.api.deps import CreatorDep, ProjectDep, RegistryDep, TasksDep
from aiplatform.api.routes.tasks import claim_task_model, owned_task
from aiplatform.api.schemas.tasks import RunComparison, SweepList, SweepPublic
from aiplatform.errors import InvalidArgument
from aiplatform.tasks.queue import MAX_PRIORITY, MIN_PRIORITY
from aiplatform.tasks.queue.store import MAX_LIST_LIMIT
from aiplatform.tasks.queue.trials import MAX_COMPARED_RUNS, RUN_SEPARATOR
from aiplatform.tasks.sweeps.params import MAX_TRIALS
from aiplatform.tasks.sweeps.template import SWEEP
from aiplatform.training.template import validation_message

router = APIRouter(tags=["sweeps"])


class SweepQueueing(BaseModel):
    """How a new sweep is queued (given beside its parameters in the body)."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    model_name: str | None = Field(None, max_length=200, description="registry name of the best trial's model")
    start: bool = Field(True, description="queue it at once")


@router.post("/v1/sweeps", status_code=201, response_model=SweepPublic)
async def create_sweep(
    body: dict[str, Any],
    tasks: TasksDep,
    registry: RegistryDep,
    project: ProjectDep,
    creator: CreatorDep,
    idempotency_key: str | None = Header(None, max_length=200),
) -> dict[str, Any]:
    """The body is a sweep's parameters (see the ``sweep`` template's schema) plus ``priority``,
    ``model_name`` and ``start``; every problem is named before anything runs."""
    options = {k: body.pop(k) for k in ("priority", "model_name", "start") if k in body}
    try:
        queueing = SweepQueueing.model_validate(options)
    except ValidationError as exc:
        raise InvalidArgument(validation_message(exc, "sweep options")) from exc
    await run_in_threadpool(claim_task_model, registry, SWEEP, body, queueing.model_name, project)
    task = await tasks.create_async(
        SWEEP,
        body,
        priority=queueing.priority,
        model_name=queueing.model_name,
        start=queueing.start,
        idempotency_key=idempotency_key,
        project=project,
    )
    await run_in_threadpool(tasks.record_creator, task, creator)
    return tasks.sweep_view(task.id)


@router.get("/v1/sweeps", response_model=SweepList)
def list_sweeps(
    tasks: TasksDep,
    project: ProjectDep,
    limit: int = Query(100, ge=1, le=MAX_LIST_LIMIT),
    before: str | None = Query(None, max_length=64),
) -> dict[str, Any]:
    sweeps = tasks.list_tasks(template=SWEEP, limit=limit, before=before, project=project)
    return {"sweeps": [s.to_dict() for s in sweeps], "next_before": sweeps[-1].id if len(sweeps) == limit else None}


@router.get("/v1/sweeps/{sweep_id}", response_model=SweepPublic)
def get_sweep(sweep_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    """The sweep's task, its trials (values, state, latest metrics, why it stopped) and the best so far."""
    owned_task(tasks, sweep_id, project)
    return tasks.sweep_view(sweep_id)


@router.post("/v1/sweeps/{sweep_id}/stop", response_model=SweepPublic)
def stop_sweep(sweep_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    """Stop its job: Tune saves its state, running trials are paused (resume goes on from them)."""
    owned_task(tasks, sweep_id, project)
    tasks.sweep(sweep_id)
    tasks.cancel(sweep_id)
    return tasks.sweep_view(sweep_id)


@router.post("/v1/sweeps/{sweep_id}/resume", response_model=SweepPublic)
def resume_sweep(sweep_id: str, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    """Queue a stopped (or failed) sweep again: finished trials are kept, paused ones continue."""
    owned_task(tasks, sweep_id, project)
    tasks.resume_sweep(sweep_id)
    return tasks.sweep_view(sweep_id)


class SweepExtend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int = Field(..., ge=1, le=MAX_TRIALS, description="trials to add")


@router.post("/v1/sweeps/{sweep_id}/extend", response_model=SweepPublic)
def extend_sweep(sweep_id: str, body: SweepExtend, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    """More trials for a sweep that has ended (a new search segment, warm-started for TPE)."""
    owned_task(tasks, sweep_id, project)
    tasks.extend_sweep(sweep_id, body.trials)
    return tasks.sweep_view(sweep_id)


class RunsToCompare(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(
        ...,
        min_length=1,
        max_length=MAX_COMPARED_RUNS,
        description="task ids and sweep:trial ids (a sweep's trials: GET /v1/sweeps/{id})",
    )


@router.post("/v1/runs/compare", response_model=RunComparison)
def compare_runs(body: RunsToCompare, tasks: TasksDep, project: ProjectDep) -> dict[str, Any]:
    """Runs side by side (tasks or sweeps' trials): each one's parameters, state, latest metrics
    and per-epoch curves, and which parameters differ between them."""
    ids = [i[:200] for i in body.ids]
    for task_id in dict.fromkeys(i.split(RUN_SEPARATOR, 1)[0] for i in ids):
        owned_task(tasks, task_id, project)
    runs = tasks.compare_runs(ids)
    names = sorted({k for run in runs for k in run["params"]})
    differing = [k for k in names if len({repr(run["params"].get(k)) for run in runs}) > 1]
    return {"runs": runs, "differing_params": differing}
