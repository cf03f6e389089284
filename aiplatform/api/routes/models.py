"""Models in the registry: versions, metrics, lineage, aliases, promote, rollback, canary and
traffic splits, download.

A request on one model acts in the model's own project (the access guard,
``aiplatform.api.security``, found it from the name and refused a caller with no role there with a
404); the listing shows the request's project's models only, and an import claims a new name for
the request's project."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from aiplatform.api.deps import (
    CreatorDep,
    DatasetsDep,
    ImportSlotsDep,
    ProjectDep,
    RegistryDep,
    SettingsDep,
    StorageDep,
    WarmDep,
)
from aiplatform.api.schemas.models import (
    AliasHistory,
    AliasMove,
    CompressionPublic,
    Lineage,
    ModelDetail,
    ModelList,
    ModelVersionPublic,
    TrafficSplitPublic,
)
from aiplatform.compression.compressor import CompressionReport
from aiplatform.compression.service import compress_on_cluster
from aiplatform.errors import IntegrityError, InvalidArgument
from aiplatform.kinds import KINDS
from aiplatform.loops.actor import loop_of_version
from aiplatform.model_import import TestSplit, import_onnx
from aiplatform.serving.deployer import (
    DEFAULT_TOLERANCE,
    PRODUCTION,
    deploy,
    describe_split,
    rollback,
    set_canary,
)

router = APIRouter(prefix="/v1/models", tags=["models"])


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(..., ge=1)
    alias: str = Field(PRODUCTION, description="production runs the accuracy gate and warms the servers")
    force: bool = Field(False, description="skip the accuracy gate")
    tolerance: float = Field(
        DEFAULT_TOLERANCE,
        ge=0,
        le=1,
        description="test accuracy the new production version may lose against the current one",
    )


class CompressionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, description="the version to compress (default: latest)")
    alias: str | None = Field(None, description="or the version an alias points at")
    method: str = Field(..., description="int8 | fp16 | prune:AMOUNT (fraction of weights zeroed)")
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="test accuracy the new version may lose (0.01 = one point); "
        "default from AIP_COMPRESSION_MAX_ACCURACY_DROP",
    )


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Canary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(..., ge=1, description="the version that gets a share of the default route")
    weight: float = Field(10.0, description="its percent of the traffic, 0 < weight < 100 (production gets the rest)")


class TrafficSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[int, float] = Field(
        ..., description='percent by version, e.g. {"3": 90, "4": 10}; {} clears the split'
    )


def _split(name: str, weights: dict[int, float], message: bool = False, set_by: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "weights": {str(v): w for v, w in weights.items()}}
    if weights and set_by is not None:
        body["set_by"] = set_by
    return {**body, "message": describe_split(name, weights)} if message else body


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep, project: ProjectDep) -> dict[str, Any]:
    """The request's project's models."""
    return {"models": registry.list_models(project)}


@router.get("/{name}", response_model=ModelDetail)
def get_model(
    name: str,
    registry: RegistryDep,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1, le=2**62, description="versions older than this one"),
) -> dict[str, Any]:
    """The model with a page of its versions, newest first; ``next_before`` (null on the last
    page) goes in ``before`` for the next."""
    versions = registry.list_versions(name, limit=limit, before=before)
    return {
        "name": name,
        "aliases": registry.aliases(name),
        "traffic": {str(v): w for v, w in registry.get_traffic(name).items()},
        "versions": [v.to_dict() for v in versions],
        "next_before": versions[-1].version if len(versions) == limit else None,
    }


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def get_version(name: str, version: int, registry: RegistryDep) -> dict[str, Any]:
    return registry.get_version(name, version).to_dict()


LoopRunOf = Callable[[str, int], "dict[str, Any] | None"]


def get_loop_run_of(request: Request) -> LoopRunOf:
    """How a lineage finds the retraining run that made a version (``aiplatform.loops.actor.loop_of_version``);
    an app without the platform installed (a registry on its own) has no loops to ask."""
    platform = getattr(request.app.state, "platform", None)
    if platform is None:
        return lambda name, version: None
    return functools.partial(loop_of_version, platform.settings)


@router.get("/{name}/versions/{version}/lineage", response_model=Lineage)
def get_lineage(
    name: str, version: int, registry: RegistryDep, loop_run: Annotated[LoopRunOf, Depends(get_loop_run_of)]
) -> dict[str, Any]:
    """The version's lineage and its ancestors' (parent versions, e.g. of compressed models); a
    version a retraining loop made has the run under ``loop``: the alert that started it, the
    decision, the run's links."""
    chain = []
    current: int | None = version
    while current is not None and len(chain) < 100:
        entry = registry.get_version(name, current)
        chain.append({"version": entry.version, **entry.lineage})
        parent = entry.lineage.get("parent")
        current = int(parent) if isinstance(parent, (int, str)) and str(parent).isdigit() else None
    loop = loop_run(name, version)
    if loop is not None:
        chain[0]["loop"] = loop
    return {"name": name, "version": version, "lineage": chain}


