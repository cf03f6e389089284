"""Every registered kind of model input keeps the kind contract: what serving, training, imports,
dataset profiles, previews and the UI ask of a kind, run on each kind in ``KINDS`` (the store
contract's pattern: one suite, every implementation). A new kind joins by registering and giving
its example here; the first test fails until it does."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from aiplatform.analysis.report import _dataset_charts
from aiplatform.errors import InvalidArgument
from aiplatform.kinds import KINDS, DatasetKind, ManyInputs, ModelKind, importable_kinds, kind_class, kind_for
from aiplatform.kinds.base import BarChart, ImageChart
from aiplatform.kinds.rows import FeatureSchema
from aiplatform.limits import RequestLimits

pytestmark = pytest.mark.unit

LABELS = ["a", "b"]
LIMITS = RequestLimits(max_rows=8)
SHAPE_KEYS = {"upload", "json_keys", "paste_key", "paste_hint", "import_hint"}


@dataclass
class KindExample:
    """One kind's model, a split of its datasets and the requests a client sends."""

    config: dict[str, Any]
    manifest: dict[str, Any]
    table: pa.Table
    json_body: dict[str, Any]
    upload: tuple[str, bytes]
    v2_body: dict[str, Any]
    graph_input: dict[str, Any] | None = None
    """An ONNX graph's input an importable kind takes, with the caller's preprocessing."""
    import_preprocessing: dict[str, Any] | None = None


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def image_example() -> KindExample:
    import base64

    rows = [np.full((8, 8, 1), value, dtype=np.uint8) for value in (0, 128, 255, 0)]
    digit = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    return KindExample(
        config={
            "input": {"type": "image", "height": 8, "width": 8, "channels": 1},
            "preprocessing": {"scale": 1 / 255, "mean": [0.5], "std": [0.5]},
        },
        manifest={"image": {"height": 8, "width": 8, "channels": 1}},
        table=pa.table(
            {
                "id": ["0", "1", "2", "3"],
                "image": pa.array([r.tobytes() for r in rows], pa.binary()),
                "label": [0, 1, 1, 0],
                "variant": ["original"] * 4,
            }
        ),
        json_body={"image_b64": base64.b64encode(png(digit)).decode()},
        upload=("digit.png", png(digit)),
        v2_body={"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": [7] * 64}]},
        graph_input={"name": "x", "datatype": "FP32", "shape": [-1, 1, 8, 8]},
        import_preprocessing={"scale": 1 / 255},
    )


def text_example() -> KindExample:
    from aiplatform.preprocessing import text_preprocessing
    from aiplatform.text import Tokenizer

    texts = ["a good film", "a bad film", "good good", "a good film"]
    tokenizer = Tokenizer.fit(texts, min_freq=1, max_tokens=8)
    return KindExample(
        config={"input": {"type": "text", "max_tokens": 8}, "preprocessing": text_preprocessing(tokenizer)},
        manifest={"profile": {"train": {"words_histogram": {"bins": [1, 2, 3], "counts": [0, 1, 3]}}}},
        table=pa.table({"id": ["0", "1", "2", "3"], "text": texts, "label": [1, 0, 1, 1]}),
        json_body={"text": "a good film"},
        upload=("review.txt", b"a good film, a very good film"),
        v2_body={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["good", "bad film"]}]},
    )


TABLE_FEATURES = [
    {"name": "island", "type": "category", "categories": ["Biscoe", "Dream"]},
    {"name": "mass", "type": "number", "min": 2700.0, "max": 6300.0, "mean": 4200.0, "std": 800.0},
]


def tabular_example() -> KindExample:
    schema = FeatureSchema(TABLE_FEATURES)
    rows = [
        schema.encode_row({"island": island, "mass": mass}).tobytes()
        for island, mass in (("Dream", 3000), ("Biscoe", 5000), ("Dream", None), ("Dream", 3000))
    ]
    return KindExample(
        config={"input": {"type": "tabular", "features": TABLE_FEATURES}, "preprocessing": {}},
        manifest={"table": {"features": TABLE_FEATURES, "label_column": "species"}},
        table=pa.table({"id": ["0", "1", "2", "3"], "features": pa.array(rows, pa.binary()), "label": [0, 1, 0, 0]}),
        json_body={"rows": [{"island": "Biscoe", "mass": 4000}, {"island": "Dream", "mass": None}]},
        upload=("rows.csv", b"island,mass\nDream,3000\nBiscoe,\n"),
        v2_body={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2], "data": [1, 4200]}]},
        graph_input={"name": "x", "datatype": "FP32", "shape": [-1, 2]},
        import_preprocessing={"features": ["island", "mass"]},
    )


