"""The tabular kind without Ray: one feature schema encoding JSON rows, CSV uploads and tensors
strictly (every problem named), XGBoost boosters packaged as JSON and served like networks, and
tables importable from ONNX with their features."""

from __future__ import annotations

import asyncio
import math
import re

import numpy as np
import pytest
import torch
import xgboost

from aiplatform.datasets import TabularDatasetSpec
from aiplatform.errors import IntegrityError, InvalidArgument, TooLarge
from aiplatform.kinds import ManyInputs, kind_for
from aiplatform.kinds.tabular import table_input
from aiplatform.limits import RequestLimits
from aiplatform.packaging import build_package, load_package
from aiplatform.serving.runner import ModelRunner

FEATURES = [
    {"name": "island", "type": "category", "categories": ["Biscoe", "Dream", "Torgersen"]},
    {"name": "bill length", "type": "number", "min": 30.0, "max": 60.0, "mean": 44.0, "std": 5.0},
    {"name": "mass", "type": "number", "min": 2700.0, "max": 6300.0, "mean": 4200.0, "std": 800.0},
]
CONFIG = {"input": {"type": "tabular", "features": FEATURES}, "preprocessing": {}}
LIMITS = RequestLimits(max_rows=5)


def test_a_json_row_is_encoded_in_schema_order_with_missing_values_as_nan() -> None:
    kind = kind_for(CONFIG)
    vector = kind.from_json({"features": {"mass": 4000, "island": "Dream", "bill length": None}}, LIMITS)
    assert vector[0] == 1.0 and math.isnan(vector[1]) and vector[2] == 4000.0
    assert kind.feature_names == ("island", "bill length", "mass")
    _answer, features = asyncio.run(kind.classify(vector, _echo, ["a"], 1))
    assert features == {"island": 1.0, "mass": 4000.0}  # the missing value is left out of drift
    many = kind.from_json({"rows": [{"island": "Biscoe", "bill length": 40, "mass": 3000}] * 2}, LIMITS)
    assert isinstance(many, ManyInputs) and len(many) == 2


