"""``model.json`` as a typed ModelConfig: packages written before it existed still load and serve,
unknown keys survive, and a bad config is refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiplatform.errors import IntegrityError, InvalidArgument
from aiplatform.kinds import ImageKind, TextKind
from aiplatform.limits import RequestLimits
from aiplatform.packaging import build_package, load_package
from aiplatform.packaging.config import ModelConfig
from aiplatform.serving.runner import ModelRunner
from tests.factories import make_package

pytestmark = pytest.mark.unit

OLD_PACKAGES = Path(__file__).resolve().parents[1] / "data" / "packages"


def test_an_image_package_written_before_the_typed_config_loads_and_serves() -> None:
    runner = ModelRunner(load_package((OLD_PACKAGES / "format1-image.zip").read_bytes()))
    assert isinstance(runner.config, ModelConfig) and runner.config.format_version == 1
    assert runner.config.name == "format1-image" and runner.config.labels == ["0", "1", "2"]
    assert isinstance(runner.kind, ImageKind)
    image = runner.kind.from_json({"array": np.full((8, 8), 200).tolist()}, RequestLimits())
    answer = runner.predict(image[None, ...])[0]
    assert answer["label"] in {"0", "1", "2"} and sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_a_text_package_written_before_the_typed_config_loads_and_serves() -> None:
    runner = ModelRunner(load_package((OLD_PACKAGES / "format1-text.zip").read_bytes()))
    assert isinstance(runner.kind, TextKind) and runner.config.input["max_tokens"] == 8
    ids = runner.kind.tokenizer.encode("a good film")
    assert runner.predict(ids[None, ...])[0]["label"] in {"negative", "neutral", "positive"}


def test_the_config_round_trips_with_keys_it_does_not_know() -> None:
    raw = json.loads(json.dumps(load_package(make_package()).config.to_json_dict()))
    raw["calibration"] = {"temperature": 1.5}  # a newer writer's addition
    again = ModelConfig.parse(raw)
    assert again.to_json_dict()["calibration"] == {"temperature": 1.5} and again.to_json_dict()["format"] == 1
    assert again.input_type == "image"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("labels"), "labels: Field required"),
        (lambda c: c.update(labels=[]), "labels: List should have at least 1 item"),
        (lambda c: c.update(input={"height": 8}), "input: Value error, needs a 'type'"),
        (lambda c: c.update(format=2), "format: Input should be less than or equal to 1"),
    ],
)
def test_a_bad_config_is_refused_by_field(change, message: str) -> None:  # type: ignore[no-untyped-def]
    config = load_package(make_package()).config.to_json_dict()
    change(config)
    with pytest.raises(IntegrityError, match=message):
        ModelConfig.parse(config)
    with pytest.raises(InvalidArgument, match=message):
        build_package(
            model_config=config, state_dict=load_package(make_package()).model.state_dict(), metrics={}, lineage={}
        )
