"""Reading prediction requests off HTTP: multipart uploads and JSON bodies (v1), JSON or binary
tensor bodies (v2), large ones parsed off the event loop.

This is where an upload is received (the seed's "file manager"): the file's name and bytes are
taken from the ``file`` field and sized; the inference core hands them to the model's kind to
decode (``aiplatform.serving.dataplane``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.limits import MAX_UPLOAD_BYTES, off_loop_if_large
from aiplatform.serving.oip_binary import HEADER_LENGTH, attach_binary_inputs, split_body


async def uploaded_file(request: Request) -> tuple[str | None, bytes] | None:
    """(file name, bytes) of a multipart upload's ``file`` field; None for other bodies."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return None
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidArgument("multipart upload needs a 'file' field")
    return upload.filename, await upload.read()


@dataclass(slots=True)
class V1Input:
    """A v1 request's body as it came: an uploaded file (``upload``, with its name) or a JSON body.
    The model's kind decodes it (``aiplatform.serving.dataplane``)."""

    raw: bytes
    upload: bool
    filename: str | None = None


async def read_input(request: Request) -> V1Input:
    """A v1 request's body: the ``file`` field of a multipart upload, or the whole body (JSON such
    as ``{"image_b64": ...}``, ``{"array": ...}``, ``{"text": ...}`` as the model's kind takes)."""
    declared = request.headers.get("content-length") or "0"
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES * 2:
        raise TooLarge(f"Request body is {declared} bytes; the limit is {MAX_UPLOAD_BYTES}")
    upload = await uploaded_file(request)
    if upload is not None:
        return V1Input(upload[1], True, upload[0])
    return V1Input(await request.body(), False)


async def read_infer_request(request: Request) -> tuple[bytes, Any]:
    """An Open Inference Protocol infer request's raw bytes and body, JSON or with the binary tensor
    data extension (its tensors decoded into each input's ``data``)."""
    raw = await request.body()
    header_length = request.headers.get(HEADER_LENGTH)

    def parse() -> Any:
        body, binary = split_body(raw, header_length)
        return attach_binary_inputs(body, binary)

    return raw, await off_loop_if_large(len(raw), parse)
