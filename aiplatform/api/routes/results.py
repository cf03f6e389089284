"""The result store: past predictions, and their inputs when they were kept."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from aiplatform.api.deps import ResultsDep, StorageDep
from aiplatform.api.schemas.results import ResultList, ResultPublic
from aiplatform.errors import AIPError, InvalidArgument, NotFound
from aiplatform.results.export import MEDIA_TYPES, check_range, result_tables, stream
from aiplatform.results.preview import input_preview
from aiplatform.results.store import PredictionRecord, next_cursor
from aiplatform.storage import Storage

router = APIRouter(prefix="/v1/results", tags=["results"])


MAX_PREVIEWS = 100


@router.get("", response_model=ResultList, response_model_exclude_unset=True)
def list_results(
    results: ResultsDep,
    storage: StorageDep,
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
        model=model, version=version, since=since, until=until, before=before, limit=limit, label=label
    )
    rows = [r.to_dict() for r in records]
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
    model: str | None = Query(None, max_length=200),
    since: float | None = None,
    until: float | None = None,
    format: Literal["csv", "parquet"] = "parquet",
) -> ExportResponse:
    """Every result in [since, until) of a model (or all), archived or live, as one parquet or
    CSV file, streamed."""
    check_range(since, until)
    tables = result_tables(results, storage, model=model, since=since, until=until)
    name = f"results-{re.sub(r'[^A-Za-z0-9._-]', '_', model or 'all')[:100]}.{format}"  # a header-safe name
    return ExportResponse(
        stream(tables, format),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{result_id}", response_model=ResultPublic, response_model_exclude_unset=True)
def get_result(
    result_id: str,
    results: ResultsDep,
    storage: StorageDep,
    preview: bool = Query(False, description="with its input, at most 224 pixels a side"),
) -> dict[str, Any]:
    record = results.get(result_id)
    return {**record.to_dict(), **({"preview": kept_input_preview(storage, record, size=224)} if preview else {})}


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
def get_result_input(result_id: str, results: ResultsDep, storage: StorageDep) -> Response:
    """The raw input of a prediction, when inputs are kept (``AIP_SERVE_STORE_INPUTS``)."""
    record = results.get(result_id)
    if not record.input_uri or not storage.exists(record.input_uri):
        raise NotFound(f"The input of result {result_id!r} was not kept")
    return Response(
        storage.get_bytes(record.input_uri),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="input-{result_id}"'},
    )
