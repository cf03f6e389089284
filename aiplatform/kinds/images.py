"""Turning request payloads into model inputs, with errors that name the problem.

Image models take PNG/JPEG bytes (upload or base64 in JSON) of any size and mode, or nested
arrays of pixel values 0..255; everything is brought to the package's ``input`` spec.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.imaging import DEFAULT_MAX_PIXELS, decode_image, read_image, resize_array
from aiplatform.kinds.framing import frame_image
from aiplatform.limits import MAX_UPLOAD_BYTES

MAX_ARRAY_VALUES = 4096 * 4096 * 3
JSON_IMAGE_KEYS = ("image_b64", "image")
"""A JSON body's base64 image: ``image_b64`` (documented) or ``image``; decoding and previews alike."""
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff")
"""How PNG and JPEG files begin."""
PREVIEW_MAX_PIXELS = 4_000_000


def image_shape(input_spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """(height, width, channels) of an image model's ``input`` block."""
    return int(input_spec["height"]), int(input_spec["width"]), int(input_spec["channels"])


def image_from_bytes(
    data: bytes,
    input_spec: Mapping[str, Any],
    what: str = "Uploaded file",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    framing: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W, C) as the model expects: framed as its training data was
    when the model records a ``framing`` (``aiplatform.kinds.framing``), else resized."""
    if not data:
        raise InvalidArgument(f"{what} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise TooLarge(f"{what} is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    height, width, channels = image_shape(input_spec)
    if height != width:
        raise InvalidArgument("Only square image inputs are supported")
    if framing and channels == 1:
        return frame_image(read_image(data, "L", what, max_pixels), framing, height)
    return decode_image(data, height, channels, what, max_pixels)


def image_from_base64(
    text: Any,
    input_spec: Mapping[str, Any],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    framing: Mapping[str, Any] | None = None,
) -> np.ndarray:
    if not isinstance(text, str) or not text:
        raise InvalidArgument("'image_b64' must be a non-empty base64 string")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"'image_b64' is not valid base64: {exc}") from exc
    return image_from_bytes(data, input_spec, "Base64 image", max_pixels, framing)


def image_from_array(values: Any, input_spec: Mapping[str, Any]) -> np.ndarray:
    """A nested list (H, W) or (H, W, C) of pixel values 0..255 -> uint8 (H, W, C)."""
    height, _, channels = image_shape(input_spec)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"'array' must be a rectangular nested list of numbers: {exc}") from exc
    if array.size > MAX_ARRAY_VALUES:
        raise TooLarge(f"'array' has {array.size} values; the limit is {MAX_ARRAY_VALUES}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
        raise InvalidArgument(f"'array' must have shape (H, W) or (H, W, C) with C in (1, 3), got {list(array.shape)}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise InvalidArgument("'array' values must be finite pixel values between 0 and 255")
    pixels = np.round(array).astype(np.uint8)
    return resize_array(pixels[None, ...], height, channels)[0]


def image_from_json(
    body: Any,
    input_spec: Mapping[str, Any],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    framing: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """One JSON instance: ``{"image_b64": ...}`` (framed like an upload) or ``{"array": [[...]]}``
    (taken as already framed)."""
    if not isinstance(body, dict):
        raise InvalidArgument("JSON body must be an object with 'image_b64', 'array' or 'text'")
    if "text" in body:
        raise InvalidArgument("This model classifies images; send 'image_b64', 'array' or a file upload, not 'text'")
    key = next((key for key in JSON_IMAGE_KEYS if key in body), None)
    if key is not None:
        return image_from_base64(body[key], input_spec, max_pixels, framing)
    if "array" in body:
        return image_from_array(body["array"], input_spec)
    raise InvalidArgument("JSON body needs one of 'image_b64', 'array' or 'text'")


def json_image_bytes(data: bytes) -> bytes | None:
    """The image a JSON body holds as base64 (``JSON_IMAGE_KEYS``), if it is one; never an error."""
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return None
    value = next((body[k] for k in JSON_IMAGE_KEYS if isinstance(body, dict) and isinstance(body.get(k), str)), None)
    if value is None:
        return None
    try:
        return base64.b64decode(value.split(",", 1)[-1], validate=False)
    except (binascii.Error, ValueError):
        return None


def thumbnail(data: bytes, size: int) -> dict[str, Any]:
    """PNG/JPEG bytes as ``{"kind": "image", "data_url", "width", "height"}`` (at most ``size``
    pixels a side), decoded with the servers' guards (pixels capped at ``PREVIEW_MAX_PIXELS``);
    unreadable: ``{"kind": "binary", "text": why}``."""
    from PIL import Image

    try:
        pixels = read_image(data, "RGB", "the kept input", max_pixels=PREVIEW_MAX_PIXELS)
    except InvalidArgument as exc:
        return {"kind": "binary", "text": exc.message}
    image = Image.fromarray(pixels)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {
        "kind": "image",
        "data_url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
    }
