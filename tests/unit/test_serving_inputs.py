from __future__ import annotations

import base64

import numpy as np
import pytest

from aiplatform.errors import InvalidArgument
from aiplatform.kinds import ImageKind, kind_for
from aiplatform.limits import RequestLimits
from aiplatform.packaging import load_package
from aiplatform.serving.runner import ModelRunner
from tests.factories import make_package, png_bytes

KIND = kind_for({"input": {"type": "image", "height": 8, "width": 8, "channels": 1}, "preprocessing": {}})
LIMITS = RequestLimits()


def from_json(body):  # type: ignore[no-untyped-def]
    return KIND.from_json(body, LIMITS)


def from_array(values):  # type: ignore[no-untyped-def]
    return KIND.from_json({"array": values}, LIMITS)


def from_upload(data: bytes):  # type: ignore[no-untyped-def]
    return KIND.from_upload("digit.png", data, LIMITS)


def test_the_kind_is_chosen_from_the_input_type() -> None:
    assert isinstance(KIND, ImageKind) and KIND.name == "image"
    assert KIND.v2_inputs() == [{"name": "input", "datatype": "UINT8", "shape": [-1, 8, 8, 1]}]
    with pytest.raises(
        InvalidArgument, match=r"Unknown kind of model input 'audio'; known: \['image', 'tabular', 'text'\]"
    ):
        kind_for({"input": {"type": "audio"}})


def test_png_of_any_size_and_mode_becomes_the_model_shape() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    assert from_upload(png_bytes(rgb, "RGB")).shape == (8, 8, 1)
    b64 = base64.b64encode(png_bytes(rgb, "RGBA")).decode()
    assert from_json({"image_b64": b64}).shape == (8, 8, 1)
    assert from_json({"image_b64": f"data:image/png;base64,{b64}"}).shape == (8, 8, 1)


def test_arrays_are_validated_and_resized() -> None:
    assert from_array(np.full((16, 16), 255).tolist()).max() == 255
    with pytest.raises(InvalidArgument, match=r"shape \(H, W\) or \(H, W, C\)"):
        from_array([1, 2, 3])
    with pytest.raises(InvalidArgument, match="between 0 and 255"):
        from_array([[300, 1], [1, 1]])
    with pytest.raises(InvalidArgument, match="rectangular nested list"):
        from_array([[1, 2], [3]])


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
        from_json(body)


def test_empty_and_oversized_uploads() -> None:
    with pytest.raises(InvalidArgument, match="is empty"):
        from_upload(b"")
    with pytest.raises(InvalidArgument, match="the limit is"):
        from_upload(b"x" * (10 * 1024 * 1024 + 1))


def test_runner_predicts_probabilities_for_every_label() -> None:
    runner = ModelRunner(load_package(make_package(num_classes=3)))
    answers = runner.predict(np.zeros((4, 8, 8, 1), dtype=np.uint8))
    assert len(answers) == 4
    assert set(answers[0]["probabilities"]) == {"0", "1", "2"}
    assert sum(answers[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answers[0]["label"] in {"0", "1", "2"}


@pytest.mark.parametrize("shape", [[1, (1 << 62) + 1, 4, 1], [1 << 70, 8, 8]])
def test_v2_shapes_whose_product_wraps_around_are_refused_as_too_large(shape: list[int]) -> None:
    from aiplatform.errors import TooLarge
    from aiplatform.kinds.tensors import images_from_infer_request

    body = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": shape, "data": [0] * 4}]}
    with pytest.raises(TooLarge):
        images_from_infer_request(body, {"height": 8, "width": 8, "channels": 1})
