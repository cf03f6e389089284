"""Reading prediction requests in the gateway: multipart uploads and JSON bodies, turned into a
model's inputs by its kind, with large bodies handled off the event loop.

This is where an upload is received (the seed's "file manager"): the file's name and bytes are
taken from the ``file`` field, sized, and handed to the model's kind to decode.
"""

from __future__ import annotations

from typing import Any, Optional

from starlette.requests import Request

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.kinds import ModelKind
from aiplatform.kinds.limits import MAX_UPLOAD_BYTES, RequestLimits, off_loop_if_large
from aiplatform.serving.limits import parse_json
from aiplatform.serving.oip_binary import HEADER_LENGTH, attach_binary_inputs, split_body


async def uploaded_file(request: Request) -> Optional[tuple[Optional[str], bytes]]:
    """(file name, bytes) of a multipart upload's ``file`` field; None for other bodies."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return None
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidArgument("multipart upload needs a 'file' field")
    return upload.filename, await upload.read()


async def read_input(request: Request, kind: ModelKind, limits: RequestLimits) -> tuple[bytes, Any]:
    """A v1 request's raw bytes and the one model input they hold: an uploaded file, or a JSON
    body (``{"image_b64": ...}``, ``{"array": ...}``, ``{"text": ...}`` as the kind takes)."""
    declared = request.headers.get("content-length") or "0"
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES * 2:
        raise TooLarge(f"Request body is {declared} bytes; the limit is {MAX_UPLOAD_BYTES}")
    upload = await uploaded_file(request)
    if upload is not None:
        filename, data = upload
        return data, await off_loop_if_large(len(data), kind.from_upload, filename, data, limits)
    body = await request.body()
    return body, await off_loop_if_large(len(body), lambda: kind.from_json(parse_json(body), limits))


async def read_infer_request(request: Request) -> tuple[bytes, Any]:
    """An Open Inference Protocol infer request's raw bytes and body, JSON or with the binary tensor
    data extension (its tensors decoded into each input's ``data``)."""
    raw = await request.body()
    header_length = request.headers.get(HEADER_LENGTH)

    def parse() -> Any:
        body, binary = split_body(raw, header_length)
        return attach_binary_inputs(body, binary)

    return raw, await off_loop_if_large(len(raw), parse)