EXAMPLES = {"image": image_example, "text": text_example, "tabular": tabular_example}


@pytest.fixture(params=sorted(KINDS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def example(name: str) -> KindExample:
    return EXAMPLES[name]()


def _echo(model_input: np.ndarray) -> Any:
    async def answer() -> dict[str, Any]:
        return {"label": "a", "probability": 1.0, "probabilities": {"a": 1.0, "b": 0.0}, "input": model_input}

    return answer()


def _classified(kind: ModelKind, decoded: Any) -> list[np.ndarray]:
    """Each input of a decoded request through ``classify``: the model inputs it submitted."""
    submitted: list[np.ndarray] = []

    async def submit(model_input: np.ndarray) -> dict[str, Any]:
        submitted.append(model_input)
        return {"label": "a", "probability": 1.0, "probabilities": {"a": 1.0, "b": 0.0}}

    items = list(decoded) if isinstance(decoded, (ManyInputs, list)) else [decoded]
    for item in items:
        answer, features = asyncio.run(kind.classify(item, submit, LABELS, 4))
        assert answer["label"] in LABELS
        assert set(features) <= set(kind.feature_names) and all(isinstance(v, float) for v in features.values())
    return submitted


def _json_ready(value: Any) -> None:
    json.dumps(value)


def test_every_registered_kind_has_an_example_here() -> None:
    assert set(EXAMPLES) == set(KINDS), "a new kind gives its example (model, dataset split, requests) above"


def test_a_kind_is_found_by_its_name_for_models_and_datasets(name: str, example: KindExample) -> None:
    model_kind = kind_for(example.config)
    assert type(model_kind) is KINDS[name] and model_kind.name == name
    datasets = kind_class(name)
    assert issubclass(datasets, DatasetKind) and datasets is KINDS[name].datasets and datasets.name == name
    assert {"id", "label"} <= set(datasets.dataset_columns) <= set(example.table.column_names)


def test_what_a_client_sends_decodes_into_model_inputs_the_model_server_takes(name: str, example: KindExample) -> None:
    kind = kind_for(example.config)
    submitted = _classified(kind, kind.from_json(example.json_body, LIMITS))
    submitted += _classified(kind, kind.from_upload(*example.upload, LIMITS))
    submitted += _classified(kind, kind.from_v2(example.v2_body, LIMITS))
    served = kind.sample_batch().shape[1:]
    assert submitted and all(np.asarray(s).shape == served for s in submitted)
    assert len(kind.to_tensor(np.stack(submitted))) == len(submitted)
    smoke = kind.smoke_inputs(3)
    assert smoke.shape == (3, *served) and len(kind.to_tensor(smoke)) == 3
    assert isinstance(kind.to_tensor(kind.sample_batch()), torch.Tensor)
    with pytest.raises(InvalidArgument):
        kind.from_json({"nothing": "known"}, LIMITS)


def test_the_request_shape_is_what_the_kind_decodes(name: str, example: KindExample) -> None:
    """The UI and CLI send what ``request_shape`` (GET /v1/kinds) says; the kind takes exactly that."""
    kind, shape = kind_for(example.config), KINDS[name].request_shape()
    _json_ready(shape)
    assert set(shape) == SHAPE_KEYS and shape["upload"] and shape["json_keys"] and shape["paste_hint"]
    assert example.upload[0].endswith(tuple(shape["upload"]))
    assert set(example.json_body) & set(shape["json_keys"])
    if shape["paste_key"]:
        kind.from_json({shape["paste_key"]: "pasted as it is"}, LIMITS)
    assert (shape["import_hint"] is not None) == KINDS[name].importable


def test_the_v2_metadata_is_json(name: str, example: KindExample) -> None:
    kind = kind_for(example.config)
    inputs = kind.v2_inputs()
    assert inputs and all({"name", "datatype", "shape"} <= set(i) for i in inputs)
    _json_ready([inputs, kind.v2_parameters()])


def test_a_datasets_profile_previews_and_charts(name: str, example: KindExample) -> None:
    datasets, table = kind_class(name), example.table
    summary, keys = datasets.profile_split(table, example.manifest)
    assert len(keys) == table.num_rows
    assert len(set(map(repr, keys))) < len(keys)  # the example's first and last rows are the same input
    previews = datasets.sample_previews(table, example.manifest)
    assert len(previews) == table.num_rows and all(isinstance(p, dict) and p for p in previews)
    profile = {
        "dataset": "d@1",
        "kind": name,
        "labels": LABELS,
        "splits": {"train": summary},
        "class_balance": {"shares": {"a": 0.5, "b": 0.5}},
        **datasets.profile_extra(example.manifest, ["train"]),
    }
    _json_ready([profile, previews])
    charts = datasets.profile_charts(profile)
    assert charts and all(isinstance(c, (BarChart, ImageChart)) for c in charts)
    assert len({c.name for c in charts}) == len(charts)
    drawn = _dataset_charts(profile)
    assert "class_balance.svg" in drawn and len(drawn) == len(charts) + 1 and all(drawn.values())


def test_training_batches_for_templates_and_user_code(name: str, example: KindExample) -> None:
    batch = {
        column: example.table.column(column).to_numpy(zero_copy_only=False) for column in example.table.column_names
    }
    inputs, labels = kind_for(example.config).batch_converter()(batch)
    assert len(inputs) == len(labels) == example.table.num_rows and labels.dtype == torch.int64
    datasets = kind_class(name)
    worker_inputs = datasets.worker_inputs(example.manifest)
    _json_ready(worker_inputs)
    assert len(datasets.user_batch_converter(worker_inputs, {})(batch)) == example.table.num_rows


def test_drift_reference_features_name_every_feature(name: str, example: KindExample) -> None:
    kind = kind_for(example.config)
    reference = kind.reference_features(example.table, example.manifest)
    assert set(kind.feature_names) <= set(reference)
    assert all(len(reference[f]) == example.table.num_rows for f in kind.feature_names)


def test_an_import_makes_a_model_of_the_kind_or_is_refused(name: str, example: KindExample) -> None:
    model_kind = KINDS[name]
    assert (name in importable_kinds()) == model_kind.importable == (example.graph_input is not None)
    if example.graph_input is None:
        with pytest.raises(InvalidArgument, match="cannot be imported"):
            model_kind.import_input({"name": "x", "datatype": "FP32", "shape": [-1, 4]}, {})
        return
    imported = model_kind.import_input(example.graph_input, dict(example.import_preprocessing or {}))
    assert imported.spec["type"] == name and imported.row_values > 0 and imported.layout
    kind = kind_for({"input": imported.spec, "preprocessing": imported.preprocessing})
    assert int(np.prod(kind.smoke_inputs(1).shape[1:])) == imported.row_values


def test_a_kept_input_is_previewed_only_by_its_own_kind(name: str) -> None:
    """What the results pages show of a kept request: a kind claims its own inputs (or leaves
    them to the text snippet) and never another kind's."""
    own, others = EXAMPLES[name](), [EXAMPLES[n]() for n in EXAMPLES if n != name]
    datasets = kind_class(name)
    for data in (json.dumps(own.json_body).encode(), own.upload[1]):
        preview = datasets.input_preview(data, 48)
        assert preview is None or preview["kind"] != "binary"
    for other in others:
        for data in (json.dumps(other.json_body).encode(), other.upload[1]):
            assert datasets.input_preview(data, 48) is None


def test_the_ui_reads_every_kinds_request_shape_from_the_api() -> None:
    """GET /v1/kinds through the real API app (guard and all): each kind's request shape, and the
    response model in the OpenAPI schema a generated client reads."""
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from aiplatform.api.app import include_api
    from aiplatform.api.security import AccessPolicy

    app = FastAPI()
    include_api(app)
    app.state.platform = SimpleNamespace(access=AccessPolicy("off", None, ("127.0.0.1",)))
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    answer = client.get("/v1/kinds")
    assert answer.status_code == 200, answer.text
    assert answer.json()["kinds"] == [
        {"name": name, "importable": kind.importable, **kind.request_shape()} for name, kind in KINDS.items()
    ]
    schema = client.get("/openapi.json").json()["paths"]["/v1/kinds"]["get"]["responses"]["200"]
    assert schema["content"]["application/json"]["schema"]["$ref"].endswith("/KindList")