@pytest.mark.parametrize(
    "row, message",
    [
        ({"island": "Dream", "mass": 1}, "lacks feature(s) ['bill length']"),
        ({"island": "Dream", "bill length": 1, "mass": 1, "beak": 2}, "unknown feature(s) ['beak']"),
        ({"island": "Atlantis", "bill length": 1, "mass": 1}, "unseen category 'Atlantis'"),
        ({"island": 3, "bill length": 1, "mass": 1}, "'island' is a category"),
        ({"island": "Dream", "bill length": "long", "mass": 1}, "'bill length' must be a number, got str"),
        ({"island": "Dream", "bill length": [1], "mass": 1}, "'bill length' must be a number, got list"),
        ({"island": "Dream", "bill length": 1, "mass": float("inf")}, "'mass' is out of range"),
        ("Dream", "must be an object"),
    ],
)
def test_bad_json_rows_are_refused_by_name(row: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        kind_for(CONFIG).from_json({"features": row}, LIMITS)


def test_requests_are_encoded_as_the_dataset_build_encodes_its_columns() -> None:
    """Booleans, null markers, padded text and empty cells mean in a request what they meant in
    the table the model was trained on (rows.py encodes both)."""
    import pyarrow as pa

    from aiplatform.kinds.rows import FeatureSchema

    schema = FeatureSchema(
        [{"name": "flag", "type": "number"}, {"name": "sex", "type": "category", "categories": ["female", "male"]}]
    )
    built = schema.encode_arrow({"flag": pa.array([True, None, False]), "sex": pa.array(["male  ", "", None])})
    csv = b"flag,sex\ntrue,male  \nNA,\nFALSE,NA\n"
    served = np.stack(
        kind_for({"input": {"type": "tabular", "features": schema.features}}).from_upload("rows.csv", csv, LIMITS)
    )
    np.testing.assert_array_equal(np.isnan(built), np.isnan(served))
    np.testing.assert_array_equal(np.nan_to_num(built, nan=-1), np.nan_to_num(served, nan=-1))
    assert schema.encode_row({"flag": True, "sex": " female"}).tolist() == [1.0, 0.0]
    with pytest.raises(InvalidArgument, match="out of range"):
        schema.encode_row({"flag": 10**400, "sex": None})
    with pytest.raises(InvalidArgument, match="beyond a 32-bit float"):
        schema.encode_arrow({"flag": pa.array([1e39]), "sex": pa.array(["male"])})


def test_csv_uploads_ignore_other_columns_and_name_each_problem() -> None:
    kind = kind_for(CONFIG)
    csv = b"id,island,bill length,mass,species\n1,Dream,40.5,,Adelie\n2,Biscoe,50,5000,Gentoo\n\n"
    rows = kind.from_upload("rows.csv", csv, LIMITS)
    assert isinstance(rows, ManyInputs) and len(rows) == 2 and math.isnan(rows[0][2]) and rows[1][0] == 0.0
    for data, message, error in [
        (b"island,mass\nDream,1\n", "lacks column(s) ['bill length']", InvalidArgument),
        (b"island,bill length,mass\nDream,abc,1\n", "line 2: feature 'bill length' must be a number", InvalidArgument),
        (
            b"island,bill length,mass\nMars,1,1\n",
            "line 2: feature 'island' has the unseen category 'Mars'",
            InvalidArgument,
        ),
        (b"island,bill length,mass\nDream,1\n", "line 2 has 2 cells; the header has 3", InvalidArgument),
        (b"island,bill length,mass\n", "has a header but no rows", InvalidArgument),
        (b"", "is empty", InvalidArgument),
        (b"\xff\xfe\x00i", "is not UTF-8", InvalidArgument),
        (b"island,bill length,mass\n" + b"Dream,1,1\n" * 6, "has 6 inputs; the limit is 5", TooLarge),
    ]:
        with pytest.raises(error, match=re.escape(message)):
            kind.from_upload("rows.csv", data, LIMITS)
    with pytest.raises(InvalidArgument, match="not a .csv file"):
        kind.from_upload("digit.png", b"\x89PNG", LIMITS)


def test_v2_tensors_give_categories_as_indices_and_are_checked() -> None:
    kind = kind_for(CONFIG)
    assert kind.v2_inputs() == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
    assert kind.v2_parameters()["features"][0] == {
        "name": "island",
        "type": "category",
        "categories": ["Biscoe", "Dream", "Torgersen"],
    }
    rows = kind.from_v2(_tensor([[2, 41.0, 3900], [0, float("nan"), 5000]]), LIMITS)
    assert len(rows) == 2 and rows[0][0] == 2.0 and math.isnan(rows[1][1])
    for data, shape, message in [
        ([[3, 41.0, 3900]], [1, 3], "category given by its index 0..2"),
        ([[0.5, 41.0, 3900]], [1, 3], "category given by its index"),
        ([[0, 41.0]], [1, 2], "must have shape [N, 3]"),
        ([[0, 41.0, 1e39]], [1, 3], "beyond a 32-bit float"),
        ([[0, 1, 2]] * 6, [6, 3], "has 6 inputs"),
    ]:
        with pytest.raises((InvalidArgument, TooLarge), match=re.escape(message)):
            kind.from_v2(_tensor(data, shape), LIMITS)


def test_an_xgboost_package_holds_json_and_serves_the_boosters_own_probabilities() -> None:
    booster, x = _booster(num_features=3, num_classes=3)
    data = build_package(
        model_config=_config(3, 3), model_file=bytes(booster.save_raw("json")), metrics={}, lineage={"method": "test"}
    )
    package = load_package(data)
    assert package.cpu_only
    runner = ModelRunner(package)
    np.testing.assert_allclose(runner.predict_proba(x[:5]), booster.inplace_predict(x[:5]), atol=1e-6)
    assert runner.predict(x[:1])[0]["label"] in ("a", "b", "c")


def test_xgboost_packages_refuse_binary_or_mismatched_boosters() -> None:
    booster, _ = _booster(num_features=3, num_classes=3)
    for model_file, config, message in [
        (bytes(booster.save_raw("ubj")), _config(3, 3), "JSON format"),
        (bytes(booster.save_raw("json")), _config(4, 3), "takes 3 features; model.json says 4"),
        (bytes(booster.save_raw("json")), _config(3, 2), "does not give 2 class probabilities"),
        (b'{"learner": "nonsense"}', _config(3, 3), "does not load"),
        (_booster(3, 3, objective="multi:softmax"), _config(3, 3), "objective is 'multi:softmax'"),
    ]:
        data = build_package(model_config=config, model_file=model_file, metrics={}, lineage={})
        with pytest.raises(IntegrityError, match=re.escape(message)):
            load_package(data)
    with pytest.raises(InvalidArgument, match="holds its model.xgb.json"):
        build_package(model_config=_config(3, 3), state_dict={"w": torch.zeros(1)}, metrics={}, lineage={})


def test_table_specs_and_imported_table_inputs_are_checked() -> None:
    assert TabularDatasetSpec(source="penguins").label == "species"
    assert TabularDatasetSpec(source="csv:/data/sales.csv").dataset_name == "csv-sales"
    for raw, message in [
        ({"source": "excel:/x.xlsx"}, "unknown table source"),
        ({"source": "csv:"}, "needs a location"),
        ({"source": "csv:/x.csv", "label_column": "y", "feature_columns": ["y"]}, "cannot also be a feature"),
        ({"source": "csv:/x.csv", "feature_columns": ["a", "a"]}, "names a column twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            TabularDatasetSpec(**raw)
    spec = table_input(
        {"name": "x", "datatype": "FP32", "shape": [-1, 2]},
        {"features": ["age", {"name": "city", "type": "category", "categories": ["Oslo", "Rome"]}]},
    )
    assert spec["features"][1]["categories"] == ["Oslo", "Rome"]
    assert [f["name"] for f in table_input({"name": "x", "datatype": "FP32", "shape": [-1, 2]}, {})["features"]] == [
        "f0",
        "f1",
    ]
    for signature, given, message in [
        ({"name": "x", "datatype": "FP32", "shape": [-1, 3]}, {"features": ["a"]}, "takes 3 features"),
        ({"name": "x", "datatype": "INT64", "shape": [-1, 3]}, {}, "float (batch, features)"),
        ({"name": "x", "datatype": "FP32", "shape": [-1, 2]}, {"features": ["a", "a"]}, "names a feature twice"),
        (
            {"name": "x", "datatype": "FP32", "shape": [-1, 1]},
            {"features": [{"name": "c", "type": "category"}]},
            "distinct non-empty 'categories'",
        ),
        ({"name": "x", "datatype": "FP32", "shape": [-1, 1]}, {"scale": 1}, "Unknown table preprocessing keys"),
    ]:
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            table_input(signature, given)


async def _echo(vector: np.ndarray) -> dict:
    return {"label": "a"}


def _tensor(data: list, shape: list | None = None) -> dict:
    array = np.array(data, dtype=np.float64)
    return {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": shape or list(array.shape),
                "data": array.reshape(-1).tolist(),
            }
        ]
    }


def _booster(num_features: int, num_classes: int, objective: str = "") -> tuple[xgboost.Booster, np.ndarray] | bytes:
    """A small booster and its inputs; with ``objective``, only that booster's JSON."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, num_features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    booster = xgboost.train(
        {"objective": objective or "multi:softprob", "num_class": num_classes, "nthread": 1},
        xgboost.DMatrix(x, label=y),
        num_boost_round=5,
    )
    return bytes(booster.save_raw("json")) if objective else (booster, x)


def _config(num_features: int, num_classes: int) -> dict:
    return {
        "name": "t",
        "template": "tabular-classification",
        "labels": ["a", "b", "c"][:num_classes],
        "architecture": {"type": "xgboost", "num_features": num_features, "num_classes": num_classes},
        "input": {"type": "tabular", "features": [{"name": f"f{i}", "type": "number"} for i in range(num_features)]},
    }
