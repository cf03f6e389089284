"""Hostile inputs that are small as sent and large once decoded (docs/SECURITY.md): a few tensor
values resized to a large imported model's input, a CSV header of a million columns, a text that
NFKC makes 18 times longer; and a table source's missing columns named without quoting the file.
Each is refused with the limit it passed, before the work, and the replica answers the next request."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from aiplatform.kinds.rows import MAX_CSV_COLUMNS
from aiplatform.limits import MAX_DECODED_VALUES
from tests.factories import register_bytes
from tests.hostile import MAX_TEXT_CHARS, refused, stored

SIDE = 2048
"""The imported image model's input side: one row resized to it is 12,582,912 values (x 3 channels)."""
SECRET = "s3cr3t-token-in-a-header"


def _pooling_graph(side: int) -> bytes:
    """An ONNX image classifier of (batch, 3, side, side) floats that averages each channel and
    maps the three means to three scores: a large input that costs nothing to run."""
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], [1, 0, 0, 0, 1, 0, 0, 0, 1])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"]),
            helper.make_node("Gemm", ["means", "w"], ["scores"]),
        ],
        "pooling",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _table_package(name: str) -> bytes:
    """An XGBoost table model of three number features f0..f2 (the tabular template's package)."""
    import xgboost

    from aiplatform.packaging import build_package

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 2, "nthread": 1},
        xgboost.DMatrix(x, label=(x[:, 0] > 0).astype(int)),
        num_boost_round=3,
    )
    return build_package(
        model_config={
            "name": name,
            "template": "tabular-classification",
            "labels": ["no", "yes"],
            "architecture": {"type": "xgboost", "num_features": 3, "num_classes": 2},
            "input": {"type": "tabular", "features": [{"name": f"f{i}", "type": "number"} for i in range(3)]},
        },
        model_file=bytes(booster.save_raw("json")),
        metrics={},
        lineage={"method": "test"},
    )


@pytest.fixture(scope="module")
def models(platform: dict[str, Any]) -> dict[str, str]:
    """An imported image model with a large input (through the import API) and a table model."""
    api, registry = platform["api"], platform["registry"]
    imported = api.post(
        "/v1/models/decoded-large/import",
        data={"kind": "image", "labels": "red,green,blue"},
        files={"file": ("pooling.onnx", _pooling_graph(SIDE))},
    )
    assert imported.status_code == 201, imported.text
    registry.set_alias("decoded-large", "production", imported.json()["version"])
    metadata = api.get("/v2/models/decoded-large").json()
    assert metadata["inputs"][0]["shape"] == [-1, SIDE, SIDE, 3], metadata
    version = register_bytes(
        platform["settings"], "decoded-table", _table_package("decoded-table"), template="tabular-classification"
    )
    registry.set_alias("decoded-table", "production", version)
    return {"image": "decoded-large", "table": "decoded-table"}


def _pixels(rows: int) -> dict[str, Any]:
    """``rows`` images of 2 x 2 RGB pixels: 12 values a row, as sent."""
    return {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [rows, 2, 2, 3], "data": [7] * (rows * 12)}]}


def test_a_few_values_that_would_resize_past_the_budget_are_refused(
    platform: dict[str, Any], models: dict[str, str]
) -> None:
    path = f"/v2/models/{models['image']}/infer"
    # 6 rows of 12 values become 6 x 2048 x 2048 x 3 = 75.5M values once resized: over the budget.
    body = refused(platform, "POST", path, 413, f"the limit is {MAX_DECODED_VALUES:,} per request", json=_pixels(6))
    assert (
        "75,497,472 values" in body["error"] and f"{SIDE} x {SIDE} x 3" in body["error"]
    )  # v2: the message in 'error'
    # One row (12.6M values once resized) is what the model takes: answered.
    answer = platform["api"].post(path, json=_pixels(1))
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"][0] == 1


