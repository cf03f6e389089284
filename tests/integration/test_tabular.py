"""The tabular kind end to end, on the session's Ray with the platform's scheduler and gateway: the
penguins table trained by the tabular-classification template on Ray Train's XGBoost trainer
through the API, served from its JSON booster (JSON rows, a CSV upload, v2 FP32 tensors) with the
booster's own answers, bad rows refused by name, drift per feature and a profile per column; and
table sources (CSV, parquet) built or refused by the dataset manager."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost

from aiplatform.datasets import DatasetManager, TabularDatasetSpec
from aiplatform.datasets.tabular_sources import penguins_file
from aiplatform.errors import InvalidArgument
from aiplatform.kinds.rows import schema_of
from aiplatform.packaging import read_package_files
from aiplatform.packaging.xgboost_model import XGBOOST_FILE
from aiplatform.registry import RegistryClient
from aiplatform.storage import LocalStorage, storage_from_settings
from aiplatform.tasks.queue import SUCCEEDED
from tests.factories import wait_for_task

FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]


@pytest.fixture(scope="module")
def platform(shared_platform: dict[str, Any]) -> dict[str, Any]:
    return shared_platform


BOOSTING = {"num_boost_round": 200, "early_stopping_rounds": 10}
"""Stops early (near round 40): the API test's run is also the uninterrupted run that the killed
worker's run must stop like."""


