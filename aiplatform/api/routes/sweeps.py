"""Sweeps (a task of the ``sweep`` template and its trials) and comparing any runs side by side."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiplatform.api.deps import PlatformDep
from aiplatform.errors import InvalidArgument
from aiplatform.tasks.queue import MAX_PRIORITY, MIN_PRIORITY
from aiplatform.tasks.queue.store import MAX_LIST_LIMIT
from aiplatform.tasks.queue.trials import MAX_COMPARED_RUNS
from aiplatform.tasks.sweeps.params import MAX_TRIALS
from aiplatform.tasks.sweeps.template import SWEEP
from aiplatform.training.template import validation_message

router = APIRouter(tags=["sweeps"])


class SweepQueueing(BaseModel):
    """How a new sweep is queued (given beside its parameters in the body)."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    model_name: Optional[str] = Field(None, max_length=200, description="registry name of the best trial's model")
    start: bool = Field(True, description="queue it at once")


@router.post("/v1/sweeps", status_code=201)
async def create_sweep(body: dict[str, Any], platform: PlatformDep,
                       idempotency_key: Optional[str] = Header(None, max_length=200)) -> dict[str, Any]:
    """The body is a sweep's parameters (see the ``sweep`` template's schema) plus ``priority``,
    ``model_name`` and ``start``; every problem is named before anything runs."""
    options = {k: body.pop(k) for k in ("priority", "model_name", "start") if k in body}
    try:
        queueing = SweepQueueing.model_validate(options)
    except ValidationError as exc:
        raise InvalidArgument(validation_message(exc, "sweep options")) from exc
    task = await platform.tasks.create_async(SWEEP, body, priority=queueing.priority, model_name=queueing.model_name,
                                             start=queueing.start, idempotency_key=idempotency_key)
    return platform.tasks.sweep_view(task.id)


@router.get("/v1/sweeps")
def list_sweeps(platform: PlatformDep, limit: int = Query(100, ge=1, le=MAX_LIST_LIMIT),
                before: Optional[str] = Query(None, max_length=64)) -> dict[str, Any]:
    sweeps = platform.tasks.queue.list(template=SWEEP, limit=limit, before=before)
    return {"sweeps": [s.to_dict() for s in sweeps], "next_before": sweeps[-1].id if len(sweeps) == limit else None}


@router.get("/v1/sweeps/{sweep_id}")
def get_sweep(sweep_id: str, platform: PlatformDep) -> dict[str, Any]:
    """The sweep's task, its trials (values, state, latest metrics, why it stopped) and the best so far."""
    return platform.tasks.sweep_view(sweep_id)


@router.post("/v1/sweeps/{sweep_id}/stop")
def stop_sweep(sweep_id: str, platform: PlatformDep) -> dict[str, Any]:
    """Stop its job: Tune saves its state, running trials are paused (resume goes on from them)."""
    platform.tasks.sweep(sweep_id)
    platform.tasks.cancel(sweep_id)
    return platform.tasks.sweep_view(sweep_id)


@router.post("/v1/sweeps/{sweep_id}/resume")
def resume_sweep(sweep_id: str, platform: PlatformDep) -> dict[str, Any]:
    """Queue a stopped (or failed) sweep again: finished trials are kept, paused ones continue."""
    platform.tasks.resume_sweep(sweep_id)
    return platform.tasks.sweep_view(sweep_id)


class SweepExtend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int = Field(..., ge=1, le=MAX_TRIALS, description="trials to add")


@router.post("/v1/sweeps/{sweep_id}/extend")
def extend_sweep(sweep_id: str, body: SweepExtend, platform: PlatformDep) -> dict[str, Any]:
    """More trials for a sweep that has ended (a new search segment, warm-started for TPE)."""
    platform.tasks.extend_sweep(sweep_id, body.trials)
    return platform.tasks.sweep_view(sweep_id)


class RunsToCompare(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(..., min_length=1, max_length=MAX_COMPARED_RUNS,
                           description="task ids and sweep:trial ids (a sweep's trials: GET /v1/sweeps/{id})")


@router.post("/v1/runs/compare")
def compare_runs(body: RunsToCompare, platform: PlatformDep) -> dict[str, Any]:
    """Runs side by side (tasks or sweeps' trials): each one's parameters, state, latest metrics
    and per-epoch curves, and which parameters differ between them."""
    runs = platform.tasks.queue.compare_runs([i[:200] for i in body.ids])
    names = sorted({k for run in runs for k in run["params"]})
    differing = [k for k in names if len({repr(run["params"].get(k)) for run in runs}) > 1]
    return {"runs": runs, "differing_params": differing}
