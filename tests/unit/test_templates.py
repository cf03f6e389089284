from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.storage import validate_key
from aiplatform.training.catalog import get_template, list_templates


@pytest.fixture()
def plugins_on_path(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path where a test lays out installed distributions (dist-info + module)."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("plugin_")]:
            del sys.modules[name]


def install_plugin(folder: Path, dist: str, entry: str, target: str, module_source: str = "") -> None:
    info = folder / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[aiplatform.templates]\n{entry} = {target}\n")
    if module_source:
        (folder / f"{target.split(':')[0]}.py").write_text(module_source)


def test_the_built_in_templates_are_found_through_their_entry_points() -> None:
    from importlib.metadata import entry_points

    declared = {e.name: e.value for e in entry_points(group="aiplatform.templates")}
    assert declared["cnn-classification"] == "aiplatform.training.cnn:CnnClassificationTemplate"
    assert {"cnn-classification", "text-classification", "text-minilm-classification"} <= {
        t.name for t in list_templates()
    }


def test_a_broken_plugin_is_named_and_the_others_still_load(plugins_on_path: Path) -> None:
    install_plugin(plugins_on_path, "broken", "broken-template", "plugin_missing:Template")
    install_plugin(
        plugins_on_path,
        "misnamed",
        "misnamed",
        "plugin_misnamed:Misnamed",
        "from aiplatform.training.cnn import CnnClassificationTemplate\n"
        "class Misnamed(CnnClassificationTemplate):\n    name = 'something-else'\n",
    )
    install_plugin(plugins_on_path, "notatemplate", "not-a-template", "plugin_other:Other", "class Other:\n    pass\n")
    install_plugin(
        plugins_on_path,
        "unfinished",
        "unfinished",
        "plugin_unfinished:Unfinished",
        "from aiplatform.training.template import TrainingTemplate\n"
        "class Unfinished(TrainingTemplate):\n    name = 'unfinished'\n",
    )
    with pytest.raises(
        InvalidArgument,
        match=r"template plugin 'broken-template' \(plugin_missing:Template\) failed "
        r"to import: ModuleNotFoundError",
    ):
        get_template("broken-template")
    with pytest.raises(InvalidArgument, match="names itself 'something-else'; the two must match"):
        get_template("misnamed")
    with pytest.raises(InvalidArgument, match="is not a TaskTemplate subclass"):
        get_template("not-a-template")
    with pytest.raises(InvalidArgument, match="cannot be made: TypeError: Can't instantiate abstract class"):
        get_template("unfinished")
    names = [t.name for t in list_templates()]
    assert "cnn-classification" in names
    assert not {"broken-template", "misnamed", "not-a-template", "unfinished"} & set(names)


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(NotFound, match=r"'nope' not found; available: \[.*'cnn-classification'"):
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
