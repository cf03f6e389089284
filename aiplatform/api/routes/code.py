"""Users' training code: upload a ZIP archive, kept by its sha256, that ``user-code`` tasks name.
An archive is kept in the request's project (``ProjectDep``); another project's is a 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from aiplatform.api.deps import ProjectDep, SettingsDep, StorageDep
from aiplatform.api.schemas.code import CodeArchiveContents, CodeArchivePublic
from aiplatform.code_archives import CodeArchives, require_users_code
from aiplatform.errors import InvalidArgument

router = APIRouter(prefix="/v1/code", tags=["code"])
LISTED_MEMBERS = 1000
ARCHIVE_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


@router.post(
    "",
    status_code=201,
    response_model=CodeArchivePublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the ZIP archive (application/zip is accepted too)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_code(
    request: Request, settings: SettingsDep, storage: StorageDep, project: ProjectDep
) -> dict[str, Any]:
    """The body is the archive itself (``Content-Type: application/zip``): the project folder
    zipped, packages at its root. 201 with its ``digest``, to name in a task's ``code``
    parameter; the same archive again gives the same digest."""
    require_users_code(settings, "POST /v1/code keeps code for user-code tasks")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ARCHIVE_TYPES:
        raise InvalidArgument(
            f"Send the code archive as the body with Content-Type application/zip (got {content_type or 'none'})"
        )
    archive = await run_in_threadpool(CodeArchives(storage, project).put, await request.body())
    return archive.to_dict()


@router.get("/{digest}", response_model=CodeArchiveContents)
def describe_code(digest: str, storage: StorageDep, project: ProjectDep) -> dict[str, Any]:
    """The archive's size and its files (the first 1000), e.g. to see what a task ran; listed once
    per digest (a plain ``def``: the first listing decompresses it, on a worker thread)."""
    archive, names = CodeArchives(storage, project).contents(digest)
    return {**archive.to_dict(), "members": names[:LISTED_MEMBERS], "truncated": len(names) > LISTED_MEMBERS}