def test_a_million_column_csv_header_is_refused_before_it_is_searched(
    platform: dict[str, Any], models: dict[str, str]
) -> None:
    header = ",".join(f"c{i}" for i in range(1_000_000))
    upload = (header + "\n" + ",".join(["1"] * 1_000_000) + "\n").encode()
    assert len(upload) < 10 * 1024 * 1024  # within the upload limit: only its columns are too many
    refused(
        platform,
        "POST",
        f"/v1/models/{models['table']}/predict",
        413,
        f"has 1,000,000 columns; the limit is {MAX_CSV_COLUMNS:,}",
        files={"file": ("wide.csv", upload, "text/csv")},
    )
    fine = "id,f2,f0,label,f1\n7,0.5,1.5,yes,-1\n8,0,0,no,0\n"  # extra columns, any order: still fine
    answer = platform["api"].post(
        f"/v1/models/{models['table']}/predict", files={"file": ("rows.csv", fine, "text/csv")}
    )
    assert answer.status_code == 200, answer.text


def test_texts_that_nfkc_makes_longer_than_the_limit(platform: dict[str, Any]) -> None:
    """U+FDFA is one character as sent and 18 once normalised: at the character limit as sent, it
    is refused by the normalised length, after normalising a chunk of it, not all of it."""
    expanding = "\ufdfa" * MAX_TEXT_CHARS
    message = f"characters once Unicode-normalised (NFKC); the limit is {MAX_TEXT_CHARS:,}"
    refused(platform, "POST", "/v1/models/words/predict", 413, message, json={"text": expanding})
    refused(
        platform,
        "POST",
        "/v2/models/words/infer",
        413,
        message,
        json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [expanding]}]},
    )
    refused(
        platform,
        "POST",
        "/v1/models/words/predict",
        413,
        message,
        files={"file": ("prayer.txt", expanding.encode(), "text/plain")},
    )
    ligatures = platform["api"].post(
        "/v1/models/words/predict", json={"text": "\ufb01ne " * 100}
    )  # shorter once normalised
    assert ligatures.status_code == 200, ligatures.text


def test_missing_source_columns_are_named_without_quoting_the_file(platform: dict[str, Any]) -> None:
    """Table and text sources answer a missing column alike: the names asked for and the file's
    column count, never its header (a file the caller may not read could be named as a source)."""
    from aiplatform.datasets import DatasetManager, TabularDatasetSpec, TextDatasetSpec
    from aiplatform.errors import InvalidArgument
    from aiplatform.storage import storage_from_settings

    settings = platform["settings"]
    root = settings.resolved_data_root
    (root / "secret.csv").write_text(f"name,{SECRET},score\nx,1,2\ny,3,4\n")
    (root / "control.csv").write_text('f0,"bad\x01name",label\n1,2,a\n3,4,b\n')
    storage = storage_from_settings(settings)
    manager = DatasetManager.from_settings(storage, settings, untrusted=True)  # as a task from the API reads it
    before, datasets = stored(platform), storage.list("datasets")
    messages = []
    for spec in (
        TabularDatasetSpec(source=f"csv:{root / 'secret.csv'}", label_column="label"),
        TextDatasetSpec(source=f"csv:{root / 'secret.csv'}", text_column="text", label_column="label"),
        TabularDatasetSpec(source=f"csv:{root / 'control.csv'}"),
    ):
        with pytest.raises(InvalidArgument) as error:
            manager.build(spec)
        messages.append(str(error.value))
    shape = r"(Table|Text) source '[^']*' has no column\(s\) \[[^\]]*\] \(it has 3 columns\)\. Name them with \w+ / \w+"
    assert all(re.fullmatch(shape, message) for message in messages[:2]), messages
    assert "['label']" in messages[0] and "['text', 'label']" in messages[1]
    assert "column(s) [2], counting from 1" in messages[2]
    assert not any(SECRET in m or "x,1,2" in m or "bad\x01name" in m for m in messages), messages
    assert stored(platform) == before and storage.list("datasets") == datasets
