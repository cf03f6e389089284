"""How much one prediction request may ask of the platform, checked before the work is done.

A request body is capped by the HTTP layer (``aiplatform.api.limits``); inside it, the number of
inputs, the characters of a text, the chunks a document becomes, the pixels of an image and the
shape of the JSON are capped here, each with a message that names the limit (413 for size).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.settings import Settings

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""One uploaded file, base64 image or text document."""
MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")
OFFLOAD_BYTES = 64 * 1024
"""Bodies larger than this are parsed and decoded in a worker thread, off the event loop."""


@dataclass(frozen=True)
class RequestLimits:
    """The per-request caps a gateway enforces (from ``Settings``)."""

    max_rows: int = 256
    max_text_chars: int = 1_000_000
    max_image_pixels: int = 50_000_000
    max_chunks: int = 256
    """Windows of one request's texts together (a document of ``max_tokens`` x this many tokens)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "RequestLimits":
        return cls(max_rows=settings.max_request_rows, max_text_chars=settings.max_text_chars,
                   max_image_pixels=settings.max_image_pixels)

    def check_rows(self, rows: int, what: str = "The request") -> None:
        if rows > self.max_rows:
            raise TooLarge(f"{what} has {rows} inputs; the limit is {self.max_rows} per request")

    def check_text_chars(self, text: str, what: str) -> None:
        if len(text) > self.max_text_chars:
            raise TooLarge(f"{what} has {len(text):,} characters; the limit is {self.max_text_chars:,}")


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; empty, malformed and too deeply nested bodies are a 400."""
    if not raw:
        raise InvalidArgument("Request body is empty")
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidArgument("Request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidArgument(f"Request body is not valid JSON: {exc}") from exc


def check_request_id(value: Any) -> Optional[str]:
    """A client's v2 request ``id``: kept with its results, so it must be a short plain token."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgument("'id' must be a non-empty string")
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(f"'id' is {len(value)} characters; the limit is {MAX_REQUEST_ID_CHARS}")
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidArgument("'id' may hold only letters, digits and . _ : -")
    return value
