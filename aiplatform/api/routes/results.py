"""The result store: past predictions, their inputs when they were kept, their true labels
(ground truth a caller gives afterwards) and the live quality those labels measure.

Every route answers of the request's project's models only (``ModelScopeDep``): a listing, an
export or a quality figure keeps their results, and a result, a label or a model of another
project is a 404 worded as for one that does not exist."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from aiplatform.api.deps import PrincipalDep, RegistryDep, ResultsDep, SettingsDep, StorageDep
from aiplatform.api.schemas.results import (
    FeedbackBatchResult,
    FeedbackChange,
    FeedbackCreate,
    FeedbackHistory,
    LabeledList,
    QualityList,
    ResultList,
    ResultPublic,
)
from aiplatform.api.scope import ModelScope, ModelScopeDep
from aiplatform.errors import AIPError, Conflict, InvalidArgument, NotFound
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.results.export import MEDIA_TYPES, check_range, result_tables, stream
from aiplatform.results.feedback import LabelRequest, package_classes, parse_label_csv, parse_label_rows
from aiplatform.results.preview import input_preview
from aiplatform.results.store import PredictionRecord, labeled_cursor, next_cursor
from aiplatform.storage import Storage

router = APIRouter(prefix="/v1/results", tags=["results"])


MAX_PREVIEWS = 100
CSV_TYPES = ("text/csv", "application/csv")
_CLASSES: dict[tuple[str, int, str], list[str]] = {}
_CLASSES_LOCK = threading.Lock()
MAX_CACHED_VERSIONS = 256


def version_classes(registry: RegistryClient, storage: Storage, model: str, version: int) -> list[str]:
    """A model version's class names, from its package (kept per package digest: versions are
    immutable). A version deleted since its prediction: Conflict, its classes are unknown."""
    try:
        registered = registry.get_version(model, version)
    except NotFound:
        raise Conflict(
            f"Model version (name={model}, version={version}) is no longer registered: the classes a label "
            "must be one of are unknown"
        ) from None
    key = (model, version, registered.sha256)
    classes = _CLASSES.get(key)
    if classes is None:
        classes = package_classes(storage.get_bytes(registered.package_key))
        with _CLASSES_LOCK:
            if len(_CLASSES) >= MAX_CACHED_VERSIONS:
                _CLASSES.clear()
            _CLASSES[key] = classes
    return classes


def give_labels(
    results: ResultClient,
    registry: RegistryClient,
    storage: Storage,
    requests: list[LabelRequest],
    by: str,
    scope: ModelScope,
) -> list[dict[str, Any]]:
    """Resolve every request's result, look up the classes of the versions they name, then store
    every label in one transaction (the store checks each label against its version's classes),
    each recorded as given ``by`` the caller (the principal's name: a user, a service, ``platform``).
    A result of a model outside ``scope`` is not found, as one that does not exist."""
    models = scope.models()
    targets = results.resolve_labels(requests, models)
    allowed = {
        (t.model, t.version): version_classes(registry, storage, t.model, t.version)
        for t in {(t.model, t.version): t for t in targets}.values()
    }
    return results.label(requests, allowed, by, models)


@router.get("", response_model=ResultList, response_model_exclude_unset=True)
def list_results(
    results: ResultsDep,
    storage: StorageDep,
    scope: ModelScopeDep,
    model: str | None = None,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    label: str | None = Query(None, max_length=200, description="the predicted label"),
    before: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
    previews: bool = Query(
        False,
        description=f"each result's input, small (at most {MAX_PREVIEWS} "
        "results; when inputs are kept: AIP_SERVE_STORE_INPUTS)",
    ),
) -> dict[str, Any]:
    """Newest first; ``next_cursor`` (null on the last page) goes in ``before`` for the next page."""
    check_range(since, until)
    if previews and limit > MAX_PREVIEWS:
        raise InvalidArgument(f"previews come with at most {MAX_PREVIEWS} results a page (limit={limit})")
    records = results.query(
        model=model if model is None else scope.check(model),
        version=version,
        since=since,
        until=until,
        before=before,
        limit=limit,
        label=label,
        models=scope.models() if model is None else None,
    )
    rows = [r.to_dict() for r in records]
    labels = results.feedback_of([r.id for r in records])
    for row in rows:
        if row["id"] in labels:
            row["feedback"] = labels[row["id"]]
    if previews:
        for row, record in zip(rows, records):
            row["preview"] = kept_input_preview(storage, record, size=48)
    return {"results": rows, "next_cursor": next_cursor(records) if len(records) == limit else None}


def kept_input_preview(storage: Storage, record: PredictionRecord, *, size: int) -> dict[str, Any]:
    """The record's kept input, small; or why there is none."""
    if not record.input_uri:
        return {"kind": "none", "text": "input not kept (AIP_SERVE_STORE_INPUTS=false)"}
    try:
        return input_preview(storage.get_bytes(record.input_uri), size=size)
    except AIPError:  # gone from storage (or unreadable there): the row still shows
        return {"kind": "none", "text": "input no longer in storage"}


class ExportResponse(StreamingResponse):
    """A streamed export; parquet unless CSV was asked for (the OpenAPI schema names both)."""

    media_type = MEDIA_TYPES["parquet"]


@router.get(
    "/export",
    response_class=ExportResponse,
    responses={
        200: {
            "description": "one parquet or CSV file of the results",
            "content": {
                MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
                MEDIA_TYPES["csv"]: {"schema": {"type": "string"}},
            },
        }
    },
)
def export_results(
    results: ResultsDep,
    storage: StorageDep,
    scope: ModelScopeDep,
    model: str | None = Query(None, max_length=200),
    since: float | None = None,
    until: float | None = None,
    format: Literal["csv", "parquet"] = "parquet",
) -> ExportResponse:
    """Every result in [since, until) of a model (or all), archived or live, as one parquet or
    CSV file, streamed; each row with the label given for it, if any (``true_label``,
    ``labeled_at``, ``labeled_by``)."""
    check_range(since, until)
    tables = result_tables(
        results,
        storage,
        model=model if model is None else scope.check(model),
        since=since,
        until=until,
        models=scope.models() if model is None else None,
    )
    name = f"results-{re.sub(r'[^A-Za-z0-9._-]', '_', model or 'all')[:100]}.{format}"  # a header-safe name
    return ExportResponse(
        stream(tables, format),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post(
    "/feedback",
    response_model=FeedbackBatchResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["label"],
                            "properties": {
                                "id": {"type": "string", "description": "a result id"},
                                "request_id": {"type": "string", "description": "a server request id"},
                                "client_request_id": {"type": "string", "description": "a v2 request's own id"},
                                "index": {"type": "integer", "description": "which input of a many-input request"},
                                "model": {"type": "string"},
                                "label": {"type": "string"},
                            },
                        },
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
        }
    },
)
async def label_results(
    request: Request,
    results: ResultsDep,
    registry: RegistryDep,
    storage: StorageDep,
    principal: PrincipalDep,
    scope: ModelScopeDep,
) -> dict[str, Any]:
    """Label many past predictions at once: a JSON list of ``{"id" | "request_id" [+ "index"] |
    "client_request_id" [+ "index", "model"], "label"}``, or the same columns as a CSV (the body,
    ``text/csv``, or a multipart ``file``). All are stored or none: the first bad row (an unknown
    result, a label that is not one of its version's classes, an id naming several results) is
    a 400 naming it (409 for a result retention archived). A v2 answer's ``parameters.request_id`` is its ``request_id``; the n-th input
    of a request with many is ``<request_id>-<n>``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidArgument("The upload needs a 'file' field: a CSV or JSON of labels")
        try:
            data = await upload.read()
        finally:
            await upload.close()
        as_csv = not (upload.filename or "").lower().endswith(".json")
    else:
        data, as_csv = await request.body(), kind in CSV_TYPES
    if as_csv:
        requests = parse_label_csv(data)
    else:
        try:
            items = json.loads(data)
        except RecursionError:
            raise InvalidArgument("The labels' JSON is nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InvalidArgument(f"The labels are not valid JSON (send text/csv for a CSV): {exc}") from None
        requests = parse_label_rows(items)
    try:
        changes = await run_in_threadpool(give_labels, results, registry, storage, requests, principal.name, scope)
    except NotFound as exc:  # a row of the batch names no result: the batch is bad input (400)
        raise InvalidArgument(exc.message) from None
    return {"labeled": len(changes), "changed": sum(c["changed"] for c in changes), "results": changes}


@router.get("/quality", response_model=QualityList)
def quality(
    results: ResultsDep,
    settings: SettingsDep,
    scope: ModelScopeDep,
    model: str | None = Query(None, max_length=200),
    version: int | None = None,
    since: float | None = Query(None, description="default: the quality window before until (AIP_QUALITY_WINDOW_S)"),
    until: float | None = None,
) -> dict[str, Any]:
    """Accuracy and macro-F1 per model version of the predictions made in [since, until) that
    were labeled, with how many were."""
    check_range(since, until)
    end = time.time() if until is None else until
    start = end - settings.quality_window_s if since is None else since
    figures = results.quality(
        model=model if model is None else scope.check(model),
        version=version,
        since=start,
        until=end,
        models=scope.models() if model is None else None,
    )
    return {"since": start, "until": end, "versions": [q.to_dict() for q in figures]}


@router.get("/labeled", response_model=LabeledList)
def labeled_predictions(
    results: ResultsDep,
    scope: ModelScopeDep,
    model: str = Query(..., max_length=200),
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    after: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """A model's labeled predictions made in [since, until), oldest first (what a retraining
    dataset takes); ``next_cursor`` (null on the last page) goes in ``after``."""
    check_range(since, until)
    page = results.labeled(
        model=scope.check(model), version=version, since=since, until=until, after=after, limit=limit
    )
    return {
        "predictions": [p.to_dict() for p in page],
        "next_cursor": labeled_cursor(page) if len(page) == limit else None,
    }


def owned_result(results: ResultClient, result_id: str, scope: ModelScope) -> PredictionRecord:
    """The result, when it is a prediction of the project's models; another's is not found."""
    record = results.get(result_id)
    if not scope.owns(record.model):
        raise NotFound(f"Result {result_id!r} not found")
    return record


@router.get("/{result_id}", response_model=ResultPublic, response_model_exclude_unset=True)
def get_result(
    result_id: str,
    results: ResultsDep,
    storage: StorageDep,
    scope: ModelScopeDep,
    preview: bool = Query(False, description="with its input, at most 224 pixels a side"),
) -> dict[str, Any]:
    record = owned_result(results, result_id, scope)
    labels = results.feedback_of([result_id])
    return {
        **record.to_dict(),
        **({"feedback": labels[result_id]} if result_id in labels else {}),
        **({"preview": kept_input_preview(storage, record, size=224)} if preview else {}),
    }


@router.post("/{result_id}/feedback", response_model=FeedbackChange)
def label_result(
    result_id: str,
    body: FeedbackCreate,
    results: ResultsDep,
    registry: RegistryDep,
    storage: StorageDep,
    principal: PrincipalDep,
    scope: ModelScopeDep,
) -> dict[str, Any]:
    """Give one past prediction its true label (one of its version's classes: 400 naming them
    otherwise); a later label replaces this one, both kept in its history. 404: no such result;
    409: retention archived it (only live results take labels)."""
    [change] = give_labels(
        results, registry, storage, [LabelRequest(body.label, id=result_id, row=0)], principal.name, scope
    )
    return change


@router.get("/{result_id}/feedback", response_model=FeedbackHistory)
def result_feedback(result_id: str, results: ResultsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """A result's current label and every label it was given (who, when, what it replaced)."""
    owned_result(results, result_id, scope)  # 404 for a result that does not exist, or another project's
    history = results.feedback_history(result_id)
    return {"id": result_id, "label": history[-1]["label"] if history else None, "history": history}


@router.get(
    "/{result_id}/input",
    response_class=Response,
    responses={
        200: {
            "description": "the input as it was sent",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def get_result_input(result_id: str, results: ResultsDep, storage: StorageDep, scope: ModelScopeDep) -> Response:
    """The raw input of a prediction, when inputs are kept (``AIP_SERVE_STORE_INPUTS``)."""
    record = owned_result(results, result_id, scope)
    if not record.input_uri or not storage.exists(record.input_uri):
        raise NotFound(f"The input of result {result_id!r} was not kept")
    return Response(
        storage.get_bytes(record.input_uri),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="input-{result_id}"'},
    )
