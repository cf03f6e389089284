"""Bringing real-world images into the framing of a model's training data.

A model trained on MNIST has seen light digits on a black background, fitted into 20x20 pixels
and centred by their mass in 28x28. A person uploads a scan or a phone photo: a dark digit on
light, noisy paper, small, off-centre, in a large image. Resized as it is, that image is nothing
like the training data and the model guesses. So, for grayscale image models whose training data
has a plain background, the training set's framing is measured when the model is trained
(``measure_framing``) and recorded in ``model.json``'s ``preprocessing.framing``; every uploaded
image is then brought into it (``frame_image``): polarity, background and noise, crop, scale,
centre of mass. Images given as tensors (v2, pixel arrays) are taken as already framed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from aiplatform.imaging import resize_array

WORKING_SIDE = 256
"""Uploads are framed at most this large (long side): enough for any model input here, cheap."""
PLAIN_BACKGROUND = 48
"""How far (in 0..255) a training set's border may sit from black or white to count as plain."""
CONTENT_LEVEL = 0.25
"""A pixel is content when it is brighter than this share of the image's peak (after cleaning)."""
MIN_CONTRAST = 24.0
"""Below this spread between background and strokes an image is taken as blank and only resized."""


def _border_mask(shape: tuple[int, ...]) -> np.ndarray:
    """The image's frame, 6% of its shorter side wide (at least a pixel): where background is read."""
    edge = max(1, round(0.06 * min(shape)))
    mask = np.zeros(shape, dtype=bool)
    mask[:edge], mask[-edge:], mask[:, :edge], mask[:, -edge:] = True, True, True, True
    return mask


def _border(image: np.ndarray) -> np.ndarray:
    return image[_border_mask(image.shape)]


def _mass_centre(image: np.ndarray) -> tuple[float, float]:
    total = float(image.sum())
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def _content_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), exclusive ends, of the pixels above CONTENT_LEVEL of the peak."""
    peak = float(image.max())
    if peak <= 0:
        return None
    rows, cols = np.nonzero(image > CONTENT_LEVEL * peak)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def measure_framing(images: np.ndarray) -> dict[str, Any] | None:
    """The framing of a sample of training images (N, H, W, 1) uint8, or None when the data has
    no plain background (photographs) or more than one channel: then uploads are only resized."""
    if images.ndim != 4 or images.shape[-1] != 1 or len(images) == 0:
        return None
    size = images.shape[1]
    border = float(np.median(np.concatenate([_border(image[..., 0]) for image in images])))
    if PLAIN_BACKGROUND < border < 255 - PLAIN_BACKGROUND:
        return None
    dark = border <= PLAIN_BACKGROUND
    extents, centres = [], []
    for image in images[..., 0].astype(np.float32):
        content = image if dark else 255 - image
        box = _content_box(content)
        if box is None:
            continue
        top, bottom, left, right = box
        extents.append(max(bottom - top, right - left) / size)
        centres.append(_mass_centre(content))
    if not extents:
        return None
    centre = np.mean(np.array(centres), axis=0)
    return {
        "background": "dark" if dark else "light",
        "content": round(float(np.median(extents)), 4),
        "centre": [round(float(centre[0]) / size, 4), round(float(centre[1]) / size, 4)],
        "steps": ["polarity", "background", "denoise", "crop", "scale", "centre-of-mass"],
    }


def _flatten_lighting(image: np.ndarray) -> np.ndarray:
    """Subtract a plane fitted to the border (uneven lighting across a photo), so the background
    sits at 0 wherever it is, then clip what the border's own noise reaches."""
    height, width = image.shape
    rows, cols = np.indices(image.shape)
    mask = _border_mask(image.shape)
    design = np.column_stack([np.ones(mask.sum()), rows[mask] / height, cols[mask] / width])
    coefficients, *_ = np.linalg.lstsq(design, image[mask], rcond=None)
    plane = coefficients[0] + coefficients[1] * rows / height + coefficients[2] * cols / width
    flat = image - plane
    noise = float(np.percentile(flat[mask], 99))
    return np.clip(flat - max(noise, 0.0), 0, None)


def frame_image(pixels: np.ndarray, framing: Mapping[str, Any], size: int) -> np.ndarray:
    """A grayscale image (H, W) uint8 of any size -> (size, size, 1) uint8 framed as the training
    data was (see the module docstring)."""
    from PIL import Image, ImageFilter

    picture = Image.fromarray(pixels)
    if max(picture.size) > WORKING_SIDE:
        picture.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    if min(picture.size) >= 4 * size:  # speckle and sensor noise, far finer than the strokes
        picture = picture.filter(ImageFilter.MedianFilter(3))
    image = np.asarray(picture, dtype=np.float32)
    if image.shape[0] < 3 or image.shape[1] < 3:
        return _resized(pixels, size)
    if float(np.median(_border(image))) > 127:
        image = 255 - image  # worked on as light strokes on a dark background
    light = framing.get("background") == "light"
    flat = _flatten_lighting(image)
    if float(flat.max()) < MIN_CONTRAST:  # blank, or no contrast to find content by: only resized
        working = np.clip(image, 0, 255).astype(np.uint8)
        return _resized(255 - working if light else working, size)
    flat = np.clip(flat * (255.0 / float(np.percentile(flat[flat > 0], 99))), 0, 255)
    top, bottom, left, right = _content_box(flat)  # type: ignore[misc]  # max > 0 checked above
    crop = flat[top:bottom, left:right]
    target = max(1, round(float(framing.get("content", 0.7)) * size))
    scale = target / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    scaled = np.asarray(
        Image.fromarray(crop.astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32
    )
    canvas = np.zeros((size, size), dtype=np.float32)
    if scaled.sum() > 0:
        centre_y, centre_x = _mass_centre(scaled)
    else:
        centre_y, centre_x = height / 2, width / 2
    wanted_y, wanted_x = (float(c) * size for c in framing.get("centre", [0.5, 0.5]))
    offset_y, offset_x = round(wanted_y - centre_y), round(wanted_x - centre_x)
    _paste(canvas, scaled, offset_y, offset_x)
    framed = np.clip(canvas, 0, 255).astype(np.uint8)
    if light:
        framed = 255 - framed
    return framed[..., None]


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """``patch`` onto ``canvas`` at (top, left), clipped at the canvas's edges."""
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(canvas.shape[0], top + patch.shape[0]), min(canvas.shape[1], left + patch.shape[1])
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    return resize_array(pixels[None, ...], size, 1)[0]
