from __future__ import annotations

import pytest

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.storage import validate_key
from aiplatform.training.templates import get_template, list_templates


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(NotFound, match=r"'nope' not found; available: \['cnn-classification'"):
        get_template("nope")
    assert "cnn-classification" in [t.name for t in list_templates()]


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1 (got 0)"),
        ({"epochs": "many"}, "epochs: Input should be a valid integer"),
        ({"optimizer": "lbfgs"}, "optimizer: Input should be 'adam', 'adamw' or 'sgd'"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"gpu": "maybe"}, "gpu"),
        ({"dataset": "cifar10"}, "use mnist, idx:<uri>"),
        ({"conv_channels": [0]}, "between 1 and 1024"),
        ({"unknown_knob": 1}, "unknown_knob: Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_are_named(raw: dict, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        get_template("cnn-classification").parse_params(raw)
    assert fragment in str(excinfo.value)
    assert "cnn-classification" in str(excinfo.value)


def test_defaults_and_schema() -> None:
    template = get_template("cnn-classification")
    params = template.parse_params({})
    assert params.epochs == 3 and params.dataset == "mnist"
    schema = template.schema()
    assert schema["properties"]["epochs"]["minimum"] == 1
    assert template.default_model_name(params) == "mnist-cnn"


def test_validate_key_accepts_normal_keys() -> None:
    assert validate_key("datasets/mnist/abc/data/split=train/x_0.parquet")
