"""A prediction request's body parsed: JSON within its nesting, and a client's id of safe
characters. What a request may ask for (bytes, rows, characters, chunks, pixels) is in
``aiplatform.limits``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiplatform.errors import InvalidArgument
from aiplatform.limits import MAX_REQUEST_ID_CHARS

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")


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


def check_request_id(value: Any) -> str | None:
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