@router.get(
    "/{name}/versions/{version}/package",
    response_class=Response,
    responses={
        200: {
            "description": "the package ZIP",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def download_package(name: str, version: int, registry: RegistryDep, storage: StorageDep) -> Response:
    """The version's ZIP, checked against the registry's sha256 before a byte is sent."""
    entry = registry.get_version(name, version)
    data = storage.get_bytes(entry.package_key)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(
            f"Package of model version (name={name}, version={version}) does not match its registered sha256"
        )
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-v{version}.zip"',
            "X-Checksum-Sha256": entry.sha256,
        },
    )


@router.post("/{name}/promote", response_model=AliasMove, response_model_exclude_unset=True)
def promote(name: str, body: Promotion, registry: RegistryDep, warm: WarmDep, creator: CreatorDep) -> dict[str, Any]:
    """Point an alias at a version; for ``production``: gate, warm on the servers, then move.
    The move records who made it (``by``, also in the alias's history)."""
    if body.alias == PRODUCTION:
        deployment = deploy(
            registry, name, body.version, warm=warm, force=body.force, tolerance=body.tolerance, by=creator
        )
        return {**deployment.__dict__, "alias": PRODUCTION, "message": deployment.describe()}
    target = registry.set_alias(name, body.alias, body.version, by=creator)
    moved = {
        "name": name,
        "version": target.version,
        "alias": body.alias,
        "message": f"{body.alias} -> {name} v{target.version}",
    }
    return moved if creator is None else {**moved, "by": creator}


@router.post("/{name}/rollback", response_model=AliasMove)
def rollback_production(
    name: str, registry: RegistryDep, warm: WarmDep, creator: CreatorDep, body: Rollback | None = None
) -> dict[str, Any]:
    deployment = rollback(registry, name, warm=warm, by=creator)
    return {**deployment.__dict__, "alias": PRODUCTION, "message": deployment.describe()}


@router.get("/{name}/traffic", response_model=TrafficSplitPublic, response_model_exclude_unset=True)
def get_traffic(name: str, registry: RegistryDep) -> dict[str, Any]:
    """The canary split of the default route (empty: all traffic follows ``production``) and
    who set it."""
    return _split(name, registry.get_traffic(name), set_by=registry.traffic_set_by(name))


@router.put("/{name}/traffic", response_model=TrafficSplitPublic, response_model_exclude_unset=True)
def set_traffic(name: str, body: TrafficSplit, registry: RegistryDep, creator: CreatorDep) -> dict[str, Any]:
    """Set the split as given (no warming); every gateway replica follows within the router's
    cache TTL, without a redeploy."""
    return _split(name, registry.set_traffic(name, body.weights, by=creator), set_by=creator)


@router.post("/{name}/canary", response_model=TrafficSplitPublic)
def start_canary(name: str, body: Canary, registry: RegistryDep, warm: WarmDep, creator: CreatorDep) -> dict[str, Any]:
    """Warm ``version`` on the servers, then send it ``weight`` percent of the default route."""
    weights = set_canary(registry, name, body.version, body.weight, warm=warm, by=creator)
    return _split(name, weights, True, set_by=creator)


@router.delete("/{name}/canary", response_model=TrafficSplitPublic)
def end_canary(name: str, registry: RegistryDep, warm: WarmDep, creator: CreatorDep) -> dict[str, Any]:
    """All of the default route back to ``production``."""
    return _split(name, set_canary(registry, name, None, 0.0, warm=warm, by=creator), True)


@router.post("/{name}/compress", status_code=201, response_model=CompressionPublic)
async def compress_model(
    name: str, body: CompressionRequest, settings: SettingsDep, creator: CreatorDep
) -> JSONResponse:
    """Compress a version into a new one, with its report. 201: registered; 409: refused by the
    accuracy gate (the report says by how much; nothing is registered)."""
    if body.version is not None and body.alias is not None:
        raise InvalidArgument("Give version or alias, not both")
    ref = body.version or body.alias or "latest"
    report = await compress_on_cluster(settings, name, ref, body.method, body.max_accuracy_drop, creator)
    if not report["registered"]:
        return JSONResponse(
            status_code=409, content={"error": "conflict", "message": report["refused"], "report": report}
        )
    return JSONResponse(
        status_code=201,
        content={
            "report": report,
            "message": " / ".join(line.strip() for line in CompressionReport(**report).summary_lines()[:2]),
        },
    )


@router.post("/{name}/import", status_code=201, response_model=ModelVersionPublic)
async def import_model(
    name: str,
    request: Request,
    registry: RegistryDep,
    storage: StorageDep,
    datasets: DatasetsDep,
    settings: SettingsDep,
    slots: ImportSlotsDep,
    project: ProjectDep,
    creator: CreatorDep,
) -> dict[str, Any]:
    """A model trained elsewhere, as a multipart form: ``file`` (the ONNX graph), ``kind`` (a
    registered kind, e.g. ``image`` or ``tabular``; default: the ``evaluate_on`` dataset's kind),
    ``labels`` (comma-separated or a JSON list), optional ``preprocessing`` (JSON: scale, mean, std for images; ``features`` for tables), ``scores``
    (``logits`` or ``probabilities``) and ``evaluate_on`` (a built dataset version, ``name@version``,
    whose test split the model is evaluated on, as a trained one is). 201: the new version; 503
    (Retry-After) when ``max_concurrent_imports`` imports are being checked already."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidArgument("Send the model as multipart/form-data with a 'file' field (the .onnx file)")
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidArgument("The import needs a 'file' field: the .onnx file")
    fields = {key: form.get(key) for key in ("kind", "labels", "preprocessing", "scores", "evaluate_on")}
    if any(value is not None and not isinstance(value, str) for value in fields.values()):
        raise InvalidArgument("kind, labels, preprocessing, scores and evaluate_on are text fields, not files")
    data = await upload.read()

    def check_and_register() -> Any:
        if registry.model_project(name) != project:
            registry.claim_model(name, project)  # a new name: this project's (another's: 409)
        ours = datasets.in_project(project)  # evaluate_on names a dataset of the model's project
        dataset = ours.get_ref(fields["evaluate_on"].strip()) if fields["evaluate_on"] else None
        kind = fields["kind"] or (dataset.kind if dataset is not None else None)
        if not kind:  # the graph alone does not say what its input is
            raise InvalidArgument(
                f"The import needs a 'kind' field (one of {sorted(KINDS)}), or 'evaluate_on' "
                "naming a dataset of the model's kind"
            )
        return import_onnx(
            data,
            name=name,
            kind=kind,
            labels=parse_labels(fields["labels"] or ""),
            preprocessing=parse_json_object(fields["preprocessing"], "preprocessing"),
            scores=fields["scores"] or "logits",
            filename=upload.filename,
            storage=storage,
            registry=registry,
            test_split=TestSplit.of(ours, dataset.ref) if dataset is not None else None,
            max_rows=settings.max_request_rows,
            created_by=creator,
            run_timeout_s=settings.serve_onnx_run_timeout_s,
        )

    with slots.held():
        return (await run_in_threadpool(check_and_register)).to_dict()


def parse_labels(text: str) -> list[str]:
    """``a,b,c`` or ``["a", "b", "c"]``."""
    if text.strip().startswith("["):
        labels = parse_json_object(text, "labels", list)
        return [str(label) for label in labels]
    return [label for label in (part.strip() for part in text.split(",")) if label]


def parse_json_object(text: str | None, field: str, expected: type = dict) -> Any:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"{field} is not valid JSON") from None
    if not isinstance(value, expected):
        raise InvalidArgument(f"{field} must be a JSON {'object' if expected is dict else 'list'}")
    return value


@router.get("/{name}/aliases/{alias}/history", response_model=AliasHistory)
def alias_history(
    name: str, alias: str, registry: RegistryDep, limit: int = Query(50, ge=1, le=1000)
) -> dict[str, Any]:
    """The alias's moves, newest first: to which version, from which, when, by whom."""
    registry.list_versions(name, limit=1)  # an unknown model is a 404
    return {"name": name, "alias": alias, "history": registry.alias_history(name, alias, limit=limit)}


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: str, alias: str, registry: RegistryDep, creator: CreatorDep) -> Response:
    registry.delete_alias(name, alias, by=creator)
    return Response(status_code=204)
