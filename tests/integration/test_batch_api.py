"""Batch inference through the REST API and the ``aip batch`` CLI: the platform's API served on
127.0.0.1 by uvicorn in this process (its scheduler, actors and batch jobs on the session's Ray),
every bad request a 4xx naming the problem with nothing queued, and jobs over a dataset split and
an uploaded ZIP of images scored to a downloadable Parquet file."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from aiplatform.datasets import DatasetManager, ImageDatasetSpec
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import (
    TINY_CNN_PARAMS,
    digits_package,
    free_port,
    make_digit_images,
    platform_settings,
    png_bytes,
    register_bytes,
    wait_for,
)

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
JOB_TIMEOUT_S = 300.0
"""A tiny job's whole run: a Ray job's start, a model actor loading the package, a few hundred rows."""


class Served:
    """The platform's API app on a free loopback port, served by uvicorn in a thread."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from aiplatform.api.app import create_api_app
        from aiplatform.api.deps import Platform, set_platform

        app = create_api_app()
        set_platform(app, Platform.connect(settings, warm=lambda _: None))
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started, 60, "the API server to listen")
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A platform with a small MNIST version, a 10-class CNN of its digits (``digits``,
    production: v1), and its API on 127.0.0.1."""
    from aiplatform.registry import RegistryClient

    with platform_settings(tmp_path_factory.mktemp("batch"), "batch", task_poll_interval_s=0.5) as settings:
        storage = storage_from_settings(settings)
        dataset = DatasetManager.from_settings(storage, settings).build(ImageDatasetSpec(source="mnist", max_rows=200))
        version = register_bytes(settings, "digits", digits_package(dataset.labels))
        RegistryClient.connect(settings).set_alias("digits", "production", version)
        ensure_scheduler(settings)
        with Served(settings) as url, httpx.Client(base_url=url, timeout=60) as api:
            yield {"api": api, "url": url, "settings": settings, "dataset": dataset, "version": version}


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}, body
    return str(body["message"])


def wait_finished(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (job := api.get(f"/v1/batch-jobs/{job_id}").json())["state"] in FINISHED and job,
        JOB_TIMEOUT_S,
        f"batch job {job_id} to finish",
    )


def digits_zip(count: int = 12) -> bytes:
    """Real MNIST digits as PNG files, each in the folder of its true label."""
    images, labels = make_digit_images(count)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            archive.writestr(f"{label}/digit-{index}.png", png_bytes(image))
    return buffer.getvalue()


def total_tasks(api: httpx.Client) -> int:
    return int(api.get("/v1/tasks/counts").json()["total"])


# -- uploads ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "files, status, fragment",
    [
        ({"file": ("empty.csv", b"")}, 400, "Input 'empty.csv' is empty"),
        ({"file": ("noise.bin", bytes(range(256)) * 8)}, 400, "in no format a batch job reads"),
        ({"file": ("broken.zip", b"PK\x05\x06" + b"\x00" * 18)}, 400, "damaged or empty ZIP"),
        ({"file": ("texts.jsonl", b'{"text": "fine"}\n[1, 2]\n')}, 400, "line 2 must be an object"),
        ({"file": ("header.csv", b"a,b\n")}, 400, "has a header but no rows"),
        ({"other": ("rows.csv", b"a,b\n1,2\n")}, 400, "needs a 'file' field"),
        ({"file": ("big.csv", b"x\n" + b"1\n" * (17 * 1024 * 1024))}, 413, "the limit is 33554432 bytes"),
    ],
)
def test_a_bad_upload_is_refused_by_name(
    platform: dict[str, Any], files: dict[str, tuple[str, bytes]], status: int, fragment: str
) -> None:
    assert fragment in error_of(platform["api"].post("/v1/batch-inputs", files=files), status)


def test_an_upload_is_kept_once_by_its_content_and_refused_by_a_model_it_does_not_fit(
    platform: dict[str, Any],
) -> None:
    api = platform["api"]
    content = b"x1,x2,label\n1,2,a\n3,4,b\n5,6,a\n"
    sent = {"file": ("rows.csv", content)}
    stored = api.post("/v1/batch-inputs", files=sent)
    assert stored.status_code == 201, stored.text
    assert {k: stored.json()[k] for k in ("format", "filename", "rows", "bytes", "has_labels")} == {
        "format": "csv",
        "filename": "rows.csv",
        "rows": 3,
        "bytes": len(content),
        "has_labels": True,
    }
    assert api.post("/v1/batch-inputs", files=sent).json()["id"] == stored.json()["id"]
    # Table rows are not images: refused when the job is created, with nothing queued.
    before = total_tasks(api)
    refused = api.post("/v1/batch-jobs", json={"model": "digits", "input": {"upload": stored.json()["id"]}})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_argument", refused.text
    assert total_tasks(api) == before
    # The generic task route checks a batch task as the batch route does.
    generic = {"template": "batch-inference", "params": {"model": "digits", "input": {"upload": stored.json()["id"]}}}
    assert api.post("/v1/tasks", json=generic).json()["error"] == "invalid_argument"
    missing = {"template": "batch-inference", "params": {"model": "nope", "input": {"dataset": "mnist"}}}
    assert "nope" in error_of(api.post("/v1/tasks", json=missing), 404)
    assert total_tasks(api) == before
    assert "multipart/form-data" in error_of(api.post("/v1/batch-inputs", content=b"x1\n1\n"), 400)


# -- creation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"model": "nope", "input": {"dataset": "mnist"}}, 404, "nope"),
        ({"model": "digits@99", "input": {"dataset": "mnist"}}, 404, "99"),
        ({"model": "digits@", "input": {"dataset": "mnist"}}, 400, "must look like NAME@VERSION"),
        ({"model": "digits", "input": {}}, 400, "body.input: Value error, name exactly one of dataset, upload or uri"),
        ({"model": "digits", "input": {"dataset": "mnist", "uri": "s3://b/x.csv"}}, 400, "name exactly one of"),
        ({"model": "digits", "input": {"dataset": "mnist", "split": "holdout"}}, 400, "body.input.split"),
        ({"model": "digits", "input": {"upload": "abc"}}, 400, "body.input.upload"),
        ({"model": "digits", "input": {"upload": "0" * 64}}, 404, "upload the file first"),
        ({"model": "digits", "input": {"dataset": "nothing-here"}}, 404, "nothing-here"),
        ({"model": "digits", "input": {"dataset": "mnist", "dataset_version": "0000"}}, 404, "not found"),
        ({"model": "digits", "input": {"uri": "/etc/passwd"}}, 400, "/etc/passwd"),
        ({"model": "digits", "input": {"dataset": "mnist"}, "batch_size": 0}, 400, "body.batch_size"),
        ({"model": "digits", "input": {"dataset": "mnist"}, "priority": 101}, 400, "body.priority"),
        ({"model": "digits", "input": {"dataset": "mnist"}, "surprise": 1}, 400, "body.surprise: Extra inputs"),
        ({"input": {"dataset": "mnist"}}, 400, "body.model: Field required"),
    ],
)
def test_a_bad_job_is_refused_naming_the_problem_and_queues_nothing(
    platform: dict[str, Any], body: dict[str, Any], status: int, fragment: str
) -> None:
    api = platform["api"]
    before = total_tasks(api)
    assert fragment in error_of(api.post("/v1/batch-jobs", json=body), status)
    assert total_tasks(api) == before


def test_jobs_are_listed_shown_and_cancelled_as_tasks_and_only_batch_jobs_are_batch_jobs(
    platform: dict[str, Any],
) -> None:
    api, dataset = platform["api"], platform["dataset"]
    body = {"model": "digits@production", "input": {"dataset": "mnist", "dataset_version": dataset.version}}
    created = api.post("/v1/batch-jobs", json={**body, "start": False, "priority": 5})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["template"] == "batch-inference" and job["state"] == "CREATED" and job["priority"] == 5
    assert job["params"]["input"] == {**body["input"], "split": "test", "upload": None, "uri": None}
    assert job["params"]["evaluate"] is True
    assert job["params"]["write_results"] is False and job["summary"] is None

    shown = api.get(f"/v1/batch-jobs/{job['id']}").json()
    assert shown["id"] == job["id"] and shown["waiting"] is None and shown["ray_dashboard_url"] is None
    listed = api.get("/v1/batch-jobs", params={"state": ["CREATED"]}).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    assert {j["template"] for j in api.get("/v1/batch-jobs").json()["jobs"]} == {"batch-inference"}
    assert "has written no output yet" in error_of(api.get(f"/v1/batch-jobs/{job['id']}/output"), 409)

    # A training task is a task, not a batch job: every batch route says so.
    training = api.post("/v1/tasks", json={"template": "cnn-classification", "params": TINY_CNN_PARAMS}).json()
    for method, path in (
        ("GET", "/v1/batch-jobs/{}"),
        ("GET", "/v1/batch-jobs/{}/output"),
        ("POST", "/v1/batch-jobs/{}/cancel"),
        ("GET", "/v1/batch-jobs/{}/logs"),
    ):
        for task_id in (training["id"], "missing"):
            assert f"Batch job {task_id!r} not found" in error_of(api.request(method, path.format(task_id)), 404)
    assert training["id"] not in [j["id"] for j in api.get("/v1/batch-jobs").json()["jobs"]]
    assert api.post(f"/v1/tasks/{training['id']}/cancel").json()["state"] == "CANCELLED"

    assert api.post(f"/v1/batch-jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"
    assert "wrote no output (it is CANCELLED)" in error_of(api.get(f"/v1/batch-jobs/{job['id']}/output"), 404)
    assert api.get(f"/v1/tasks/{job['id']}").json()["state"] == "CANCELLED"  # the same task
    assert "query.limit" in error_of(api.get("/v1/batch-jobs", params={"limit": 0}), 400)


# -- jobs that run ------------------------------------------------------------------------------------
def test_a_dataset_split_is_scored_evaluated_and_downloaded_as_one_parquet_file(platform: dict[str, Any]) -> None:
    api, dataset, version = platform["api"], platform["dataset"], platform["version"]
    rows = dataset.rows("test")
    body = {
        "model": "digits@production",
        "input": {"dataset": "mnist", "dataset_version": dataset.version, "split": "test"},
        "idempotency_key": "batch-api-1",
    }
    created = api.post("/v1/batch-jobs", json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["state"] in ("QUEUED", "RUNNING")
    assert api.post("/v1/batch-jobs", json=body).json()["id"] == job_id  # the same key: the same job

    done = wait_finished(api, job_id)
    assert done["state"] == "SUCCEEDED", api.get(f"/v1/batch-jobs/{job_id}/logs").json()["logs"][-3000:]
    progress = done["progress"]["metrics"]
    assert progress["rows_done"] == progress["rows_total"] == rows and progress["rows_per_s"] > 0
    summary = done["summary"]
    assert summary["rows"] == rows
    evaluation = summary["evaluation"]
    assert 0 <= evaluation["accuracy"] <= 1 and 0 <= evaluation["macro_f1"] <= 1
    assert evaluation["labels"] == [str(d) for d in range(10)]
    assert sum(map(sum, evaluation["confusion_matrix"])) == rows
    assert job_id in [j["id"] for j in api.get("/v1/batch-jobs", params={"state": ["SUCCEEDED"]}).json()["jobs"]]
    assert f"{job_id}" in api.get(f"/v1/batch-jobs/{job_id}/logs").json()["logs"]

    output = api.get(f"/v1/batch-jobs/{job_id}/output")
    assert output.status_code == 200, output.text
    assert output.headers["content-type"] == "application/vnd.apache.parquet"
    assert f'filename="batch-{job_id}.parquet"' in output.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(output.content))
    assert table.num_rows == rows
    assert {"id", "label", "probabilities", "model_version", "true_label"} <= set(table.column_names)
    assert len(set(table.column("id").to_pylist())) == rows  # no row twice
    assert set(table.column("model_version").to_pylist()) == {version}
    predicted = table.column("label").to_pylist()
    truth = table.column("true_label").to_pylist()
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / rows
    assert accuracy == pytest.approx(evaluation["accuracy"])
    assert all(len(p) == 10 and abs(sum(p) - 1) < 1e-3 for p in table.column("probabilities").to_pylist())


def test_the_cli_uploads_a_zip_watches_the_job_and_downloads_its_parquet(
    platform: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aip.cli import main

    settings: Settings = platform["settings"]
    monkeypatch.setenv("AIP_HOME", str(settings.home))
    monkeypatch.setenv("AIP_API_URL", platform["url"])
    monkeypatch.setenv("AIP_API_AUTH", "off")
    monkeypatch.setenv("AIP_RAY_ADDRESS", "auto")  # so main() leaves this process's Ray environment alone
    archive = tmp_path / "digits.zip"
    archive.write_bytes(digits_zip(12))

    assert main(["batch", "create", "--model", "digits", "--file", str(archive), "--watch", "--interval", "0.5"]) == 0
    shown = capsys.readouterr()
    assert "input " in shown.err and "zip, 12 rows" in shown.err
    job_id = shown.out.split()[2]
    assert "SUCCEEDED, 12 rows" in shown.out and "accuracy" in shown.out and f"aip batch download {job_id}" in shown.out
    assert "12/12 rows" in shown.out  # the progress bar's last line

    target = tmp_path / "scores.parquet"
    assert main(["batch", "download", job_id, "-o", str(target)]) == 0
    table = pq.read_table(target)
    assert table.num_rows == 12 and sorted(table.column("id").to_pylist())[0].endswith(".png")
    assert not list(tmp_path.glob(".*.part"))
    assert main(["batch", "list"]) == 0 and job_id in capsys.readouterr().out
    assert main(["batch", "show", job_id]) == 0 and '"rows_done": 12' in capsys.readouterr().out

    # Errors: a message and exit status 2, nothing written.
    assert main(["batch", "create", "--model", "nope", "--dataset", "mnist"]) == 2
    assert "error: " in capsys.readouterr().err
    assert main(["batch", "create", "--model", "digits", "--dataset", "mnist", "--file", str(archive)]) == 2
    assert "exactly one input" in capsys.readouterr().err
    assert main(["batch", "download", "missing", "-o", str(tmp_path / "none.parquet")]) == 2
    assert "Batch job 'missing' not found" in capsys.readouterr().err
    assert not (tmp_path / "none.parquet").exists()

    # A job that ends other than SUCCEEDED: watch exits 1.
    assert main(["batch", "create", "--model", "digits@1", "--file", str(archive), "--no-start", "--json"]) == 0
    waiting = json.loads(capsys.readouterr().out)
    assert waiting["state"] == "CREATED" and waiting["params"]["model"] == "digits@1"
    assert main(["batch", "download", waiting["id"]]) == 2
    assert "has written no output yet (it is CREATED)" in capsys.readouterr().err
    assert main(["batch", "cancel", waiting["id"]]) == 0 and "CANCELLED" in capsys.readouterr().out
    assert main(["batch", "watch", waiting["id"]]) == 1
    assert f"batch job {waiting['id']} CANCELLED" in capsys.readouterr().out


def test_the_batch_routes_are_behind_the_api_token(platform: dict[str, Any]) -> None:
    """The access guard covers the batch routes as every other: no token, no answer."""
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from aiplatform.api.app import create_api_app
    from aiplatform.api.deps import Platform, set_platform

    token = "batch-token-0123456789abcdef"
    settings = platform["settings"].model_copy(update={"api_auth": "token", "api_token": SecretStr(token)})
    app = create_api_app()
    set_platform(app, Platform.connect(settings, warm=lambda _: None))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for method, path in (
            ("GET", "/v1/batch-jobs"),
            ("POST", "/v1/batch-jobs"),
            ("POST", "/v1/batch-inputs"),
            ("GET", "/v1/batch-jobs/x/output"),
            ("POST", "/v1/batch-jobs/x/cancel"),
        ):
            assert client.request(method, path).status_code == 401, (method, path)
        assert client.get("/v1/batch-jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_job_over_more_rows_than_the_output_cap_is_a_413_naming_the_setting(platform: dict[str, Any]) -> None:
    """``AIP_BATCH_MAX_OUTPUT_ROWS`` bounds the rows a job scores (the input's, or ``max_rows``):
    over it the creation is a 413 with both numbers and nothing is queued; under it, accepted."""
    from fastapi.testclient import TestClient

    from aiplatform.api.app import create_api_app
    from aiplatform.api.deps import Platform, set_platform

    dataset = platform["dataset"]
    rows = dataset.rows("train")
    cap = rows - 1
    settings = platform["settings"].model_copy(update={"batch_max_output_rows": cap})
    app = create_api_app()
    set_platform(app, Platform.connect(settings, warm=lambda _: None))
    body = {"model": "digits", "input": {"dataset": "mnist", "dataset_version": dataset.version, "split": "train"}}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        before = total_tasks(client)
        refused = client.post("/v1/batch-jobs", json=body)
        assert refused.status_code == 413 and refused.json()["error"] == "too_large", refused.text
        message = refused.json()["message"]
        assert f"would score {rows} rows" in message and f"is {cap} (AIP_BATCH_MAX_OUTPUT_ROWS)" in message
        assert total_tasks(client) == before
        accepted = client.post("/v1/batch-jobs", json={**body, "max_rows": cap, "start": False})
        assert accepted.status_code == 201, accepted.text
        assert client.post(f"/v1/batch-jobs/{accepted.json()['id']}/cancel").json()["state"] == "CANCELLED"
