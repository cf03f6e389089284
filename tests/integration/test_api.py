"""The REST API and UI files through the real Serve gateway on 127.0.0.1, on real actors and jobs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import TINY_CNN_PARAMS, register_versions


@pytest.fixture(scope="module")
def api(shared_platform: dict[str, Any]) -> Iterator[httpx.Client]:
    register_versions(shared_platform["settings"], "api-tiny", count=2)
    with httpx.Client(base_url=shared_platform["url"], timeout=60) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}, body
    return str(body["message"])


def wait_finished(api: httpx.Client, task_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        task = api.get(f"/v1/tasks/{task_id}").json()
        if task["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return task
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_templates_come_with_their_parameter_schema(api: httpx.Client) -> None:
    templates = api.get("/v1/templates").json()["templates"]
    cnn = next(t for t in templates if t["name"] == "cnn-classification")
    assert cnn["title"] == "CNN classification"
    assert cnn["schema"]["properties"]["epochs"]["minimum"] == 1
    assert "Training template 'nope' not found" in error_of(api.get("/v1/templates/nope"), 404)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"template": "nope"}, 404, "Training template 'nope' not found"),
        (
            {"template": "cnn-classification", "params": {"epochs": 0}},
            400,
            "epochs: Input should be greater than or equal to 1",
        ),
        (
            {"template": "cnn-classification", "params": {"epochs": "many"}},
            400,
            "epochs: Input should be a valid integer",
        ),
        ({"template": "cnn-classification", "params": {"colour": 1}}, 400, "colour: Extra inputs are not permitted"),
        (
            {"template": "cnn-classification", "priority": 101},
            400,
            "body.priority: Input should be less than or equal to 100",
        ),
        ({"template": "cnn-classification", "params": []}, 400, "body.params: Input should be a valid dictionary"),
        ({"params": {}}, 400, "body.template: Field required"),
        ({"template": "cnn-classification", "surprise": True}, 400, "body.surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_task_requests_name_the_problem_and_store_nothing(
    api: httpx.Client, body: dict, status: int, fragment: str
) -> None:
    before = api.get("/v1/tasks/counts").json()["total"]
    assert fragment in error_of(api.post("/v1/tasks", json=body), status)
    assert api.get("/v1/tasks/counts").json()["total"] == before


def test_unknown_ids_and_wrong_states_are_4xx(api: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/tasks/missing"),
        ("POST", "/v1/tasks/missing/start"),
        ("POST", "/v1/tasks/missing/cancel"),
        ("GET", "/v1/tasks/missing/logs"),
        ("GET", "/v1/tasks/missing/metrics"),
    ):
        assert "Task 'missing' not found" in error_of(api.request(method, path), 404)
    task = api.post("/v1/tasks", json={"template": "cnn-classification", "params": TINY_CNN_PARAMS}).json()
    assert task["state"] == "CREATED"
    assert api.post(f"/v1/tasks/{task['id']}/cancel").json()["state"] == "CANCELLED"
    assert "only a CREATED task can be started" in error_of(api.post(f"/v1/tasks/{task['id']}/start"), 409)
    assert "Unknown task state 'DONE'" in error_of(api.get("/v1/tasks?state=DONE"), 400)
    assert "query.limit" in error_of(api.get("/v1/tasks?limit=0"), 400)
    assert "No route" in error_of(api.get("/v1/nothing-here"), 404)


def test_a_task_created_through_the_api_trains_and_is_fully_visible(api: httpx.Client) -> None:
    body = {"template": "cnn-classification", "params": {**TINY_CNN_PARAMS, "epochs": 2}, "model_name": "api-cnn"}
    created = api.post("/v1/tasks", json=body, headers={"Idempotency-Key": "api-test-1"})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert api.post("/v1/tasks", json=body, headers={"Idempotency-Key": "api-test-1"}).json()["id"] == task_id
    assert api.post(f"/v1/tasks/{task_id}/start").json()["state"] in ("QUEUED", "RUNNING")
    done = wait_finished(api, task_id)
    assert done["state"] == "SUCCEEDED", api.get(f"/v1/tasks/{task_id}/logs").text
    # Run by the scheduler as a Ray job, stored with the template's defaults filled in.
    assert done["params"]["learning_rate"] == 3e-3
    assert done["ray_job_id"] == f"aip-task-{task_id}-1" and done["attempts"] == 1
    assert done["progress"]["epoch"] == 2 and done["progress"]["epochs"] == 2
    history = api.get(f"/v1/tasks/{task_id}/metrics").json()["history"]
    assert [m["epoch"] for m in history] == [1, 2] and {"train_loss", "val_accuracy"} <= set(history[0])
    assert f"task {task_id}" in api.get(f"/v1/tasks/{task_id}/logs").json()["logs"]
    assert "already SUCCEEDED" in error_of(api.post(f"/v1/tasks/{task_id}/cancel"), 409)
    listed = api.get("/v1/tasks", params={"state": ["SUCCEEDED"], "template": "cnn-classification"}).json()
    assert task_id in [t["id"] for t in listed["tasks"]] and listed["counts"]["SUCCEEDED"] >= 1

    version = done["result"]["version"]
    model = api.get("/v1/models/api-cnn").json()
    assert [v["version"] for v in model["versions"]] == [version]
    lineage = api.get(f"/v1/models/api-cnn/versions/{version}/lineage").json()["lineage"]
    assert lineage[0]["task_id"] == task_id and lineage[0]["dataset"].startswith("mnist@")
    assert lineage[0]["ray_job_id"] == done["ray_job_id"]

    name, dataset_version = lineage[0]["dataset"].split("@")
    datasets = api.get("/v1/datasets").json()["datasets"]
    assert lineage[0]["dataset"] in [d["ref"] for d in datasets]
    manifest = api.get(f"/v1/datasets/{name}/{dataset_version}").json()
    assert manifest["splits"]["train"]["rows"] > 0
    profile = api.get(f"/v1/datasets/{name}/{dataset_version}/profile").json()
    assert len(profile["profile"]["train"]["intensity_histogram"]) > 1 and profile["per_class"]["train"]
    assert "not found" in error_of(api.get(f"/v1/datasets/{name}/0000"), 404)


PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "tiny_template"


@pytest.fixture()
def tiny_template_installed(tmp_path: Path) -> Iterator[None]:
    """pip-installs tests/plugins/tiny_template into this environment (the platform's processes
    share it), as a team would install its own template package; uninstalled after."""
    source = tmp_path / "tiny_template"
    shutil.copytree(PLUGIN, source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--no-build-isolation", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    try:
        yield
    finally:
        removed = subprocess.run(
            [*pip, "uninstall", "--yes", "aip-tiny-template"], capture_output=True, text=True, timeout=120
        )
        assert removed.returncode == 0, removed.stderr[-3000:]


def test_a_template_installed_as_a_package_trains_through_the_api(
    api: httpx.Client, tiny_template_installed: None
) -> None:
    templates = {t["name"]: t for t in api.get("/v1/templates").json()["templates"]}
    assert {"cnn-classification", "tiny-digits"} <= set(templates)
    assert templates["tiny-digits"]["title"] == "Tiny digits (plugin)"
    assert templates["tiny-digits"]["schema"]["properties"]["epochs"]["maximum"] == 3
    refused = api.post("/v1/tasks", json={"template": "tiny-digits", "params": {"epochs": 9}})
    assert "epochs: Input should be less than or equal to 3" in error_of(refused, 400)

    created = api.post("/v1/tasks", json={"template": "tiny-digits", "start": True})
    assert created.status_code == 201, created.text
    done = wait_finished(api, created.json()["id"])
    assert done["state"] == "SUCCEEDED", api.get(f"/v1/tasks/{done['id']}/logs").text
    assert done["params"]["max_rows"] == 600  # the plugin's defaults, filled in by its schema
    version = api.get(f"/v1/models/tiny-digits/versions/{done['result']['version']}").json()
    assert version["template"] == "tiny-digits" and version["lineage"]["template"] == "tiny-digits"


def test_models_promote_rollback_and_download(api: httpx.Client) -> None:
    models = api.get("/v1/models").json()["models"]
    assert "api-tiny" in [m["name"] for m in models]
    # these test packages carry no test accuracy: the production gate refuses them unless forced
    assert "deploy with force" in error_of(api.post("/v1/models/api-tiny/promote", json={"version": 2}), 409)
    first = api.post("/v1/models/api-tiny/promote", json={"version": 1, "force": True})
    assert first.status_code == 200, first.text
    second = api.post("/v1/models/api-tiny/promote", json={"version": 2, "force": True}).json()
    assert (second["version"], second["previous_version"]) == (2, 1)
    assert api.get("/v1/models/api-tiny").json()["aliases"]["production"] == 2
    back = api.post("/v1/models/api-tiny/rollback").json()
    assert back["version"] == 1 and api.get("/v1/models/api-tiny").json()["aliases"]["production"] == 1
    staged = api.post("/v1/models/api-tiny/promote", json={"version": 2, "alias": "staging"}).json()
    assert staged["alias"] == "staging"
    assert api.get("/v1/models/api-tiny/versions/2").json()["aliases"] == ["staging"]

    package = api.get("/v1/models/api-tiny/versions/2/package")
    assert package.status_code == 200 and package.headers["content-type"] == "application/zip"
    assert hashlib.sha256(package.content).hexdigest() == package.headers["x-checksum-sha256"]

    assert "version=9" in error_of(api.post("/v1/models/api-tiny/promote", json={"version": 9}), 404)
    assert "Alias 'Bad Alias'" in error_of(
        api.post("/v1/models/api-tiny/promote", json={"version": 1, "alias": "Bad Alias"}), 400
    )
    assert "Model 'ghost' not found" in error_of(api.get("/v1/models/ghost"), 404)


def test_openapi_docs_and_ui_files_are_served(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/tasks", "/v1/templates", "/v1/models/{name}/promote", "/v1/models/{name}/predict"} <= set(paths)
    assert "swagger" in api.get("/docs").text.lower()
    index = api.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert api.get("/ui/main.js").status_code == 200
    assert error_of(api.get("/ui/..%2Fapp.py"), 404)
    assert error_of(api.get("/ui/.hidden.js"), 404)
