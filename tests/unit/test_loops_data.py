"""An image model's retraining data: kept requests (an upload, JSON, a v2 request, JSON or with
binary tensors) decoded as serving decoded them, the seeded held-out slice, production's images
and the fresh ones written as the parquet image source, and the gate's fresh slice decoded per
model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from aiplatform.errors import Conflict
from aiplatform.imaging import decode_image
from aiplatform.kinds import ImageKind
from aiplatform.limits import RequestLimits
from aiplatform.loops.data import (
    decode_kept,
    fresh_images,
    held_out,
    holdout_inputs,
    input_index,
    original_images,
    require_built_kind,
    write_image_run,
)
from aiplatform.loops.gate import KeptSlice
from aiplatform.results.feedback import LabeledPrediction
from aiplatform.serving.runner import ModelRunner
from tests.factories import digits_package, make_digit_images, png_bytes

SPEC = {"type": "image", "height": 28, "width": 28, "channels": 1}
LABELS = [str(d) for d in range(10)]


def _kind() -> ImageKind:
    return ImageKind(SPEC, {})


def _v2(images: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "input", "datatype": "UINT8", "shape": [len(images), 28, 28], "data": images.ravel().tolist()}
        ]
    }


def test_kept_requests_decode_as_serving_decoded_them() -> None:
    images, _ = make_digit_images(3)
    kind, limits = _kind(), RequestLimits()
    upload = png_bytes(images[0])
    assert np.array_equal(decode_kept(upload, "a" * 32, kind, limits)[..., 0], images[0])
    as_json = json.dumps({"image_b64": base64.b64encode(upload).decode()}).encode()
    assert np.array_equal(decode_kept(as_json, "a" * 32, kind, limits)[..., 0], images[0])
    array = json.dumps({"array": images[1].tolist()}).encode()
    assert np.array_equal(decode_kept(array, "a" * 32, kind, limits)[..., 0], images[1])

    # A v2 request's n-th input is result <request id>-<n>; with binary tensors too (the header's
    # length was not kept: it is found where the JSON ends).
    v2 = json.dumps(_v2(images)).encode()
    assert np.array_equal(decode_kept(v2, "b" * 32 + "-2", kind, limits)[..., 0], images[2])
    assert decode_kept(v2, "b" * 32 + "-7", kind, limits) is None
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "UINT8",
                    "shape": [3, 28, 28],
                    "parameters": {"binary_data_size": images.size},
                }
            ]
        }
    ).encode()
    binary = header + images.astype(np.uint8).tobytes()
    assert np.array_equal(decode_kept(binary, "c" * 32 + "-1", kind, limits)[..., 0], images[1])

    # What an image model cannot read is None, never an error.
    assert decode_kept(json.dumps({"text": "seven"}).encode(), "d" * 32, kind, limits) is None
    assert decode_kept(b"not an image", "d" * 32, kind, limits) is None
    assert input_index("e" * 32) == 0 and input_index("e" * 32 + "-12") == 12


class _Storage:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def exists(self, key: str) -> bool:
        return key in self.objects

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]


def _labeled(count: int) -> tuple[list[LabeledPrediction], dict[str, bytes], np.ndarray, np.ndarray]:
    images, labels = make_digit_images(count, seed=3)
    objects, labeled = {}, []
    for i, (image, label) in enumerate(zip(images, labels)):
        objects[f"results/inputs/{i}"] = png_bytes(image)
        labeled.append(
            LabeledPrediction(
                result_id=f"{i:032x}",
                model="digits",
                version=1,
                created_at=float(i),
                predicted="0",
                label=str(label),
                input_uri=f"results/inputs/{i}",
                labeled_at=float(i),
                labeled_by="tester",
            )
        )
    return labeled, objects, images, labels


def test_fresh_images_hold_out_a_seeded_slice_and_leave_out_what_they_cannot_read(tmp_path: Path) -> None:
    labeled, objects, images, labels = _labeled(40)
    missing = LabeledPrediction("f" * 32, "digits", 1, 99.0, "0", "3", "results/inputs/gone", 99.0, "t")
    unknown = LabeledPrediction("e" * 32, "digits", 1, 98.0, "0", "eleven", "results/inputs/0", 98.0, "t")
    fresh = fresh_images([*labeled, missing, unknown], _Storage(objects), _kind(), LABELS, seed=1, fraction=0.3)
    assert fresh.unreadable == 2
    expected = {p.result_id for p in labeled if held_out(p.result_id, 1, 0.3)}
    assert {h["result_id"] for h in fresh.holdout} == expected and 0 < len(expected) < 40
    assert len(fresh.train_images) + len(fresh.holdout) == 40
    again = fresh_images(labeled, _Storage(objects), _kind(), LABELS, seed=1, fraction=0.3)
    assert [h["result_id"] for h in again.holdout] == [h["result_id"] for h in fresh.holdout]

    # Production's originals (augmented copies left out) and the fresh training images, as the
    # parquet image source reads them: PNG (the same pixels back) and the class index.
    raw = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "image": pa.array([images[i].tobytes() for i in range(3)], pa.binary()),
            "label": pa.array([int(labels[i]) for i in range(3)], pa.int64()),
            "variant": pa.array([0, 1, 0], pa.int32()),
        }
    )
    original = original_images([raw], (28, 28, 1), LABELS)
    assert original.num_rows == 2
    train_path, holdout_path = write_image_run(tmp_path, original, fresh, LABELS)
    written = pa.parquet.read_table(train_path)
    assert written.num_rows == 2 + len(fresh.train_images)
    assert written.column("label").to_pylist()[:2] == [int(labels[0]), int(labels[2])]
    first = decode_image(written.column("image")[2].as_py(), 28, 1, "written")
    assert np.array_equal(first, fresh.train_images[0])
    ids, inputs, held_labels = holdout_inputs(holdout_path)
    assert ids == [h["result_id"] for h in fresh.holdout] and held_labels == [h["label"] for h in fresh.holdout]
    assert inputs[0] == fresh.holdout[0]["input"]

    # Classes that are not 0..n-1 are written by name.
    named = original_images([raw], (28, 28, 1), [f"c{d}" for d in range(10)])
    assert named.column("label").to_pylist() == [f"c{labels[0]}", f"c{labels[2]}"]


def test_the_gate_decodes_the_fresh_slice_for_each_model() -> None:
    runner = ModelRunner.from_bytes(digits_package(LABELS, seed=2))
    images, _ = make_digit_images(6, seed=5)
    uploads = [png_bytes(image) for image in images]
    predicted = [runner.labels[int(i)] for i in runner.predict_proba(images[..., None]).argmax(axis=1)]
    ids = [f"{i:032x}" for i in range(6)]
    assert KeptSlice(ids, uploads, predicted).accuracy(runner) == 1.0
    unreadable = KeptSlice([*ids, "f" * 32], [*uploads, b"{}"], [*predicted, "1"])
    assert unreadable.rows == 7 and unreadable.accuracy(runner) == pytest.approx(6 / 7)


def test_a_kind_not_built_is_refused_by_name() -> None:
    require_built_kind("image", "digits")
    require_built_kind("text", "reviews")
    with pytest.raises(Conflict, match="'clips' \\(a video model\\) is not built yet"):
        require_built_kind("video", "clips")


def test_production_test_rows_stay_out_of_a_table_run_whose_fresh_rows_move_the_categories() -> None:
    from aiplatform.datasets.tabular_builder import encode_rows
    from aiplatform.datasets.tabular_sources import TabularDatasetSpec
    from aiplatform.loops.data import table_row_ids, without_test_rows

    rng = np.random.default_rng(0)
    islands = ["Biscoe", "Dream", "Torgersen"]
    table = pa.table(
        {
            "island": [islands[i % 3] for i in range(300)],
            "mass": rng.normal(4000, 500, 300).round(1),
            "label_name": [["Adelie", "Gentoo"][i % 2] for i in range(300)],
        }
    )
    spec = TabularDatasetSpec(source="penguins", seed=3)
    schema = [
        {"name": "island", "type": "category", "missing": 0, "categories": islands},
        {"name": "mass", "type": "number", "missing": 0},
    ]
    built = encode_rows(table, schema, ["Adelie", "Gentoo"], spec.model_dump_json())
    assert table_row_ids(table, schema).tolist() == built["id"].tolist()  # the ids production's build gave
    test_ids = {int(i) for i, split in zip(built["id"], built["split"]) if split == "test"}
    # A fresh row with a new island sorting first shifts every code: under the run's schema the
    # ids, and so the splits, differ; production's test rows would land in the run's train split.
    moved = [{**schema[0], "categories": ["Atlantis", *islands]}, schema[1]]
    rebuilt = encode_rows(table, moved, ["Adelie", "Gentoo"], spec.model_dump_json())
    assert not test_ids & {int(i) for i in rebuilt["id"]}
    kept, out = without_test_rows(table, schema, test_ids)
    assert out == len(test_ids) > 0 and kept.num_rows == table.num_rows - out
    assert not test_ids & set(table_row_ids(kept, schema).tolist())
    assert without_test_rows(table, schema, set()) == (table, 0)
