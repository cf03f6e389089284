"""Batch inference: upload an input, then score it (a dataset split, the upload, or a URI) with a
model version as a job of the task queue (template ``batch-inference``), follow it, download its
Parquet output.

Every route acts in the request's project: an upload is marked as its project's, a job is a task
of the project scoring one of its models over one of its uploads (``check_batch_job``, which
``POST /v1/tasks`` runs too for a ``batch-inference`` task), listings show its jobs, and another
project's job, upload or model is a 404 worded as for one that does not exist. A new job records
the caller as its ``created_by``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field

from aiplatform.access import DEFAULT_PROJECT
from aiplatform.api.deps import CreatorDep, ProjectDep, RegistryDep, SettingsDep, StorageDep, TasksDep
from aiplatform.api.schemas.batch import BatchInputPublic, BatchJobDetail, BatchJobList, BatchJobLogs, BatchJobPublic
from aiplatform.api.scope import ModelScope, ModelScopeDep
from aiplatform.batch.checks import check_batch
from aiplatform.batch.inputs import BatchInputs
from aiplatform.batch.outputs import BatchOutputs
from aiplatform.batch.params import BatchParams
from aiplatform.batch.template import BATCH_INFERENCE
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.limits import MAX_REQUEST_BYTES
from aiplatform.registry import RegistryAPI
from aiplatform.registry.refs import parse_model_ref
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import MAX_PRIORITY, MIN_PRIORITY, Task
from aiplatform.tasks.queue.store import MAX_LIST_LIMIT

router = APIRouter(prefix="/v1", tags=["batch"])
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
MAX_LOG_LINES = 5000
PARQUET = "application/vnd.apache.parquet"
SPOOL_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
MAX_INPUT_BYTES = MAX_REQUEST_BYTES
"""An upload's limit: what the API's body limit lets through (a larger input is a dataset or a URI)."""


class BatchJobCreate(BatchParams):
    """A new batch job: the job's parameters (``input`` names exactly one of a dataset split, an
    upload or a URI) and how it is queued."""

    priority: int = Field(0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="higher starts first")
    start: bool = Field(True, description="queue it at once")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="a repeated key returns the first job"
    )


QUEUING = {"priority", "start", "idempotency_key"}


def batch_job(tasks: TaskManager, job_id: str, project: str) -> Task:
    """The task ``job_id`` if it is a batch job of ``project`` (any other task is not one: 404)."""
    try:
        task = tasks.get(job_id)
    except NotFound:
        task = None
    if (
        task is None
        or task.template != BATCH_INFERENCE
        or (getattr(task, "project", None) or DEFAULT_PROJECT) != project
    ):
        raise NotFound(f"Batch job {job_id!r} not found")
    return task


async def check_batch_job(
    params: BatchParams, scope: ModelScope, storage: Storage, registry: RegistryAPI, settings: Settings
) -> None:
    """Every check a new batch job passes, whichever route creates it: its model is the
    project's and its upload was uploaded in the project (else 404 as for none), then
    ``check_batch`` (the version exists, the input fits it and the row limit)."""
    scope.check(parse_model_ref(params.model)[0])
    upload = params.input.upload
    if upload is not None and not await run_in_threadpool(BatchInputs(storage).uploaded_by, upload, scope.project):
        raise NotFound(f"Batch input {upload!r} not found; upload the file first")
    await run_in_threadpool(
        lambda: check_batch(
            params, storage, registry, max_output_rows=settings.batch_max_output_rows, project=scope.project
        )
    )


def job_view(task: Task, storage: Storage) -> dict[str, Any]:
    """The task as a batch job: its record and, once written, its summary."""
    summary = BatchOutputs(storage).summary(task.id) if task.state in FINISHED else None
    return {**task.to_dict(), "summary": summary}


@router.post(
    "/batch-inputs",
    status_code=201,
    response_model=BatchInputPublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_batch_input(request: Request, storage: StorageDep, project: ProjectDep) -> dict[str, Any]:
    """A multipart form with one ``file``: a CSV of table rows (a header, the model's features,
    optionally its label column), a ZIP of images or JSON lines of texts (``{"text": ...}``).
    201 with its ``id``, the ``upload`` a job's ``input`` names; its format and rows are checked
    now, so an empty or unreadable file is a 400 here, not a failed job later."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidArgument("Send the input as multipart/form-data with a 'file' field (a .csv, .zip or .jsonl)")
    form = await request.form(max_files=1, max_fields=1)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidArgument("The upload needs a 'file' field: a .csv, .zip or .jsonl file")
    try:
        stored = await run_in_threadpool(
            BatchInputs(storage).save,
            upload.filename or "input",
            upload.file,
            max_bytes=MAX_INPUT_BYTES,
            project=project,
        )
    finally:
        await upload.close()
    return stored.to_dict()


