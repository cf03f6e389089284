"""How much one request may ask of the platform, each limit in one place and checked before the
work is done: the bytes of a request (an HTTP body, a gRPC message), an upload, a client's request
id, and inside a prediction request the number of inputs, the characters of a text (as sent and
once normalised), the chunks a document becomes, the pixels of an image and the values a
request's images decode to, each refused with a message that names the limit (413 for size).
The HTTP body limit is enforced by ``aiplatform.api.body_limit``, JSON parsing and request ids by
``aiplatform.serving.parsing``, the rest by the model kinds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiplatform.errors import TooLarge
from aiplatform.settings import Settings

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""No request to the platform beyond this: an HTTP body (the API's body limit) or a gRPC message
(Serve's gRPC proxy, whose own default is 2 GiB, read before any caller is checked)."""
MAX_REQUEST_ID_CHARS = 128
"""A client's v2 request ``id``, kept with its results."""
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""One uploaded file, base64 image or text document."""
MAX_DECODED_VALUES = 64 * 1024 * 1024
"""Pixel values (rows x height x width x channels, at the model's input size) one request's image
tensors may decode to: 64 MiB of uint8, as many values as one tensor may carry. A few values per
row are resized to the model's input (up to 4096 x 4096 x 3), so the size sent says nothing of the
work; one input of the largest size fits."""
OFFLOAD_BYTES = 64 * 1024
"""Inputs larger than this are parsed, decoded or tokenized in a worker thread, off the event loop."""
T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """The per-request caps a gateway enforces (from ``Settings``)."""

    max_rows: int = 256
    max_text_chars: int = 1_000_000
    max_image_pixels: int = 50_000_000
    max_chunks: int = 256
    """Windows of one request's texts together (a document of ``max_tokens`` x this many tokens)."""
    max_decoded_values: int = MAX_DECODED_VALUES

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            max_rows=settings.max_request_rows,
            max_text_chars=settings.max_text_chars,
            max_image_pixels=settings.max_image_pixels,
        )

    def check_rows(self, rows: int, what: str = "The request") -> None:
        if rows > self.max_rows:
            raise TooLarge(f"{what} has {rows} inputs; the limit is {self.max_rows} per request")

    def check_text_chars(self, text: str, what: str) -> None:
        if len(text) > self.max_text_chars:
            raise TooLarge(f"{what} has {len(text):,} characters; the limit is {self.max_text_chars:,}")

    def check_decoded(self, rows: int, shape: tuple[int, ...], what: str = "The input tensor") -> None:
        """Refuse, before any decoding, ``rows`` inputs that would each become an array of
        ``shape`` (a model input) past ``max_decoded_values`` together."""
        values = rows * math.prod(shape)
        if values > self.max_decoded_values:
            size = " x ".join(str(d) for d in shape)
            raise TooLarge(
                f"{what}'s {rows} image(s) decode to {values:,} values at this model's input size "
                f"({size}); the limit is {self.max_decoded_values:,} per request: send fewer rows "
                "per request"
            )


async def off_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` in a worker thread when its input is large (parsing or decoding it
    would hold the event loop, and with it every other request, health checks included);
    small inputs are cheaper done in place."""
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)
