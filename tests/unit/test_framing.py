"""Uploads brought into the training data's framing, on real MNIST digits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aiplatform.datasets.sources import mnist_test_digits
from aiplatform.imaging import read_image
from aiplatform.kinds.framing import frame_image, measure_framing
from aiplatform.kinds.images import image_from_bytes

pytestmark = pytest.mark.unit
SPEC = {"height": 28, "width": 28, "channels": 1}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return mnist_test_digits(200)[0]


@pytest.fixture(scope="module")
def framing(digits: np.ndarray) -> dict:
    measured = measure_framing(digits[..., None])
    assert measured is not None
    return measured


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mnist_framing_is_measured_as_its_authors_describe_it(framing: dict) -> None:
    """Light digits on black, fitted into 20 of 28 pixels, centred by their mass."""
    assert framing["background"] == "dark"
    assert framing["content"] == pytest.approx(20 / 28, abs=0.02)
    assert framing["centre"] == pytest.approx([0.5, 0.5], abs=0.02)


def test_photographs_and_colour_data_record_no_framing() -> None:
    rng = np.random.default_rng(0)
    assert measure_framing(rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)) is None  # no plain border
    assert measure_framing(np.zeros((20, 28, 28, 3), dtype=np.uint8)) is None


def test_a_dark_digit_off_centre_in_a_large_light_image_comes_out_as_the_original(
    digits: np.ndarray, framing: dict
) -> None:
    for digit in digits[:20]:
        reference = frame_image(digit, framing, 28)[..., 0]
        assert similarity(reference, digit) > 0.9  # an MNIST digit is nearly framed already
        canvas = np.full((300, 300), 235, dtype=np.uint8)
        canvas[30 : 30 + 140, 120 : 120 + 140] = 255 - np.asarray(Image.fromarray(digit).resize((140, 140)))
        framed = frame_image(canvas, framing, 28)[..., 0]
        assert similarity(framed, reference) > 0.85


def test_blank_uploads_stay_blank_and_tiny_ones_are_only_resized(framing: dict) -> None:
    assert frame_image(np.full((64, 64), 255, dtype=np.uint8), framing, 28).max() == 0
    assert frame_image(np.zeros((2, 2), dtype=np.uint8), framing, 28).shape == (28, 28, 1)


def test_transparency_lands_on_a_background_that_contrasts_with_the_drawing(digits: np.ndarray) -> None:
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = digits[0]  # black ink, its alpha the digit
    gray = read_image(png(rgba, "RGBA"), "L", "drawing")
    assert similarity(255 - gray, digits[0]) > 0.99


def test_exif_orientation_turns_a_phone_photo_upright(digits: np.ndarray, framing: dict) -> None:
    stored = Image.fromarray(digits[0]).transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    upright = image_from_bytes(buffer.getvalue(), SPEC, framing=framing)[..., 0]
    assert similarity(upright, frame_image(digits[0], framing, 28)[..., 0]) > 0.9
