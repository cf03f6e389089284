"""Bodies of the quota routes (``routes/quotas.py``): a project's quota and weight."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aiplatform.api.schemas.base import Body


class QuotaSet(BaseModel):
    """A project's whole quota: a field left out (or null) is unlimited."""

    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(None, ge=0, description="CPUs its running tasks and sweeps may hold at once")
    gpus: float | None = Field(None, ge=0, description="GPUs its running tasks and sweeps may hold at once")
    queued: int | None = Field(None, ge=0, description="tasks it may have queued at once")
    replicas: int | None = Field(
        None,
        ge=0,
        le=256,
        description="serving replicas its models may run on (model servers of its own; null: the shared ones)",
    )
    weight: float = Field(1.0, gt=0, le=1000, description="its share of a contended cluster, against other projects'")


class QuotaPublic(Body):
    project: str
    cpus: float | None
    gpus: float | None
    queued: int | None
    replicas: int | None
    weight: float
    in_use: dict[str, float] = Field(
        description="what its running tasks hold now (cpus, gpus), its queued tasks, and (with a replica"
        " quota) its model servers running (replicas)"
    )
