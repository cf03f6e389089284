"""The REST API's routes: every one declares what it answers (the OpenAPI schema shows each 2xx
body's shape), the record models keep up with their stores, and a route runs on the parts of
the platform it names, each replaced here through ``app.dependency_overrides`` by a real store
in a temporary folder (no Ray, no platform)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from aiplatform.alerting.store import Alert
from aiplatform.api import deps
from aiplatform.api.app import create_api_app
from aiplatform.api.errors import install_error_handlers
from aiplatform.api.routes import models, results, tasks
from aiplatform.api.schemas.alerts import AlertPublic
from aiplatform.api.schemas.code import CodeArchivePublic
from aiplatform.api.schemas.models import ModelVersionPublic
from aiplatform.api.schemas.results import ResultPublic
from aiplatform.api.schemas.tasks import TaskPublic, TrialPublic
from aiplatform.code_archives import CodeArchive
from aiplatform.registry import ModelVersion, RegistryStore
from aiplatform.results.store import PredictionRecord, ResultStore
from aiplatform.settings import Settings
from aiplatform.storage import open_storage, sha256_bytes
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import SUCCEEDED, Task, TaskStore, Trial
from aiplatform.tasks.ray_jobs import RayJobs
from tests.factories import make_task

BINARY = {"type": "string", "format": "binary"}


def _untyped(schema: dict[str, Any]) -> bool:
    """An object schema that says nothing of its keys (what ``dict[str, Any]`` gives)."""
    return not schema or (
        schema.get("type") == "object"
        and "properties" not in schema
        and schema.get("additionalProperties", True) in (True, {})
    )


def test_every_route_declares_its_success_body() -> None:
    """A route added without a response model (or a media type for its bytes) fails here."""
    schema = create_api_app().openapi()
    untyped = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answers = {status: answer for status, answer in operation["responses"].items() if status.startswith("2")}
            assert answers, f"{method.upper()} {path} documents no 2xx answer"
            for status, answer in answers.items():
                if status == "204":
                    continue
                content = answer.get("content", {})
                if not content or any(_untyped(media.get("schema", {})) for media in content.values()):
                    untyped.append(f"{method.upper()} {path} {status}")
    assert not untyped, f"routes whose 2xx body has no shape: {untyped}"
    names = set(schema["components"]["schemas"])
    assert {"TaskList", "ModelDetail", "ResultList", "SweepPublic", "AlertList"} <= names


@pytest.mark.parametrize(
    ("model", "record"),
    [
        (TaskPublic, Task),
        (TrialPublic, Trial),
        (ModelVersionPublic, ModelVersion),
        (ResultPublic, PredictionRecord),
        (AlertPublic, Alert),
        (CodeArchivePublic, CodeArchive),
    ],
)
def test_a_record_model_declares_every_field_of_its_store(model: type[BaseModel], record: type) -> None:
    """So the schema never lags behind the store (a field the model missed would still be sent,
    extra keys pass, but clients would not be told of it)."""
    stored = [field.name for field in dataclasses.fields(record)]
    assert list(model.model_fields)[: len(stored)] == stored


# -- routes on stores of their own, through dependency_overrides -----------------------------------
def _app(*routers: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app


def test_a_task_page_asks_ray_about_its_job_at_most_every_few_seconds_and_a_gone_job_stays_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiplatform.tasks import manager as manager_module

    store = TaskStore(tmp_path / "tasks.sqlite")
    asked: list[str] = []
    jobs_in_ray = {"job-1"}

    class Jobs:  # Ray's job API as the manager sees it: whether it has the job
        def state(self, job_id: str) -> object | None:
            asked.append(job_id)
            return "RUNNING" if job_id in jobs_in_ray else None

    clock = [1000.0]
    monkeypatch.setattr(manager_module.time, "monotonic", lambda: clock[0])
    manager = TaskManager(store, Jobs(), Settings())  # type: ignore[arg-type]
    task = store.claim(store.start(make_task(store).id).id, "job-1")
    assert [manager.ray_job_known(task) for _ in range(5)] == [True] * 5 and asked == ["job-1"]
    jobs_in_ray.clear()
    clock[0] += manager_module.JOB_KNOWN_TTL_S
    assert manager.ray_job_known(task) is False and len(asked) == 2
    clock[0] += 3600
    assert manager.ray_job_known(task) is False and len(asked) == 2  # gone for good: not asked again
    store.close()


@pytest.fixture()
def task_api(tmp_path: Path) -> Iterator[tuple[TestClient, TaskStore]]:
    store = TaskStore(tmp_path / "tasks.sqlite")
    settings = Settings(dashboard_url="http://127.0.0.1:8265")
    app = _app(tasks.router)
    app.dependency_overrides[deps.get_tasks] = lambda: TaskManager(store, RayJobs(settings), settings)  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client, store
    store.close()


def test_task_routes_answer_from_the_task_manager_they_are_given(task_api: tuple[TestClient, TaskStore]) -> None:
    client, store = task_api
    made = make_task(store)
    done = make_task(store, priority=3)
    store.start(done.id)
    store.claim(done.id, "job-7")
    store.report_progress(done.id, {"epoch": 1, "epochs": 1, "val_accuracy": 0.5})
    done = store.finish(done.id, SUCCEEDED, result={"model": "m", "version": 1})

    page = client.get("/v1/tasks", params={"limit": 1})
    assert page.status_code == 200
    assert page.json() == {
        "tasks": [{**done.to_dict(), "waiting": None}],
        "counts": store.counts(),
        "next_before": done.id,
    }
    assert client.get("/v1/tasks/counts").json() == store.counts()
    assert client.get(f"/v1/tasks/{done.id}").json() == {
        **done.to_dict(),
        "waiting": None,
        "ray_dashboard_url": "http://127.0.0.1:8265/#/jobs/job-7",
        "ray_job_known": None,  # no Ray answers there: unknown, so the link stays
    }
    assert client.get(f"/v1/tasks/{made.id}").json()["ray_dashboard_url"] is None
    assert client.get(f"/v1/tasks/{done.id}/metrics").json() == {
        "task_id": done.id,
        "history": [{"epoch": 1, "epochs": 1, "val_accuracy": 0.5}],
    }
    missing = client.get("/v1/tasks/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


@pytest.fixture()
def registry_api(tmp_path: Path) -> Iterator[tuple[TestClient, RegistryStore]]:
    storage = open_storage(str(tmp_path / "art"))
    registry = RegistryStore(tmp_path / "registry.sqlite", storage)
    app = _app(models.router, results.router)
    app.dependency_overrides[deps.get_registry] = lambda: registry
    app.dependency_overrides[deps.get_storage] = lambda: storage
    app.dependency_overrides[deps.get_warm] = lambda: lambda ref: None
    with TestClient(app) as client:
        yield client, registry
    registry.close()


def _register(registry: RegistryStore, content: bytes, **options: Any) -> ModelVersion:
    key = f"packages/m/{sha256_bytes(content)[:12]}.zip"
    registry.storage.put_bytes(key, content)
    return registry.register_version("m", package_key=key, sha256=sha256_bytes(content), template="t", **options)


def test_model_routes_answer_from_the_registry_they_are_given(registry_api: tuple[TestClient, RegistryStore]) -> None:
    client, registry = registry_api
    first = _register(registry, b"one", metrics={"test_accuracy": 0.9, "epochs": 2})
    second = _register(registry, b"two", lineage={"parent": 1, "method": "int8"})

    assert client.get("/v1/models").json() == {"models": registry.list_models()}
    detail = client.get("/v1/models/m", params={"limit": 1}).json()
    assert detail == {"name": "m", "aliases": {}, "traffic": {}, "versions": [second.to_dict()], "next_before": 2}
    assert client.get("/v1/models/m/versions/1").json() == first.to_dict()  # an int metric stays an int
    assert client.get("/v1/models/m/versions/2/lineage").json() == {
        "name": "m",
        "version": 2,
        "lineage": [{"version": 2, "parent": 1, "method": "int8"}, {"version": 1}],
    }
    # Another alias than production: no gate, and no gate's keys in the answer.
    moved = client.post("/v1/models/m/promote", json={"version": 1, "alias": "staging"})
    assert moved.json() == {"name": "m", "version": 1, "alias": "staging", "message": "staging -> m v1"}
    history = client.get("/v1/models/m/aliases/staging/history").json()
    assert history["history"][0]["version"] == 1 and set(history["history"][0]) == {
        "version",
        "previous_version",
        "at",
        "by",
    }
    package = client.get("/v1/models/m/versions/2/package")
    assert package.content == b"two" and package.headers["x-checksum-sha256"] == hashlib.sha256(b"two").hexdigest()
    assert client.get("/v1/models/m/traffic").json() == {"name": "m", "weights": {}}


def test_a_result_has_a_preview_only_when_asked(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    record = PredictionRecord(
        id="r1",
        model="m",
        version=1,
        input_digest="d" * 64,
        output={"label": "7"},
        latency_ms=2.0,
        created_at=1.7e9,
        features={"length": 12},
    )
    store.record_batch([record])
    app = _app(results.router)
    app.dependency_overrides[deps.get_results] = lambda: store
    app.dependency_overrides[deps.get_storage] = lambda: open_storage(str(tmp_path / "art"))
    with TestClient(app) as client:
        assert client.get("/v1/results/r1").json() == record.to_dict()
        assert client.get("/v1/results").json() == {"results": [record.to_dict()], "next_cursor": None}
        assert client.get("/v1/results/r1", params={"preview": True}).json() == {
            **record.to_dict(),
            "preview": {"kind": "none", "text": "input not kept (AIP_SERVE_STORE_INPUTS=false)"},
        }
    store.close()


def test_an_import_names_its_kind_or_a_dataset_of_it(
    registry_api: tuple[TestClient, RegistryStore], tmp_path: Path
) -> None:
    """The graph alone does not say what its input is: no kind is assumed."""
    from aiplatform.datasets import DatasetManager
    from aiplatform.kinds import KINDS
    from aiplatform.model_import import ImportSlots

    client, registry = registry_api
    app = client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_datasets] = lambda: DatasetManager(registry.storage)
    app.dependency_overrides[deps.get_settings] = lambda: Settings()
    app.dependency_overrides[deps.get_import_slots] = lambda: ImportSlots(1)
    answer = client.post("/v1/models/elsewhere/import", data={"labels": "a,b"}, files={"file": ("m.onnx", b"graph")})
    assert answer.status_code == 400 and f"'kind' field (one of {sorted(KINDS)})" in answer.json()["message"]
    assert client.get("/v1/models").json() == {"models": []}
