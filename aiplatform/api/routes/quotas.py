"""A project's quota and weight: its members read it, platform admins set it (the access guard
authorized each request in the project the path names, ``aiplatform.access.actions``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from aiplatform.access.quotas import Quota, QuotaStore
from aiplatform.api.deps import PrincipalDep, SettingsDep, TasksDep
from aiplatform.api.schemas.quotas import QuotaPublic, QuotaSet
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import QUEUED

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@functools.lru_cache(maxsize=8)
def _store(state_dir: Path) -> QuotaStore:
    return QuotaStore.in_state_dir(state_dir)


def get_quotas(settings: SettingsDep) -> QuotaStore:
    return _store(settings.resolved_state_dir)


QuotasDep = Annotated[QuotaStore, Depends(get_quotas)]


def _public(quota: Quota, tasks: TaskManager) -> dict[str, Any]:
    held, _ = tasks.project_usage(quota.project)
    queued = tasks.counts(quota.project).get(QUEUED, 0)
    return {**quota.to_dict(), "in_use": {"cpus": held.cpu, "gpus": held.gpu, "queued": queued}}


@router.get("/{project}/quota", response_model=QuotaPublic)
def get_quota(project: str, quotas: QuotasDep, tasks: TasksDep) -> dict[str, Any]:
    """The project's quota (null fields: unlimited), its weight, and what it uses now."""
    return _public(quotas.get(project), tasks)


@router.put("/{project}/quota", response_model=QuotaPublic)
async def set_quota(
    project: str, body: QuotaSet, quotas: QuotasDep, tasks: TasksDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Replace the project's quota (platform admins). 409 naming the tasks when it is below what
    the project's running tasks hold: a quota never stops a running task. A queued task that
    needs more than the new quota is not refused: it waits saying it cannot start until the quota
    is raised, and its project's tasks behind it go ahead (``fair_share.plan``)."""
    quota = Quota(project, body.cpus, body.gpus, body.queued, body.replicas, body.weight)

    def apply() -> dict[str, Any]:
        quotas.get(project)  # an unknown project: 404 before anything else
        held, running = tasks.project_usage(project)
        quotas.set(quota, by=principal.name, cpus_in_use=held.cpu, gpus_in_use=held.gpu, running=running)
        return _public(quota, tasks)

    return await run_in_threadpool(apply)
