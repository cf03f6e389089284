from __future__ import annotations

import base64

import numpy as np
import pytest

from aiplatform.errors import InvalidArgument
from aiplatform.packaging import load_package
from aiplatform.serving.inputs import image_from_array, image_from_bytes, image_from_json
from aiplatform.serving.runner import ModelRunner
from tests.factories import make_package, png_bytes

CONFIG = {"name": "tiny", "input": {"type": "image", "height": 8, "width": 8, "channels": 1}}


def test_png_of_any_size_and_mode_becomes_the_model_shape() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    assert image_from_bytes(png_bytes(rgb, "RGB"), CONFIG).shape == (8, 8, 1)
    b64 = base64.b64encode(png_bytes(rgb, "RGBA")).decode()
    assert image_from_json({"image_b64": b64}, CONFIG).shape == (8, 8, 1)
    assert image_from_json({"image_b64": f"data:image/png;base64,{b64}"}, CONFIG).shape == (8, 8, 1)


def test_arrays_are_validated_and_resized() -> None:
    assert image_from_array(np.full((16, 16), 255).tolist(), CONFIG).max() == 255
    with pytest.raises(InvalidArgument, match=r"shape \(H, W\) or \(H, W, C\)"):
        image_from_array([1, 2, 3], CONFIG)
    with pytest.raises(InvalidArgument, match="between 0 and 255"):
        image_from_array([[300, 1], [1, 1]], CONFIG)
    with pytest.raises(InvalidArgument, match="rectangular nested list"):
        image_from_array([[1, 2], [3]], CONFIG)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"text": "hello"}, "classifies images; send 'image_b64'"),
        ({"image_b64": "!!!not base64"}, "not valid base64"),
        ({"image_b64": base64.b64encode(b"not an image").decode()}, "not a PNG or JPEG image"),
        ({}, "needs one of 'image_b64', 'array' or 'text'"),
        ([1, 2], "must be an object"),
    ],
)
def test_bad_json_instances_name_the_problem(body, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=message):
        image_from_json(body, CONFIG)


def test_empty_and_oversized_uploads() -> None:
    with pytest.raises(InvalidArgument, match="is empty"):
        image_from_bytes(b"", CONFIG)
    with pytest.raises(InvalidArgument, match="the limit is"):
        image_from_bytes(b"x" * (10 * 1024 * 1024 + 1), CONFIG)


def test_runner_predicts_probabilities_for_every_label() -> None:
    runner = ModelRunner(load_package(make_package(num_classes=3)))
    answers = runner.predict(np.zeros((4, 8, 8, 1), dtype=np.uint8))
    assert len(answers) == 4
    assert set(answers[0]["probabilities"]) == {"0", "1", "2"}
    assert sum(answers[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answers[0]["label"] in {"0", "1", "2"}
