"""Batch inference jobs as real queued tasks on the session's Ray: a CNN over a dataset split and
over a ZIP of digits (rows scored as the served model scores them), a job killed mid-way and run
again (no part rescored, no row twice), and bad input refused at creation with nothing stored."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from aiplatform.batch.checks import check_batch
from aiplatform.batch.inputs import BatchInputs
from aiplatform.batch.outputs import BatchOutputs
from aiplatform.batch.params import BatchParams
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.evaluation import evaluate_model
from aiplatform.kinds import kind_for
from aiplatform.limits import RequestLimits
from aiplatform.registry import RegistryClient
from aiplatform.serving.runner import ModelRunner
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import CANCELLED, SUCCEEDED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from tests.factories import (
    digits_package,
    make_digit_images,
    make_package,
    onnx_classifier,
    platform_settings,
    png_bytes,
    register_bytes,
    wait_for,
)

pytestmark = pytest.mark.integration


def digits_zip(count: int, size: int | None = None) -> tuple[bytes, list[str]]:
    """A ZIP of real digits as PNGs in one folder per class; the names in order."""
    from PIL import Image

    images, labels = make_digit_images(count)
    buffer, names = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, label) in enumerate(zip(images, labels)):
            pixels = np.array(Image.fromarray(image).resize((size, size))) if size else image
            name = f"{int(label)}/digit-{index:03d}.png"
            archive.writestr(name, png_bytes(pixels))
            names.append(name)
    return buffer.getvalue(), names


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from aiplatform.datasets import DatasetManager, ImageDatasetSpec

    with platform_settings(tmp_path_factory.mktemp("batch-core"), "batchcore", task_poll_interval_s=0.5) as settings:
        storage = storage_from_settings(settings)
        dataset = DatasetManager.from_settings(storage, settings).build(ImageDatasetSpec(source="mnist", max_rows=300))
        version = register_bytes(settings, "digits", digits_package(dataset.labels))
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings, storage=storage)
        yield {"settings": settings, "storage": storage, "dataset": dataset, "version": version, "manager": manager}


def run_to_end(manager: TaskManager, task_id: str, timeout_s: float = 240.0) -> Any:
    def finished() -> Any:
        manager.reconcile()
        task = manager.get(task_id)
        return task if task.finished else None

    return wait_for(finished, timeout_s, f"batch task {task_id} to end")


def create(platform: dict[str, Any], params: dict[str, Any]) -> Any:
    settings: Settings = platform["settings"]
    check_batch(BatchParams.model_validate(params), platform["storage"], RegistryClient.connect(settings))
    return platform["manager"].create("batch-inference", params, start=True)


def download(platform: dict[str, Any], task_id: str) -> Any:
    sink = io.BytesIO()
    BatchOutputs(platform["storage"]).write_download(task_id, sink)
    return pq.read_table(io.BytesIO(sink.getvalue()))


def test_a_split_is_scored_as_evaluation_scores_it_with_its_accuracy(platform: dict[str, Any]) -> None:
    dataset = platform["dataset"]
    task = create(platform, {"model": "digits", "input": {"dataset": dataset.name, "split": "train"}, "part_rows": 64})
    done = run_to_end(platform["manager"], task.id)
    assert done.state == SUCCEEDED, (done.error, platform["manager"].logs(task.id)[-3000:])
    rows = dataset.rows("train")
    table = download(platform, task.id)
    assert table.num_rows == rows and len(set(table.column("id").to_pylist())) == rows
    assert set(table.column("model_version").to_pylist()) == {platform["version"]}
    progress = done.progress["metrics"]
    assert progress["rows_done"] == progress["rows_total"] == rows and progress["rows_per_s"] > 0

    # The same rows evaluated in this process, as training evaluates a test split.
    from aiplatform.datasets import DatasetManager
    from aiplatform.evaluation import table_batches

    package = platform["storage"].get_bytes(
        RegistryClient.connect(platform["settings"]).get_version("digits", 1).package_key
    )
    runner = ModelRunner.from_bytes(package)
    split = DatasetManager(platform["storage"]).read_split_table(dataset, "train")
    expected = evaluate_model(runner.model, table_batches(split), runner.config.model_dump(), len(dataset.labels))
    summary = BatchOutputs(platform["storage"]).summary(task.id)
    assert summary is not None and summary["evaluation"]["rows"] == rows
    assert summary["evaluation"]["accuracy"] == pytest.approx(expected["test_accuracy"])
    assert summary["evaluation"]["macro_f1"] == pytest.approx(expected["test_macro_f1"])
    assert done.result["accuracy"] == pytest.approx(expected["test_accuracy"])


def test_an_uploaded_zip_scores_each_image_as_the_served_model_does(platform: dict[str, Any]) -> None:
    data, names = digits_zip(40)
    found = BatchInputs(platform["storage"]).save("digits.zip", io.BytesIO(data), max_bytes=1 << 24)
    assert (found.format, found.rows, found.has_labels) == ("zip", 40, True)
    task = create(
        platform, {"model": "digits@1", "input": {"upload": found.id}, "part_rows": 16, "write_results": True}
    )
    done = run_to_end(platform["manager"], task.id)
    assert done.state == SUCCEEDED, (done.error, platform["manager"].logs(task.id)[-3000:])
    table = download(platform, task.id)
    assert table.column("id").to_pylist() == names

    # Each image as a served upload: decoded by the kind, through the model server's runner.
    version = RegistryClient.connect(platform["settings"]).get_version("digits", 1)
    runner = ModelRunner.from_bytes(platform["storage"].get_bytes(version.package_key))
    kind = kind_for(runner.config)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        images = np.stack([kind.from_upload(n, archive.read(n), RequestLimits()) for n in names[:8]])
    served = runner.predict(images)
    for row, answer in zip(table.slice(0, 8).to_pylist(), served):
        assert row["label"] == answer["label"]
        expected = [answer["probabilities"][label] for label in runner.labels]
        np.testing.assert_allclose(row["probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert table.column("true_label").to_pylist() == [n.split("/")[0] for n in names]
    from aiplatform.results.actor import ResultClient

    assert done.result["results_written"] == 40
    kept = ResultClient.connect(platform["settings"]).get(f"batch-{task.id}-{names[0]}")
    assert (kept.model, kept.version, kept.output["label"]) == ("digits", 1, table.column("label")[0].as_py())


def test_an_imported_onnx_model_scores_each_image_as_it_serves(platform: dict[str, Any]) -> None:
    """A model trained elsewhere (an ONNX graph, run by ONNX Runtime) through the same path."""
    from aiplatform.model_import import import_onnx

    _, graph = onnx_classifier(num_classes=3, image_size=28, seed=5)
    storage = platform["storage"]
    version = import_onnx(
        graph,
        name="onnx-digits",
        kind="image",
        labels=["low", "mid", "high"],
        storage=storage,
        registry=RegistryClient.connect(platform["settings"]),
        preprocessing={"scale": 1 / 255},
        isolate=False,
    )
    data, names = digits_zip(12)
    found = BatchInputs(storage).save("digits.zip", io.BytesIO(data), max_bytes=1 << 24)
    task = create(platform, {"model": f"onnx-digits@{version.version}", "input": {"upload": found.id}})
    done = run_to_end(platform["manager"], task.id)
    assert done.state == SUCCEEDED, (done.error, platform["manager"].logs(task.id)[-3000:])
    table = download(platform, task.id)
    assert table.column("id").to_pylist() == names
    assert set(table.column("model_version").to_pylist()) == {version.version}

    runner = ModelRunner.from_bytes(storage.get_bytes(version.package_key))
    kind = kind_for(runner.config)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        images = np.stack([kind.from_upload(n, archive.read(n), RequestLimits()) for n in names])
    for row, answer in zip(table.to_pylist(), runner.predict(images)):
        assert row["label"] == answer["label"]
        expected = [answer["probabilities"][label] for label in runner.labels]
        np.testing.assert_allclose(row["probabilities"], expected, rtol=1e-5, atol=1e-6)
    # Its true labels (the digits' folders) are none of its classes: nothing to evaluate on.
    assert "evaluation" not in BatchOutputs(storage).summary(task.id)


def test_a_killed_job_resumes_without_rescoring_or_duplicating(platform: dict[str, Any]) -> None:
    settings, storage, manager = platform["settings"], platform["storage"], platform["manager"]
    register_bytes(settings, "slow-digits", make_package(name="slow-digits", num_classes=10, delay_ms=700))
    data, names = digits_zip(60, size=8)
    found = BatchInputs(storage).save("small.zip", io.BytesIO(data), max_bytes=1 << 24)
    params = {"model": "slow-digits", "input": {"upload": found.id}, "part_rows": 6, "batch_size": 6}
    task = create(platform, params)
    outputs = BatchOutputs(storage)

    def some_parts_written() -> bool:
        manager.reconcile()
        return len(outputs.parts(task.id)) >= 2

    wait_for(some_parts_written, 180, "the first parts to be written")
    manager.cancel(task.id)
    stopped = run_to_end(manager, task.id, timeout_s=120)
    assert stopped.state == CANCELLED
    before = {key: storage.info(key).sha256 for key in outputs.parts(task.id)}
    assert 2 <= len(before) < 10, before

    manager.queue.requeue(task.id)
    done = run_to_end(manager, task.id)
    assert done.state == SUCCEEDED, (done.error, manager.logs(task.id)[-3000:])
    summary = outputs.summary(task.id)
    assert summary is not None and summary["rows_scored_now"] <= 60 - 6 * len(before)
    assert {key: storage.info(key).sha256 for key in before} == before
    table = download(platform, task.id)
    assert table.column("id").to_pylist() == names  # every row once, in order


def test_bad_input_is_refused_at_creation_and_nothing_is_stored(platform: dict[str, Any], tmp_path: Path) -> None:
    storage, manager, dataset = platform["storage"], platform["manager"], platform["dataset"]
    inputs = BatchInputs(storage)
    tasks_before, stored_before = len(manager.list_tasks()), storage.list("batch")
    with pytest.raises(InvalidArgument, match="is empty"):
        inputs.save("empty.csv", io.BytesIO(b""), max_bytes=1024)
    with pytest.raises(NotFound, match="version=9"):
        create(platform, {"model": "digits@9", "input": {"dataset": dataset.name}})
    with pytest.raises(NotFound, match="Batch input"):
        create(platform, {"model": "digits", "input": {"upload": "0" * 64}})
    texts = inputs.save("texts.jsonl", io.BytesIO(b'{"text": "hello"}\n{"text": "world"}\n'), max_bytes=1024)
    with pytest.raises(InvalidArgument, match=r"texts.jsonl' row '0'"):
        create(platform, {"model": "digits", "input": {"upload": texts.id}})
    with pytest.raises(InvalidArgument, match="not allowed"):
        manager.create("batch-inference", {"model": "digits", "input": {"uri": "https://example.com/x.csv"}})
    with pytest.raises(NotFound, match="not found"):
        manager.create(
            "batch-inference", {"model": "digits", "input": {"dataset": "no-such-dataset", "dataset_version": "1"}}
        )
    assert len(manager.list_tasks()) == tasks_before
    assert storage.list("batch") == stored_before


def table_package() -> bytes:
    """A small XGBoost booster over three numbers and a category (the tabular template's format)."""
    import xgboost

    from aiplatform.packaging import build_package

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x[:, 3] = rng.integers(0, 2, 200)
    y = (x[:, 0] > 0).astype(int) + (x[:, 3] > 0).astype(int)
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1}, xgboost.DMatrix(x, label=y), num_boost_round=5
    )
    features = [{"name": n, "type": "number"} for n in ("a", "b", "c")]
    features.append({"name": "colour", "type": "category", "categories": ["red", "blue"]})
    return build_package(
        model_config={
            "name": "table",
            "template": "tabular-classification",
            "labels": ["low", "mid", "high"],
            "architecture": {"type": "xgboost", "num_features": 4, "num_classes": 3},
            "input": {"type": "tabular", "features": features},
        },
        model_file=bytes(booster.save_raw("json")),
        metrics={},
        lineage={"method": "test"},
    )


