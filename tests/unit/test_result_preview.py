"""What the UI shows of a kept input: thumbnails of images (PNG, JPEG, base64 in JSON), snippets of
texts, and a description of anything else, never an error."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from aiplatform.results.preview import input_preview


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def thumbnail_size(preview: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    data = base64.b64decode(preview["data_url"].split(",", 1)[1])
    return Image.open(io.BytesIO(data)).size


def test_images_become_thumbnails_at_most_the_size_asked() -> None:
    preview = input_preview(png((600, 300)), size=48)
    assert preview["kind"] == "image" and (preview["width"], preview["height"]) == (300, 600)
    assert thumbnail_size(preview) == (24, 48)
    body = json.dumps({"image": base64.b64encode(png((28, 28))).decode()}).encode()
    assert input_preview(body, size=56)["kind"] == "image"


def test_texts_become_snippets_and_anything_else_a_description() -> None:
    text = input_preview(("word " * 100).encode(), snippet_chars=20)
    assert text == {"kind": "text", "text": "word word word word ", "truncated": True}
    assert input_preview(b"\x00\xff\xfe")["kind"] == "binary"
    assert input_preview(bytes([0xFF, 0xFE, 0x00, 0x80]))["kind"] == "binary"
    broken = input_preview(b"\x89PNG\r\n\x1a\nbroken"[:4] + b"broken")
    assert broken["kind"] == "binary" and "PNG" in broken["text"]
    huge = Image.new("L", (3000, 3000))
    buffer = io.BytesIO()
    huge.save(buffer, "PNG")
    assert input_preview(buffer.getvalue())["kind"] == "binary"  # over the preview's pixel cap: described


def test_a_json_image_shows_as_the_image_kind_decodes_it() -> None:
    """The documented ``{"image_b64": ...}`` (and ``{"image": ...}``, a data URL or plain base64)
    is previewed as the thumbnail of the image the model got, not as a line of base64."""
    from aiplatform.kinds import kind_for
    from aiplatform.kinds.images import JSON_IMAGE_KEYS
    from aiplatform.limits import RequestLimits

    kind = kind_for({"input": {"type": "image", "height": 28, "width": 28, "channels": 1}, "preprocessing": {}})
    encoded = base64.b64encode(png((28, 28))).decode()
    for key in JSON_IMAGE_KEYS:
        for value in (encoded, "data:image/png;base64," + encoded):
            body = {key: value}
            assert kind.from_json(body, RequestLimits()).shape == (28, 28, 1)  # what the model was sent
            preview = input_preview(json.dumps(body).encode(), size=48)
            assert preview["kind"] == "image" and (preview["width"], preview["height"]) == (28, 28), key
    assert input_preview(json.dumps({"image_b64": "bm90IGFuIGltYWdl"}).encode())["kind"] == "binary"
    assert input_preview(json.dumps({"text": encoded}).encode())["kind"] == "text"  # a text, shown as one
