"""Decoding untrusted image bytes into the arrays models take, for datasets and serving alike.

Only PNG and JPEG are decoded: other formats Pillow could open (each a parser, each an attack
surface) are refused by name. The pixel count is read from the header and checked before any
pixel is decompressed, so a small file that claims 100,000 x 100,000 pixels (a decompression bomb)
costs nothing but the refusal.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

ACCEPTED_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_PIXELS = 50_000_000
_MAGIC = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WebP"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
)


def sniffed_format(data: bytes) -> str:
    """A name for what some bytes look like, for error messages."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return "an unknown format"


def read_image(data: bytes, mode: str, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes -> a uint8 array at the image's own size, in Pillow ``mode`` (``L`` or
    ``RGB``), turned upright as its EXIF says (phone photos) and with any transparency laid on a
    background that contrasts with what is drawn.

    Raises:
        InvalidArgument: not a readable PNG or JPEG (another format is named).
        TooLarge: more than ``max_pixels`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise TooLarge(f"{what} is {image.width}x{image.height} pixels; the limit is {max_pixels:,}")
            return np.asarray(_without_alpha(_upright(image)).convert(mode), dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # Pillow's own guard, for sizes far past ours
        raise TooLarge(
            f"{what} claims far more pixels than it could hold (a decompression bomb?); the limit is {max_pixels:,}"
        ) from exc
    except UnidentifiedImageError as exc:
        if data.startswith((b"\x89PNG", b"\xff\xd8\xff")):
            raise InvalidArgument(f"{what} is not a readable PNG/JPEG image: damaged or truncated") from exc
        raise InvalidArgument(f"{what} is {sniffed_format(data)}, not a PNG or JPEG image; send PNG or JPEG") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidArgument(f"{what} is not a readable PNG/JPEG image: {exc}") from exc


def _upright(image: PILImage) -> PILImage:
    """The image turned as its EXIF orientation says. Pillow rewrites the EXIF block on the way and
    has raised TypeError, struct.error and ZeroDivisionError on damaged ones: such a file is taken
    as it is stored rather than refused."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _without_alpha(image: PILImage) -> PILImage:
    """Transparent pixels become a background that contrasts with the opaque ones: a dark digit
    drawn on a transparent canvas lands on white, a light one on black."""
    from PIL import Image

    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() == 255:
        return rgba.convert("RGB")
    opaque = np.asarray(rgba.convert("L"))[alpha > 127]
    background = (0, 0, 0, 255) if opaque.size and opaque.mean() > 127 else (255, 255, 255, 255)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba).convert("RGB")


def decode_image(data: bytes, size: int, channels: int, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes -> a ``size x size x channels`` uint8 array (see ``read_image``)."""
    return resize_array(read_image(data, "L" if channels == 1 else "RGB", what, max_pixels)[None, ...], size, channels)[
        0
    ]


def resize_array(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Bring (N, H, W) or (N, H, W, C) uint8 arrays to the spec's size and channels."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] != (size, size):
        from PIL import Image

        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).resize(
                        (size, size), Image.Resampling.BILINEAR
                    )
                ).reshape(size, size, -1)
                for img in images
            ]
        )
    if images.shape[-1] != channels:
        images = (
            np.repeat(images, 3, axis=-1)
            if channels == 3
            else np.round(images.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
        )
    return np.ascontiguousarray(images, dtype=np.uint8)
