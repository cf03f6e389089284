"""What a kept prediction input looked like, small enough for a table row: an image's thumbnail,
a text's first words, a table's first rows.

The kinds say what their own inputs look like (``DatasetKind.input_preview``: the image kind
recognises PNG/JPEG bytes and the JSON bodies it decodes); anything no kind claims is shown as the
start of its text, or described. Inputs are untrusted uploads: a kind decodes them with the same
guards as the model servers, and anything unreadable becomes a one-line description, never an
error, so one odd input cannot break a page of results.
"""

from __future__ import annotations

from typing import Any

from aiplatform.kinds import KINDS, kind_class

SNIPPET_CHARS = 160
SNIPPET, BINARY = "text", "binary"
"""The previews' ``kind`` when no model kind claims an input (the UI's names)."""


def input_preview(data: bytes, *, size: int = 56, snippet_chars: int = SNIPPET_CHARS) -> dict[str, Any]:
    """A kind's own preview (``{"kind": "image", "data_url": ...}``, at most ``size`` pixels a
    side), else ``{"kind": "text", "text": ...}`` (the first ``snippet_chars`` characters,
    ``truncated`` said), or ``{"kind": "binary", "text": "<n> bytes"}``."""
    for name in KINDS:
        preview = kind_class(name).input_preview(data, size)
        if preview is not None:
            return preview
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"kind": BINARY, "text": f"{len(data):,} bytes"}
    shown = " ".join(text.split()) if not text.lstrip().startswith(("{", "[")) else text.strip()
    return {"kind": SNIPPET, "text": shown[:snippet_chars], "truncated": len(shown) > snippet_chars}
