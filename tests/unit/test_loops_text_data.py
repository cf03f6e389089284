"""A text model's retraining data: kept requests (a ``{"text": ...}`` body, an uploaded document,
a v2 request's n-th BYTES text, JSON or binary) decoded as serving decoded them, the seeded
held-out slice, production's train and validation texts and the fresh ones written as the
``parquet:`` text source (its test texts kept out), and the gate's fresh slice decoded and
classified per model as serving would. No Ray: the source is read back as the build reads its rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiplatform.datasets.text_builder import clean_rows
from aiplatform.datasets.text_sources import TextDatasetSpec
from aiplatform.kinds import TextKind
from aiplatform.limits import RequestLimits
from aiplatform.loops.data import (
    TEXT_COLUMN,
    TEXT_LABEL_COLUMN,
    decode_kept,
    fresh_texts,
    held_out,
    holdout_inputs,
    original_texts,
    text_key,
    text_splits_kept,
    write_text_run,
)
from aiplatform.loops.gate import KeptSlice
from aiplatform.results.feedback import LabeledPrediction
from aiplatform.serving.oip_binary import encode_tensor
from aiplatform.serving.runner import ModelRunner
from aiplatform.training.catalog import get_template
from tests.factories import make_digit_images, make_text_package, png_bytes

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return ModelRunner.from_bytes(make_text_package())


def _v2(texts: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def _v2_binary(texts: list[str]) -> bytes:
    data = encode_tensor("BYTES", texts)
    header = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "parameters": {"binary_data_size": len(data)}}
        ]
    }
    return json.dumps(header).encode() + data


def test_kept_text_requests_decode_as_serving_decoded_them(runner: ModelRunner) -> None:
    kind, limits = runner.kind, RequestLimits()
    assert isinstance(kind, TextKind)
    body = {"text": "What a  great day"}
    assert decode_kept(json.dumps(body).encode(), "a" * 32, kind, limits) == kind.from_json(body, limits)
    # An uploaded document (a BOM allowed), one that starts with "{", one that is JSON of another
    # shape: serving kept the bytes it decoded as the upload's text.
    for upload in (b"\xef\xbb\xbfgood film\nloved it", b"{braces} are fine here", b'{"note": "not a body"}'):
        assert decode_kept(upload, "a" * 32, kind, limits) == kind.from_upload("x.txt", upload, limits)

    # A v2 request's n-th text is result <request id>-<n>, JSON or binary (the header's length was
    # not kept: it is found where the JSON ends).
    texts = ["bad awful", "ok fine", "happy — naïve café"]
    v2 = json.dumps(_v2(texts)).encode()
    assert decode_kept(v2, "b" * 32 + "-2", kind, limits) == kind.from_v2(_v2(texts), limits)[2] == texts[2]
    assert decode_kept(v2, "b" * 32 + "-7", kind, limits) is None
    single = json.dumps(_v2(["only one"])).encode()
    assert decode_kept(single, "b" * 32, kind, limits) == "only one"
    assert decode_kept(_v2_binary(texts), "c" * 32 + "-1", kind, limits) == "ok fine"

    # What a text model cannot read is None, never an error.
    images, _ = make_digit_images(1)
    assert decode_kept(png_bytes(images[0]), "d" * 32, kind, limits) is None
    assert decode_kept("utf-16 text".encode("utf-16"), "d" * 32, kind, limits) is None
    assert decode_kept(b"\xff\xfe\x00", "d" * 32, kind, limits) is None
    pixels = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 2, 2], "data": [0, 1, 2, 3]}]}
    assert decode_kept(json.dumps(pixels).encode(), "d" * 32, kind, limits) is None


class _Storage:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def exists(self, key: str) -> bool:
        return key in self.objects

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]


def _prediction(result_id: str, label: str, uri: str | None) -> LabeledPrediction:
    return LabeledPrediction(result_id, "reviews", 1, 1.0, "neutral", label, uri, 1.0, "tester")


def _labeled(count: int) -> tuple[list[LabeledPrediction], dict[str, bytes], dict[str, str]]:
    """``count`` labeled predictions, a third each sent as JSON, as an upload, and in a v2 request
    of three texts (one kept input, three results)."""
    objects: dict[str, bytes] = {}
    labeled: list[LabeledPrediction] = []
    texts: dict[str, str] = {}
    for i in range(count):
        text, label = f"review number {i} says {LABELS[i % 3]} things", LABELS[i % 3]
        if i % 3 == 0:
            objects[f"in/{i}"] = json.dumps({"text": text}).encode()
            result_id, uri = f"{i:032x}", f"in/{i}"
        elif i % 3 == 1:
            objects[f"in/{i}"] = text.encode()
            result_id, uri = f"{i:032x}", f"in/{i}"
        else:
            request = f"{i:032x}"
            objects[f"in/{i}"] = json.dumps(_v2(["first", "second", text])).encode()
            result_id, uri = f"{request}-2", f"in/{i}"
        texts[result_id] = text
        labeled.append(_prediction(result_id, label, uri))
    return labeled, objects, texts


def test_fresh_texts_hold_out_a_seeded_slice_and_keep_the_gate_slices_unseen(
    runner: ModelRunner, tmp_path: Path
) -> None:
    labeled, objects, texts = _labeled(60)
    missing = _prediction("f" * 32, "positive", "in/gone")
    unknown = _prediction("e" * 32, "delighted", "in/0")
    unreadable = _prediction("d" * 32, "positive", "in/binary")
    objects["in/binary"] = b"\x00\x01 not text"
    storage = _Storage(objects)
    fresh = fresh_texts(
        [*labeled, missing, unknown, unreadable], storage, runner.kind, LABELS, seed=4, fraction=0.25, test_ids=set()
    )
    assert fresh.unreadable == 3 and fresh.seen == 0
    expected = {p.result_id for p in labeled if held_out(p.result_id, 4, 0.25)}
    assert {h["result_id"] for h in fresh.holdout} == expected and 0 < len(expected) < 60
    assert len(fresh.train_texts) + len(fresh.holdout) == 60
    # Each training text is the one serving classified, with its label.
    trained = {p.result_id: p.label for p in labeled if p.result_id not in expected}
    assert sorted(zip(fresh.train_texts, fresh.train_labels)) == sorted(
        (texts[result_id], label) for result_id, label in trained.items()
    )
    again = fresh_texts(labeled, storage, runner.kind, LABELS, seed=4, fraction=0.25, test_ids=set())
    assert [h["result_id"] for h in again.holdout] == [h["result_id"] for h in fresh.holdout]
    other = fresh_texts(labeled, storage, runner.kind, LABELS, seed=5, fraction=0.25, test_ids=set())
    assert {h["result_id"] for h in other.holdout} != expected

    # A training text equal to one of production's test texts (as the build ids it: cleaned and
    # case-folded) or to a held-out one is not trained on.
    some_train = fresh.train_texts[0]
    test_ids = {text_key("  " + some_train.upper() + " ")}
    twin_id = next(f"{n:032x}" for n in range(1000, 2000) if not held_out(f"{n:032x}", 4, 0.25))
    twin = _prediction(twin_id, "neutral", "in/twin")
    held_text = texts[fresh.holdout[0]["result_id"]]
    objects["in/twin"] = json.dumps({"text": held_text.title()}).encode()
    guarded = fresh_texts([*labeled, twin], storage, runner.kind, LABELS, seed=4, fraction=0.25, test_ids=test_ids)
    assert guarded.seen == 2 and some_train not in guarded.train_texts
    assert len(guarded.train_texts) == len(fresh.train_texts) - 1
    cleaned = clean_rows({"text": np.array([some_train], dtype=object), "label_name": np.array(["x"])}, 2)
    assert int(cleaned["id"][0]) == text_key(some_train)

    # Production's train and validation rows (never its test rows) and the fresh training texts,
    # as the parquet text source the template's build reads back.
    assert "test" not in text_splits_kept()
    split = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "text": pa.array(["an old good one", "007"], pa.string()),
            "label": pa.array([2, 0], pa.int64()),
        }
    )
    original = original_texts([split], LABELS)
    train_path, holdout_path = write_text_run(tmp_path, original, guarded)
    written = pq.read_table(train_path)
    assert written.column(TEXT_COLUMN).to_pylist() == ["an old good one", "007", *guarded.train_texts]
    assert written.column(TEXT_LABEL_COLUMN).to_pylist() == ["positive", "negative", *guarded.train_labels]
    template = get_template("text-classification")
    params = template.parse_params(
        {
            "dataset": f"parquet:{train_path}",
            "text_column": TEXT_COLUMN,
            "label_column": TEXT_LABEL_COLUMN,
            "max_rows": None,
        }
    )
    spec = template.dataset_spec(params)
    assert isinstance(spec, TextDatasetSpec) and spec.source_kind == "parquet"
    assert spec.columns == (TEXT_COLUMN, TEXT_LABEL_COLUMN)
    ids, inputs, held_labels = holdout_inputs(holdout_path)
    assert ids == [h["result_id"] for h in guarded.holdout] and held_labels == [h["label"] for h in guarded.holdout]
    assert inputs == [h["input"] for h in guarded.holdout]


def _served_label(runner: ModelRunner, text: str) -> str:
    """The label serving answers for ``text``: its windows one at a time, combined by the kind."""

    async def submit(window: np.ndarray) -> dict[str, Any]:
        return runner.predict(window[None])[0]

    answer, _ = asyncio.run(runner.kind.classify(text, submit, runner.labels, RequestLimits().max_chunks))
    return str(answer["label"])


def test_the_gate_decodes_and_classifies_the_text_slice_per_model() -> None:
    texts = [
        "good great happy love",
        "bad awful sad hate",
        "ok fine",
        " ".join(["bad awful sad hate good"] * 6),  # longer than a window: classified in windows
    ]
    inputs = [
        json.dumps({"text": texts[0]}).encode(),
        texts[1].encode(),
        json.dumps(_v2(["skipped", texts[2]])).encode(),
        _v2_binary([texts[3]]),
    ]
    ids = ["a" * 32, "b" * 32, "c" * 32 + "-1", "d" * 32]
    for max_tokens in (8, 4):  # two models whose windows differ
        runner = ModelRunner.from_bytes(make_text_package(max_tokens=max_tokens))
        served = [_served_label(runner, text) for text in texts]
        assert KeptSlice(ids, inputs, served).accuracy(runner) == 1.0
        wrong = [next(label for label in LABELS if label != served[0]), *served[1:]]
        assert KeptSlice(ids, inputs, wrong).accuracy(runner) == pytest.approx(3 / 4)
        unreadable = KeptSlice([*ids, "e" * 32], [*inputs, b"\x00"], [*served, "neutral"])
        assert unreadable.rows == 5 and unreadable.accuracy(runner) == pytest.approx(4 / 5)


def test_a_run_on_a_new_source_version_leaves_the_texts_production_was_gated_on_out() -> None:
    from aiplatform.loops.data import without_ids

    split = pa.table({"id": pa.array([11, 12, 13], pa.int64()), TEXT_COLUMN: ["a", "b", "c"], "label": [0, 1, 0]})
    assert without_ids(split, {12, 99}).column(TEXT_COLUMN).to_pylist() == ["a", "c"]
    assert without_ids(split, set()) is split
