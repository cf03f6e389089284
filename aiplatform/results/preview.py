"""What a kept prediction input looked like, small enough for a table row: an image's thumbnail,
a text's first words, a table's first rows.

Inputs are untrusted uploads: images are decoded with the same guards as the model servers'
(PNG/JPEG only, pixels capped) and anything unreadable becomes a one-line description, never an
error, so one odd input cannot break a page of results.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

from aiplatform.errors import InvalidArgument
from aiplatform.imaging import read_image

SNIPPET_CHARS = 160
PREVIEW_MAX_PIXELS = 4_000_000
IMAGE_KEYS = ("image", "image_base64")


def input_preview(data: bytes, *, size: int = 56, snippet_chars: int = SNIPPET_CHARS) -> dict[str, Any]:
    """``{"kind": "image", "data_url": ...}`` (at most ``size`` pixels a side), ``{"kind": "text",
    "text": ...}`` (the first ``snippet_chars`` characters, ``truncated`` said), or ``{"kind":
    "binary", "text": "<n> bytes"}``."""
    if data.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        return _thumbnail(data, size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"kind": "binary", "text": f"{len(data):,} bytes"}
    image = _json_image(text)
    if image is not None:
        return _thumbnail(image, size)
    shown = " ".join(text.split()) if not text.lstrip().startswith(("{", "[")) else text.strip()
    return {"kind": "text", "text": shown[:snippet_chars], "truncated": len(shown) > snippet_chars}


def _thumbnail(data: bytes, size: int) -> dict[str, Any]:
    from PIL import Image

    try:
        pixels = read_image(data, "RGB", "the kept input", max_pixels=PREVIEW_MAX_PIXELS)
    except InvalidArgument as exc:
        return {"kind": "binary", "text": exc.message}
    image = Image.fromarray(pixels)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"kind": "image", "data_url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
            "width": int(pixels.shape[1]), "height": int(pixels.shape[0])}


def _json_image(text: str) -> "bytes | None":
    """A JSON body's base64 image (``{"image": "..."}``), if it holds one."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    value = next((body[k] for k in IMAGE_KEYS if isinstance(body, dict) and isinstance(body.get(k), str)), None)
    if value is None:
        return None
    try:
        return base64.b64decode(value.split(",", 1)[-1], validate=False)
    except (binascii.Error, ValueError):
        return None