def table_csv(rows: int) -> bytes:
    rng = np.random.default_rng(1)
    lines = ["colour,c,b,a,label"]  # another column order than the model's, and the true label
    for i in range(rows):
        a, b, c = rng.normal(size=3)
        colour = "" if i % 7 == 0 else ("red", "blue")[i % 2]
        lines.append(f"{colour},{c:.4f},{b:.4f},{a:.4f},{('low', 'mid', 'high')[i % 3]}")
    return ("\n".join(lines) + "\n").encode()


def test_a_csv_scores_with_a_table_model_as_a_served_csv_upload(platform: dict[str, Any]) -> None:
    settings, storage = platform["settings"], platform["storage"]
    version = register_bytes(settings, "table", table_package(), template="tabular-classification")
    data = table_csv(300)
    found = BatchInputs(storage).save("rows.csv", io.BytesIO(data), max_bytes=1 << 24)
    task = create(platform, {"model": f"table@{version}", "input": {"upload": found.id}, "part_rows": 128})
    done = run_to_end(platform["manager"], task.id)
    assert done.state == SUCCEEDED, (done.error, platform["manager"].logs(task.id)[-3000:])
    table = download(platform, task.id)
    assert table.column("id").to_pylist() == [str(i) for i in range(300)]

    runner = ModelRunner.from_bytes(
        storage.get_bytes(RegistryClient.connect(settings).get_version("table", version).package_key)
    )
    rows = kind_for(runner.config).from_upload("rows.csv", data, RequestLimits(max_rows=300))
    served = runner.predict(np.stack(list(rows)))
    for row, answer in zip(table.to_pylist(), served):
        assert row["label"] == answer["label"]
        np.testing.assert_allclose(row["probabilities"], [answer["probabilities"][k] for k in runner.labels], rtol=1e-5)
    summary = BatchOutputs(storage).summary(task.id)
    assert summary is not None and summary["evaluation"]["rows"] == 300
    assert summary["evaluation"]["confusion_matrix"] and sum(map(sum, summary["evaluation"]["confusion_matrix"])) == 300

    # A column missing: refused at creation. A bad cell past the rows checked then: the job fails naming it.
    lacking = BatchInputs(storage).save("lacking.csv", io.BytesIO(data.replace(b",a,", b",z,", 1)), max_bytes=1 << 24)
    with pytest.raises(InvalidArgument, match=r"lacks column\(s\) \['a'\]"):
        create(platform, {"model": f"table@{version}", "input": {"upload": lacking.id}})
    bad = BatchInputs(storage).save("bad.csv", io.BytesIO(data + b"red,1,2,zz,low\n"), max_bytes=1 << 24)
    failing = create(platform, {"model": f"table@{version}", "input": {"upload": bad.id}, "part_rows": 128})
    failed = run_to_end(platform["manager"], failing.id)
    assert failed.state == "FAILED" and "bad.csv" in failed.error and "'a' must be a number" in failed.error, failed


