"""Retraining loops: a policy per model, its runs (each step with its time, outcome and links),
triggers by hand, the triggers that started nothing and why, and a run's lineage from what
started it to the version it promoted.

A loop retrains one model, so it is that model's project's: a listing keeps the request's
project's loops, and a loop, run or model of another project is a 404 worded as for one that
does not exist (``ModelScopeDep``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from aiplatform.api.deps import CreatorDep, SettingsDep
from aiplatform.api.schemas.loops import (
    LoopDeliveryList,
    LoopLineage,
    LoopPolicyList,
    LoopPolicyPublic,
    LoopRunList,
    LoopRunPublic,
    SkippedList,
    TriggerOutcome,
)
from aiplatform.api.scope import ModelScope, ModelScopeDep
from aiplatform.errors import NotFound
from aiplatform.loops.actor import LoopClient
from aiplatform.loops.lineage import run_lineage

router = APIRouter(prefix="/v1/loops", tags=["loops"])
_CLIENTS: dict[str, LoopClient] = {}


def get_loops(settings: SettingsDep) -> LoopClient:
    """The loop engine's client (its actor made on first use), one per platform namespace."""
    client = _CLIENTS.get(settings.ray_namespace)
    if client is None:
        client = _CLIENTS[settings.ray_namespace] = LoopClient.connect(settings)
    return client


LoopsDep = Annotated[LoopClient, Depends(get_loops)]


def owned_run(loops: LoopClient, run_id: str, scope: ModelScope) -> dict[str, Any]:
    """The run, when its model is the project's; another project's is not found."""
    run = loops.run(run_id)
    if not scope.owns(str(run["model"])):
        raise NotFound(f"Loop run {run_id!r} not found")
    return run


@router.get("", response_model=LoopPolicyList)
def list_policies(loops: LoopsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """The request's project's loops (one per model of its own)."""
    return {"policies": [p for p in loops.policies() if scope.owns(str(p["model"]))]}


@router.post("", response_model=LoopPolicyPublic, status_code=201)
def put_policy(loops: LoopsDep, scope: ModelScopeDep, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Create or replace the model's policy (400 naming what is wrong: a cron expression that does
    not parse, an unknown alert rule, a margin or weight out of range; 404 for a model without a
    production version, or of another project). Its schedule counts from now."""
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str):
        scope.check(model)
    return loops.put_policy(body)


@router.get("/runs/{run_id}", response_model=LoopRunPublic)
def get_run(run_id: str, loops: LoopsDep, scope: ModelScopeDep) -> dict[str, Any]:
    return owned_run(loops, run_id, scope)


@router.get("/runs/{run_id}/lineage", response_model=LoopLineage)
def get_run_lineage(run_id: str, loops: LoopsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """The run's chain: what started it (an alert, a schedule tick, a dataset version, a person),
    the dataset version it built with its labeled predictions, the task, the version, the canary
    and the decision."""
    return run_lineage(owned_run(loops, run_id, scope))


@router.get("/runs/{run_id}/deliveries", response_model=LoopDeliveryList)
def get_run_deliveries(run_id: str, loops: LoopsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """The webhooks of the run's decision (``AIP_ALERT_WEBHOOKS``, signed with
    ``AIP_LOOP_WEBHOOK_SECRET``): attempts, done or not, the last error; URLs to their host."""
    owned_run(loops, run_id, scope)
    return {"deliveries": loops.deliveries(run_id)}


@router.get("/{model}", response_model=LoopPolicyPublic)
def get_policy(model: str, loops: LoopsDep, scope: ModelScopeDep) -> dict[str, Any]:
    return loops.policy(scope.check(model))


@router.delete("/{model}", status_code=204)
def delete_policy(model: str, loops: LoopsDep, scope: ModelScopeDep) -> None:
    """Stop retraining the model (a run already open ends failed at its next step)."""
    loops.delete_policy(scope.check(model))


@router.post("/{model}/trigger", response_model=TriggerOutcome, status_code=202)
def trigger(
    model: str,
    loops: LoopsDep,
    scope: ModelScopeDep,
    creator: CreatorDep,
    body: dict[str, Any] | None = Body(None),
) -> dict[str, Any]:
    """Start a run by hand, recorded as the caller's (``api`` when the caller is unknown); during
    a run or the cool-down it starts nothing and says why (``skipped``)."""
    detail = (body or {}).get("detail")
    return loops.trigger(scope.check(model), by=creator or "api", detail=str(detail)[:200] if detail else None)


@router.get("/{model}/runs", response_model=LoopRunList)
def list_runs(
    model: str, loops: LoopsDep, scope: ModelScopeDep, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    """Newest first."""
    return {"runs": loops.runs(scope.check(model), limit)}


@router.get("/{model}/skipped", response_model=SkippedList)
def list_skipped(
    model: str, loops: LoopsDep, scope: ModelScopeDep, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    """Triggers that started nothing (a run was open, the cool-down had not passed), newest first."""
    return {"skipped": loops.skipped(scope.check(model), limit)}
