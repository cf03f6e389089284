"""A project's quota and weight: its members read it, platform admins set it (the access guard
authorized each request in the project the path names, ``aiplatform.access.actions``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from aiplatform.access.protocols import QuotaAPI
from aiplatform.access.quotas import Quota, check_not_below
from aiplatform.api.deps import PlatformDep, PoolsDep, PrincipalDep, TasksDep
from aiplatform.api.schemas.quotas import QuotaPublic, QuotaSet
from aiplatform.errors import Unavailable
from aiplatform.serving.pools import ServePools
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import QUEUED

router = APIRouter(prefix="/v1/projects", tags=["projects"])


def get_quotas(platform: PlatformDep) -> QuotaAPI:
    return platform.quotas


QuotasDep = Annotated[QuotaAPI, Depends(get_quotas)]


def _public(quota: Quota, tasks: TaskManager, pools: ServePools | None) -> dict[str, Any]:
    held, _ = tasks.project_usage(quota.project)
    queued = tasks.counts(quota.project).get(QUEUED, 0)
    in_use: dict[str, float] = {"cpus": held.cpu, "gpus": held.gpu, "queued": queued}
    replicas = None if pools is None or quota.replicas is None else pools.running(quota.project)
    if replicas is not None:
        in_use["replicas"] = replicas
    return {**quota.to_dict(), "in_use": in_use}


@router.get("/{project}/quota", response_model=QuotaPublic)
def get_quota(project: str, quotas: QuotasDep, tasks: TasksDep, pools: PoolsDep) -> dict[str, Any]:
    """The project's quota (null fields: unlimited), its weight, and what it uses now (with
    ``replicas``, its own model servers running, when its quota names a replica count)."""
    return _public(quotas.get(project), tasks, pools)


@router.put("/{project}/quota", response_model=QuotaPublic)
async def set_quota(
    project: str, body: QuotaSet, quotas: QuotasDep, tasks: TasksDep, principal: PrincipalDep, pools: PoolsDep
) -> dict[str, Any]:
    """Replace the project's quota (platform admins). 409 naming the tasks when it is below what
    the project's running tasks hold: a quota never stops a running task. A queued task that
    needs more than the new quota is not refused: it waits saying it cannot start until the quota
    is raised, and its project's tasks behind it go ahead (``fair_share.plan``). A replica count
    gives the project model servers of its own, at most that many, deployed (or redeployed at the
    new size: Serve's rolling update) before the quota is stored; 503 when Serve cannot run them,
    nothing stored. 0 stops serving its models, null sends them back to the shared model servers
    (``aiplatform.serving.pools``)."""
    quota = Quota(project, body.cpus, body.gpus, body.queued, body.replicas, body.weight)

    def apply() -> dict[str, Any]:
        previous = quotas.get(project)  # an unknown project: 404 before anything else
        held, running = tasks.project_usage(project)
        check_not_below(quota, held.cpu, held.gpu, running)  # before a pool changes

        def store() -> Quota:
            return quotas.set(quota, by=principal.name, cpus_in_use=held.cpu, gpus_in_use=held.gpu, running=running)

        if quota.replicas == previous.replicas:
            store()
        elif pools is None:
            raise Unavailable("This API process runs no model servers, so a serving-replica quota cannot change here")
        else:
            pools.apply(project, quota.replicas, store)
        return _public(quota, tasks, pools)

    return await run_in_threadpool(apply)
