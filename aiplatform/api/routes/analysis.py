"""Data analysis: dataset profiles, drift of live inputs, and their charts.

Each acts in the request's project: a dataset profile reads the project's datasets, a drift
analysis names one of its models (``ModelScope``: another project's is a 404; it also records
drift scores that raise the model's alerts, so it is a member's action), and a chart is served
only to the project whose dataset or model it draws (a 404 otherwise, as for no chart)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from aiplatform.analysis.drift import REFERENCE_SPLIT
from aiplatform.analysis.report import CHART_TYPES, chart_owner, read_chart
from aiplatform.analysis.service import drift_on_cluster, profile_on_cluster
from aiplatform.api.deps import ProjectDep, SettingsDep, StorageDep
from aiplatform.api.schemas.analysis import AnalysisReport
from aiplatform.api.scope import ModelScopeDep
from aiplatform.datasets.spec import SPLITS
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.results.store import MAX_QUERY_LIMIT

router = APIRouter(prefix="/v1/analysis", tags=["analysis"])


class DriftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="registered model whose recent predictions are compared")
    version: int | None = Field(
        None,
        ge=1,
        description="only this version's predictions (default: all); "
        "also the version whose dataset is the reference (default: production or latest)",
    )
    dataset: str | None = Field(None, description="reference dataset NAME@VERSION (default: the model's)")
    split: str = Field(REFERENCE_SPLIT, description="reference split (default: the held-out validation split)")
    limit: int = Field(1000, ge=1, le=MAX_QUERY_LIMIT, description="most recent predictions to compare")
    since: float | None = Field(None, description="only predictions after this Unix time")


@router.get("/datasets/{name}/{version}", response_model=AnalysisReport)
async def dataset_profile(
    name: str, version: str, settings: SettingsDep, project: ProjectDep, refresh: bool = False
) -> dict[str, Any]:
    """The profile of a dataset version of the request's project (computed once, then read
    back), with chart links."""
    return _with_chart_urls(await profile_on_cluster(settings, f"{name}@{version}", refresh, project))


@router.post("/drift", response_model=AnalysisReport)
async def drift(body: DriftRequest, settings: SettingsDep, project: ProjectDep, scope: ModelScopeDep) -> dict[str, Any]:
    """PSI of recent inputs' features and predicted classes against the reference dataset; stored,
    and recorded as the model's drift scores (what its drift alerts follow)."""
    scope.check(body.model)
    if body.split not in SPLITS:
        raise InvalidArgument(f"Unknown split {body.split!r}; use one of {list(SPLITS)}")
    report = await drift_on_cluster(
        settings, body.model, body.version, body.dataset, body.split, body.limit, body.since, project
    )
    return _with_chart_urls(report)


@router.get(
    "/charts/{key:path}",
    response_class=Response,
    responses={
        200: {
            "description": "the chart",
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in sorted(set(CHART_TYPES.values()))
            },
        }
    },
)
def chart(key: str, storage: StorageDep, project: ProjectDep, scope: ModelScopeDep) -> Response:
    """A chart of a report of the request's project (a dataset profile's, or a drift report's of
    one of its models); another project's is not found."""
    owner, model = chart_owner(key)
    if (owner != project) if model is None else not scope.owns(model):
        raise NotFound(f"Chart {key!r} not found")
    data, media_type = read_chart(storage, key)
    # An SVG opened on its own runs in this origin: it may show, never script or fetch.
    return Response(
        data,
        media_type=media_type,
        headers={
            "Cache-Control": "max-age=3600",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        },
    )


def _with_chart_urls(report: dict[str, Any]) -> dict[str, Any]:
    report["chart_urls"] = {name: f"/v1/analysis/charts/{key}" for name, key in report.get("charts", {}).items()}
    return report