@router.post("/batch-jobs", status_code=201, response_model=BatchJobPublic)
async def create_batch_job(
    body: BatchJobCreate,
    tasks: TasksDep,
    registry: RegistryDep,
    storage: StorageDep,
    settings: SettingsDep,
    project: ProjectDep,
    scope: ModelScopeDep,
    creator: CreatorDep,
    idempotency_key: str | None = Header(None, max_length=200),
) -> dict[str, Any]:
    """Queue (``start``, the default) a job scoring ``input`` with ``model`` (``NAME``,
    ``NAME@VERSION`` or ``NAME@ALIAS``). Checked now, before anything is queued: the model
    version exists (404), the dataset split or upload exists and has rows (404 / 400), no more
    rows than ``AIP_BATCH_MAX_OUTPUT_ROWS`` would be scored (413), its first rows decode as the
    model's inputs (400 naming the first bad row), a URI passes the source policy (400)."""
    params = body.model_dump(mode="json", exclude=QUEUING)
    await check_batch_job(BatchParams.model_validate(params), scope, storage, registry, settings)
    task = await tasks.create_async(
        BATCH_INFERENCE,
        params,
        priority=body.priority,
        start=body.start,
        idempotency_key=body.idempotency_key or idempotency_key,
        project=project,
    )
    task = await run_in_threadpool(tasks.record_creator, task, creator)  # a repeated key: the first job as it was
    return job_view(task, storage)


@router.get("/batch-jobs", response_model=BatchJobList)
def list_batch_jobs(
    tasks: TasksDep,
    project: ProjectDep,
    state: list[str] = Query(default_factory=list, description="repeat for several states"),
    since: float | None = Query(None, description="created at or after (unix seconds)"),
    until: float | None = Query(None, description="created before (unix seconds)"),
    limit: int = Query(100, ge=1, le=MAX_LIST_LIMIT),
    before: str | None = Query(None, max_length=64, description="the next page: a page's next_before"),
) -> dict[str, Any]:
    """Batch jobs newest first, each with its progress; ``next_before`` (null on the last page)
    goes in ``before`` for the next."""
    found = tasks.list_tasks(
        states=state,
        template=BATCH_INFERENCE,
        since=since,
        until=until,
        limit=limit,
        before=before,
        project=project,
    )
    waiting = tasks.why_waiting(found)
    return {
        "jobs": [{**t.to_dict(), "summary": None, "waiting": waiting.get(t.id)} for t in found],
        "next_before": found[-1].id if len(found) == limit else None,
    }


@router.get("/batch-jobs/{job_id}", response_model=BatchJobDetail)
def get_batch_job(job_id: str, tasks: TasksDep, storage: StorageDep, project: ProjectDep) -> dict[str, Any]:
    """The job, its progress, and once finished its summary (rows, rows/s, the model version,
    and where the input had labels the evaluation: accuracy, macro-F1, confusion matrix)."""
    task = batch_job(tasks, job_id, project)
    return {
        **job_view(task, storage),
        "waiting": tasks.why_waiting([task]).get(task.id),
        "ray_dashboard_url": tasks.dashboard_url(task),
    }


@router.get(
    "/batch-jobs/{job_id}/output",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "every row the job scored, one Parquet file",
            "content": {PARQUET: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def batch_job_output(job_id: str, tasks: TasksDep, storage: StorageDep, project: ProjectDep) -> StreamingResponse:
    """The rows scored so far (all of them once the job has succeeded) as one Parquet file:
    each input's id or path, label, probability, probabilities, model version and true label.
    409 while a job has written nothing yet; 404 when a finished one wrote nothing."""
    task = batch_job(tasks, job_id, project)
    outputs = BatchOutputs(storage)
    if not outputs.parts(task.id):
        if task.state in FINISHED:
            raise NotFound(f"Batch job {job_id!r} wrote no output (it is {task.state})")
        raise Conflict(f"Batch job {job_id!r} has written no output yet (it is {task.state}); try again later")
    spool, size = parquet_file(outputs, task.id)
    return StreamingResponse(
        chunks_of(spool),
        media_type=PARQUET,
        headers={"Content-Disposition": f'attachment; filename="batch-{task.id}.parquet"', "Content-Length": str(size)},
    )


def parquet_file(outputs: BatchOutputs, task_id: str) -> tuple[BinaryIO, int]:
    """The job's parts joined into one Parquet file, a part at a time (in memory up to
    ``SPOOL_BYTES``, on local disk past it); returns it rewound and its size."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed once sent: chunks_of)
    try:
        outputs.write_download(task_id, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, size  # type: ignore[return-value]


def chunks_of(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


@router.post("/batch-jobs/{job_id}/cancel", response_model=BatchJobPublic)
def cancel_batch_job(job_id: str, tasks: TasksDep, storage: StorageDep, project: ProjectDep) -> dict[str, Any]:
    """Cancel: a queued job never starts, a running one's Ray job is stopped (the parts it
    wrote stay, whole)."""
    batch_job(tasks, job_id, project)
    return job_view(tasks.cancel(job_id), storage)


@router.get("/batch-jobs/{job_id}/logs", response_model=BatchJobLogs)
def batch_job_logs(
    job_id: str, tasks: TasksDep, project: ProjectDep, tail: int = Query(MAX_LOG_LINES, ge=1, le=MAX_LOG_LINES)
) -> dict[str, Any]:
    batch_job(tasks, job_id, project)
    lines = tasks.logs(job_id).splitlines()
    return {"job_id": job_id, "logs": "\n".join(lines[-tail:]), "truncated": len(lines) > tail}