@pytest.fixture(scope="module")
def penguins_task(platform: dict[str, Any]) -> tuple[str, Any]:
    """The penguins table trained through the API: (task id, finished task)."""
    with httpx.Client(base_url=platform["url"], timeout=120) as client:
        created = client.post(
            "/v1/tasks",
            json={"template": "tabular-classification", "model_name": "penguins", "start": True, "params": BOOSTING},
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        done = wait_for_task(platform["queue"], task_id, lambda t: t.finished, timeout_s=300)
        logs = client.get(f"/v1/tasks/{task_id}/logs").json().get("logs", "")
    assert done.state == SUCCEEDED, (done.error, logs[-3000:])
    return task_id, done


def _penguin_rows() -> list[dict[str, str]]:
    with open(penguins_file(), newline="") as handle:
        return list(csv.DictReader(handle))


def _features(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as JSON features: numbers as numbers, 'NA' as missing (null)."""
    out: dict[str, Any] = {}
    for name in FEATURES:
        value = row[name]
        out[name] = None if value == "NA" else (value if name in ("island", "sex") else float(value))
    return out


def test_penguins_train_on_xgboost_serve_rows_csv_and_tensors_and_report_drift(
    platform: dict[str, Any], penguins_task: tuple[str, Any]
) -> None:
    task_id, done = penguins_task
    with httpx.Client(base_url=platform["url"], timeout=120) as client:
        history = client.get(f"/v1/tasks/{task_id}/metrics").json()["history"]
        assert len(history) >= 2 and history[-1]["val_loss"] < history[0]["val_loss"]
        assert done.result["test_accuracy"] >= 0.9

        registry = RegistryClient.connect(platform["settings"])
        version = registry.get_version("penguins", done.result["version"])
        assert version.template == "tabular-classification" and version.lineage["dataset"] == done.result["dataset"]
        files, _ = read_package_files(storage_from_settings(platform["settings"]).get_bytes(version.package_key))
        config = json.loads(files["model.json"])
        assert config["architecture"]["type"] == "xgboost" and "weights.safetensors" not in files
        assert [f["name"] for f in config["input"]["features"]] == FEATURES
        booster = xgboost.Booster()
        booster.load_model(bytearray(files[XGBOOST_FILE]))  # XGBoost's own JSON format: no pickle anywhere
        schema = schema_of(config["input"])

        rows = _penguin_rows()
        sample = rows[::9][:30] + [r for r in rows if "NA" in r.values()][:2]  # some with missing values
        path = f"/v1/models/penguins/predict?version={version.version}"
        one = client.post(path, json={"features": _features(sample[0])})
        assert one.status_code == 200, one.text
        assert one.json()["label"] == sample[0]["species"]

        # A CSV upload of many rows (with the true label and other columns besides the features).
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(sample)
        uploaded = client.post(path, files={"file": ("penguins.csv", text.getvalue().replace("NA", ""), "text/csv")})
        assert uploaded.status_code == 200, uploaded.text
        answer = uploaded.json()
        assert answer["rows"] == len(sample) and len(answer["predictions"]) == len(sample)
        accuracy = np.mean([p["label"] == r["species"] for p, r in zip(answer["predictions"], sample)])
        assert accuracy >= 0.9
        encoded = np.stack([schema.encode_row(_features(r)) for r in sample])
        expected = booster.inplace_predict(encoded)
        served = np.array([[p["probabilities"][label] for label in config["labels"]] for p in answer["predictions"]])
        np.testing.assert_allclose(served, expected, atol=1e-5)

        # Open Inference Protocol: the features' order in the metadata, FP32 rows (categories as indices).
        meta = client.get(f"/v2/models/penguins/versions/{version.version}").json()
        assert meta["platform"] == "xgboost" and meta["inputs"][0]["shape"] == [-1, len(FEATURES)]
        assert [f["name"] for f in meta["parameters"]["features"]] == FEATURES
        infer = client.post(
            f"/v2/models/penguins/versions/{version.version}/infer",
            json={
                "inputs": [
                    {
                        "name": "features",
                        "shape": [3, len(FEATURES)],
                        "datatype": "FP32",
                        "data": np.nan_to_num(encoded[:3], nan=0.0).reshape(-1).tolist(),
                    }
                ]
            },
        )
        assert infer.status_code == 200, infer.text

        # Bad rows are refused by name, and nothing is recorded for them.
        good = _features(sample[0])
        for body, message in [
            (
                {"features": {k: v for k, v in good.items() if k != "bill_depth_mm"}},
                "lacks feature(s) ['bill_depth_mm']",
            ),
            ({"features": {**good, "island": "Atlantis"}}, "unseen category 'Atlantis'"),
            ({"features": {**good, "body_mass_g": "heavy"}}, "'body_mass_g' must be a number"),
            ({"features": {**good, "wingspan": 1.0}}, "unknown feature(s) ['wingspan']"),
            ({"text": "a penguin"}, "This is a table model"),
        ]:
            refused = client.post(path, json=body)
            assert refused.status_code == 400 and message in refused.json()["message"], refused.text
        missing_column = client.post(path, files={"file": ("rows.csv", "island,sex\nDream,male\n", "text/csv")})
        assert missing_column.status_code == 400 and "lacks column(s)" in missing_column.json()["message"]
        not_csv = client.post(path, files={"file": ("rows.png", b"\x89PNG", "image/png")})
        assert not_csv.status_code == 400 and "not a .csv file" in not_csv.json()["message"]
        wrong_width = client.post(
            f"/v2/models/penguins/versions/{version.version}/infer",
            json={"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        )
        assert wrong_width.status_code == 400 and "[N, 7]" in wrong_width.json()["error"], wrong_width.text

        # Drift per feature against the held-out split, and the dataset's profile per column.
        results = wait_for_results(client, "penguins", len(sample) + 4)
        assert {"bill_length_mm", "island"} <= set(results[0]["features"])
        drift = client.post("/v1/analysis/drift", json={"model": "penguins", "version": version.version})
        assert drift.status_code == 200, drift.text
        assert {"bill_length_mm", "flipper_length_mm", "island", "predicted_class"} <= set(drift.json()["features"])
        name, dataset_version = done.result["dataset"].split("@")
        profile = client.get(f"/v1/analysis/datasets/{name}/{dataset_version}")
        assert profile.status_code == 200, profile.text
        columns = profile.json()["splits"]["train"]["columns"]
        assert sum(columns["island"]["counts"].values()) == profile.json()["splits"]["train"]["rows"]
        assert "column_island" in profile.json()["chart_urls"]


def wait_for_results(client: httpx.Client, model: str, count: int) -> list[dict[str, Any]]:
    """Results are written off the request path: poll until ``count`` are there."""
    import time

    deadline, seen = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        seen = client.get(f"/v1/results?model={model}&limit=200").json()["results"]
        if len(seen) >= count:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{len(seen)} results of {model} recorded after 60 s; expected {count}")


def test_csv_and_parquet_tables_build_and_bad_tables_are_refused(ray_session: None, tmp_path: Path) -> None:
    datasets = DatasetManager(LocalStorage(tmp_path / "store"))
    rng = np.random.default_rng(0)
    size = 200
    table = pa.table(
        {
            "height": rng.normal(170, 10, size),
            "colour": rng.choice(["red", "blue"], size),
            "comment": [f"note {i}" for i in range(size)],
            "outcome": rng.choice(["yes", "no"], size),
        }
    )
    pq.write_table(table, tmp_path / "people.parquet")
    version = datasets.build(
        TabularDatasetSpec(
            source=f"parquet:{tmp_path / 'people.parquet'}",
            label_column="outcome",
            feature_columns=("height", "colour"),
        )
    )
    assert version.kind == "tabular" and sum(version.rows(s) for s in ("train", "val", "test")) == size
    assert [f["type"] for f in version.manifest["table"]["features"]] == ["number", "category"]
    # Rows to look at, as a person reads them: categories by name, one class at a time.
    samples = datasets.samples(version, "train", label="yes", limit=5)
    assert len(samples) == 5 and {s["label"] for s in samples} == {"yes"}
    assert set(samples[0]["features"]) == {"height", "colour"} and samples[0]["features"]["colour"] in ("red", "blue")

    (tmp_path / "people.csv").write_text(
        "height,colour,outcome\n"
        + "".join(f"{170 + i % 7},{'red' if i % 2 else 'blue'},{'yes' if i % 3 else 'no'}\n" for i in range(60))
    )
    built = datasets.build(TabularDatasetSpec(source=f"csv:{tmp_path / 'people.csv'}", label_column="outcome"))
    assert built.labels == ["no", "yes"] and built.manifest["cleaning"]["rows"] == 60

    for spec, message in [
        (
            TabularDatasetSpec(source=f"parquet:{tmp_path / 'people.parquet'}", label_column="outcome"),
            "'comment' has more than 64 distinct values",
        ),
        (
            TabularDatasetSpec(source=f"csv:{tmp_path / 'people.csv'}", label_column="species"),
            "no column(s) ['species']",
        ),
    ]:
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            datasets.build(spec)
    (tmp_path / "one-class.csv").write_text("x,label\n" + "".join(f"{i},same\n" for i in range(30)))
    with pytest.raises(InvalidArgument, match="1 label"):
        datasets.build(TabularDatasetSpec(source=f"csv:{tmp_path / 'one-class.csv'}"))
    assert not any("one-class" in key for key in LocalStorage(tmp_path / "store").list("datasets"))


def test_a_killed_boosting_worker_resumes_from_its_last_round(
    platform: dict[str, Any], penguins_task: tuple[str, Any], tmp_path: Path
) -> None:
    """The worker is killed right after its first checkpoint (from the Train controller, so the
    moment is certain): the new worker group loads that booster and its early-stopping state and
    boosts only the rounds left, stopping at the round an uninterrupted run stops at (the API
    test's run: the same parameters on the same dataset version, in the platform's storage)."""
    import psutil
    import ray.train

    from aiplatform.training.catalog import get_template

    marker = tmp_path / "killed"

    class KillAfterFirstCheckpoint(ray.train.UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:  # type: ignore[no-untyped-def]
            if checkpoint is None or marker.exists():
                return
            marker.touch()
            for process in psutil.process_iter(["cmdline"]):
                if any("RayTrainWorker" in part for part in (process.info["cmdline"] or [])):
                    process.kill()

    task_id, done = penguins_task
    storage = storage_from_settings(platform["settings"])
    datasets = DatasetManager(storage)
    template = get_template("tabular-classification")
    params = template.parse_params(BOOSTING)
    killed = template.fit(
        params,
        settings=platform["settings"],
        storage=storage,
        datasets=datasets,
        run_name="tabular-killed",
        callbacks=[KillAfterFirstCheckpoint()],
    )
    assert marker.exists()
    assert killed.dataset.ref == done.result["dataset"]  # the very rows the uninterrupted run boosted on
    with httpx.Client(base_url=platform["url"], timeout=120) as client:
        uninterrupted = client.get(f"/v1/tasks/{task_id}/metrics").json()["history"]
    resumed = [m["resumed_from_epoch"] for m in killed.history]
    assert resumed[0] == 0 and resumed[-1] >= 10, resumed  # the second group started from a checkpoint
    final = killed.history[-1]
    assert final["stopped_early"] and final["epoch"] < 200
    assert (final["best_round"], final["epoch"]) == (uninterrupted[-1]["best_round"], uninterrupted[-1]["epoch"])
    booster = xgboost.Booster()
    booster.load_model(bytearray(killed.model_file))
    assert booster.num_boosted_rounds() == final["best_round"] and killed.test_metrics["test_accuracy"] >= 0.9