def test_texts_and_a_uri_under_the_data_root(platform: dict[str, Any]) -> None:
    from tests.factories import make_text_package

    settings, storage = platform["settings"], platform["storage"]
    version = register_bytes(settings, "tiny-text", make_text_package(max_tokens=4), template="text-classification")
    long_text = " ".join(["good great happy love bad awful"] * 5)  # several windows, as served
    lines = [{"text": t, "label": "positive"} for t in ("good great", "bad awful sad", long_text)]
    root = settings.resolved_data_root
    root.mkdir(parents=True, exist_ok=True)
    (root / "texts.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    task = create(platform, {"model": f"tiny-text@{version}", "input": {"uri": "texts.jsonl"}})
    done = run_to_end(platform["manager"], task.id)
    assert done.state == SUCCEEDED, (done.error, platform["manager"].logs(task.id)[-3000:])
    table = download(platform, task.id)
    assert table.num_rows == 3

    import asyncio

    runner = ModelRunner.from_bytes(
        storage.get_bytes(RegistryClient.connect(settings).get_version("tiny-text", version).package_key)
    )
    kind = kind_for(runner.config)

    async def served(text: str) -> dict[str, Any]:
        async def submit(ids: np.ndarray) -> dict[str, Any]:
            return runner.predict(ids[None])[0]

        answer, _ = await kind.classify(kind.from_json({"text": text}, RequestLimits()), submit, runner.labels, 256)
        return answer

    for row, line in zip(table.to_pylist(), lines):
        answer = asyncio.run(served(line["text"]))
        assert row["label"] == answer["label"]
        np.testing.assert_allclose(row["probabilities"], [answer["probabilities"][k] for k in runner.labels], rtol=1e-5)


@pytest.fixture()
def remote_sources(
    platform: dict[str, Any], s3_server: str, s3_bucket: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """The platform's settings allowing ``s3_bucket/inputs`` on the test S3 server and the host
    127.0.0.1 (a private address, allowed here), a task manager under them, and a plain HTTP
    server on 127.0.0.1 serving ``tmp_path``."""
    import functools
    import http.server
    import threading

    from pydantic import SecretStr

    from tests.factories import free_port

    settings = platform["settings"].model_copy(
        update={
            "dataset_s3_prefixes": [f"{s3_bucket}/inputs"],
            "s3_endpoint_url": s3_server,
            "s3_access_key_id": SecretStr("testing"),
            "s3_secret_access_key": SecretStr("testing"),
            "dataset_http_hosts": ["127.0.0.1"],
            "dataset_private_hosts": True,
        }
    )
    manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings, storage=platform["storage"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {
            "settings": settings,
            "manager": manager,
            "folder": tmp_path,
            "url": f"http://127.0.0.1:{server.server_port}",
        }
    finally:
        server.shutdown()


def test_an_s3_folder_of_images_and_an_http_csv_are_scored_and_a_refused_uri_queues_nothing(
    platform: dict[str, Any], remote_sources: dict[str, Any], s3_bucket: str
) -> None:
    import s3fs

    settings, manager, storage = remote_sources["settings"], remote_sources["manager"], platform["storage"]
    # A folder of digits under an allowed s3:// prefix: read once into a ZIP, its folders as labels.
    data, names = digits_zip(10)
    fs = s3fs.S3FileSystem(**settings.s3_storage_options)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in names:
            fs.pipe(f"{s3_bucket}/inputs/scans/{name}", archive.read(name))
    task = manager.create(
        "batch-inference", {"model": "digits@1", "input": {"uri": f"{s3_bucket}/inputs/scans"}}, start=True
    )
    done = run_to_end(manager, task.id)
    assert done.state == SUCCEEDED, (done.error, manager.logs(task.id)[-3000:])
    table = download(platform, task.id)
    assert table.column("id").to_pylist() == sorted(names)
    assert table.column("true_label").to_pylist() == [name.split("/")[0] for name in sorted(names)]
    summary = BatchOutputs(storage).summary(task.id)
    assert summary is not None and summary["evaluation"]["rows"] == 10

    # A CSV from an allowed http(s) host, scored by the table model.
    version = register_bytes(settings, "table", table_package(), template="tabular-classification")
    (remote_sources["folder"] / "rows.csv").write_bytes(table_csv(50))
    task = manager.create(
        "batch-inference",
        {"model": f"table@{version}", "input": {"uri": f"{remote_sources['url']}/rows.csv"}},
        start=True,
    )
    done = run_to_end(manager, task.id)
    assert done.state == SUCCEEDED, (done.error, manager.logs(task.id)[-3000:])
    assert download(platform, task.id).column("id").to_pylist() == [str(i) for i in range(50)]

    # Refused by the policy at creation, naming the rule; nothing queued.
    before = len(manager.list_tasks())
    port = remote_sources["url"].rsplit(":", 1)[1]
    with pytest.raises(InvalidArgument, match="host 'localhost' is not in AIP_DATASET_HTTP_HOSTS"):
        manager.create("batch-inference", {"model": "digits", "input": {"uri": f"http://localhost:{port}/rows.csv"}})
    with pytest.raises(InvalidArgument, match="not under AIP_DATASET_S3_PREFIXES"):
        manager.create("batch-inference", {"model": "digits", "input": {"uri": f"{s3_bucket}/elsewhere/scans"}})
    assert len(manager.list_tasks()) == before
