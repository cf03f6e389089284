"""Isolation between projects, generated from the platform's own route table: every REST route of
the gateway (the v1 API, the fast inference route, the OIP REST routes, the server-sent event
stream) and every method of the OIP gRPC service, called by a maintainer of project B on project
A's resources (A's model, task, result, alert, loop, batch upload and job, dataset, code
archive, analysis chart, project), answers 404, and every listing B reads shows nothing of A. A
route added later that this test cannot place (a path parameter it has no resource of A for, a
body route with no body below) fails it, so a new route is scoped or named here on purpose."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from aiplatform.access import Action, request_action
from aiplatform.api.security import IN_A_PROJECT, is_public
from aiplatform.settings import Settings
from tests.factories import (
    TINY_CNN_PARAMS,
    platform_settings,
    png_bytes,
    register_versions,
    served_grpc_address,
    served_platform,
    wait_for,
)

pytestmark = pytest.mark.integration

TOKEN = "bootstrap-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
IN_A = {**ADMIN, "X-AIP-Project": "a"}
IMAGE = np.zeros((8, 8, 1), dtype=int).tolist()

PLATFORM_CATALOGS = {"GET /v1/templates/{name}"}
"""The same for every project (the platform's templates): nothing of A to hide."""
NOT_MADE_HERE = {
    # A loop run needs a retraining run (data, training, a canary): these routes check the
    # run's model like the policy routes do (``routes/loops.py`` ``owned_run``), tested in
    # tests/unit/test_model_scope.py.
    "GET /v1/loops/runs/{run_id}",
    "GET /v1/loops/runs/{run_id}/lineage",
    "GET /v1/loops/runs/{run_id}/deliveries",
}
MODEL_FREE_RPCS = {"ServerLive", "ServerReady", "ServerMetadata"}
"""gRPC methods on the server, not on a model: nothing of A in them."""


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    from aiplatform.registry import RegistryClient

    with platform_settings(tmp_path_factory.mktemp("isolation"), "isolation", api_token=TOKEN) as settings:
        registry = RegistryClient.connect(settings)
        for name, project in (("model-a", "a"), ("model-b", "b")):
            registry.claim_model(name, project)
            register_versions(settings, name, count=1)
        with served_platform(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client, settings


def _maintainer_of_b(client: httpx.Client) -> dict[str, str]:
    """Bob: maintainer of b (every action of a project allowed there), no role anywhere else."""
    assert client.post("/v1/users", json={"name": "bob"}, headers=ADMIN).status_code == 201
    assert client.delete("/v1/projects/default/members/bob", headers=ADMIN).status_code == 200
    assert client.put("/v1/projects/b/members/bob", json={"role": "maintainer"}, headers=ADMIN).status_code == 200
    made = client.post("/v1/users/bob/keys", json={"name": "main", "project": "b"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


IMAGES = _zip({"0/a.png": png_bytes(np.zeros((8, 8), dtype=np.uint8))})
"""A's batch upload: one image model-a takes."""


def _resources_of_a(client: httpx.Client, settings: Settings) -> dict[str, str]:
    """One of each resource in project A, made as its users would (the alert straight in the
    alert store, as the engine opens one; the dataset built in A's storage, as a task does)."""
    from aiplatform.alerting.store import AlertStore
    from aiplatform.datasets import DatasetManager, TabularDatasetSpec
    from aiplatform.registry import ModelProjects
    from aiplatform.storage import storage_from_settings

    task = client.post(
        "/v1/tasks",
        json={"template": "cnn-classification", "params": TINY_CNN_PARAMS, "start": False, "model_name": "model-a"},
        headers=IN_A,
    )
    assert task.status_code == 201 and task.json()["project"] == "a", task.text
    assert client.post("/v1/models/model-a/predict", json={"array": IMAGE}, headers=ADMIN).status_code == 200
    results = wait_for(
        lambda: client.get("/v1/results", params={"model": "model-a"}, headers=IN_A).json()["results"],
        60,
        "model-a's prediction in the result store",
    )
    state = settings.resolved_state_dir
    store = AlertStore(state / "alerts.sqlite", ModelProjects(state / "registry.sqlite").project_of)
    alert, _ = store.open_alert("isolation", "isolation{model=model-a}", {"model": "model-a"}, "info", "m", 1.0, [])
    store.close()
    assert alert.project == "a"
    assert client.post("/v1/loops", json={"model": "model-a"}, headers=IN_A).status_code == 201
    upload = client.post("/v1/batch-inputs", files={"file": ("a-images.zip", IMAGES)}, headers=IN_A)
    assert upload.status_code == 201, upload.text
    job = client.post(
        "/v1/batch-jobs",
        json={"model": "model-a", "input": {"upload": upload.json()["id"]}, "start": False},
        headers=IN_A,
    )
    assert job.status_code == 201 and job.json()["created_by"] == "platform", job.text
    code = client.post(
        "/v1/code", content=_zip({"train.py": b"print(1)\n"}), headers={**IN_A, "Content-Type": "application/zip"}
    )
    assert code.status_code == 201, code.text
    dataset = DatasetManager(storage_from_settings(settings), project="a").build(
        TabularDatasetSpec(source="penguins", name="dataset-of-a", max_rows=40)
    )
    profile = client.get(f"/v1/analysis/datasets/{dataset.name}/{dataset.version}", headers=IN_A)
    assert profile.status_code == 200, profile.text
    return {
        "task": task.json()["id"],
        "result": results[0]["id"],
        "alert": alert.id,
        "upload": upload.json()["id"],
        "job": job.json()["id"],
        "digest": code.json()["digest"],
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "chart": next(iter(profile.json()["chart_urls"].values())).removeprefix("/v1/analysis/charts/"),
    }


def _routes() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, its OpenAPI operation) of every route of the real gateway app."""
    from serve_apps.gateway import gateway_app

    return [
        (method.upper(), path, operation)
        for path, operations in gateway_app().openapi()["paths"].items()
        for method, operation in operations.items()
    ]


def test_a_user_of_another_project_finds_nothing_of_it_on_any_route(
    platform: tuple[httpx.Client, Settings],
) -> None:
    client, settings = platform
    for project in ("a", "b"):
        assert client.post("/v1/projects", json={"name": project}, headers=ADMIN).status_code == 201
    a = _resources_of_a(client, settings)
    bob = _maintainer_of_b(client)
    markers = ["model-a", *a.values()]
    params = {
        "name": "model-a",
        "model": "model-a",
        "version": "1",
        "alias": "production",
        "task_id": a["task"],
        "sweep_id": a["task"],
        "job_id": a["job"],
        "digest": a["digest"],
        "key": a["chart"],
        "result_id": a["result"],
        "alert_id": a["alert"],
        "project": "a",
        "user": "bob",
        "key_id": "k",
    }
    bodies: dict[str, tuple[Any, int]] = {
        # (body naming A's resource, the answer B gets)
        "POST /v1/tasks": ({"template": "cnn-classification", "params": TINY_CNN_PARAMS, "model_name": "model-a"}, 409),
        "POST /v1/sweeps": ({"model_name": "model-a", "start": False}, 409),
        "POST /v1/runs/compare": ({"ids": [a["task"]]}, 404),
        "POST /v1/results/feedback": ([{"id": a["result"], "label": "0"}], 400),
        "POST /v1/batch-jobs": ({"model": "model-b", "input": {"upload": a["upload"]}}, 404),
        "POST /v1/loops": ({"model": "model-a"}, 404),
        "POST /v1/alerts/rules/reload": (None, 200),
        "POST /v1/alerts/evaluate": (None, 200),
        "POST /v1/projects": ({"name": "c"}, 403),
        "POST /v1/users": ({"name": "carl"}, 403),
        "POST /v1/batch-inputs": (None, 400),  # multipart only: B's own upload is tried below
        "POST /v1/code": (None, 400),  # a ZIP body only; B's archives are B's own (GET /v1/code/{digest})
        "POST /v1/analysis/drift": ({"model": "model-a", "dataset": f"{a['dataset']}@{a['dataset_version']}"}, 404),
    }
    # a dataset's routes name A's dataset (``name`` and ``version`` are the model's elsewhere)
    dataset_params = {**params, "name": a["dataset"], "version": a["dataset_version"]}
    # A route on a path of A's model or project is refused by the access guard before its body
    # is read; one that checks its resource itself needs a body that passes validation first.
    path_bodies = {
        "POST /v1/results/{result_id}/feedback": {"label": "0"},
        "POST /v1/sweeps/{sweep_id}/extend": {"trials": 1},
    }
    routes = _routes()
    named = {f"{method} {path}" for method, path, _ in routes}
    stale = (PLATFORM_CATALOGS | NOT_MADE_HERE | set(bodies) | set(path_bodies)) - named
    assert not stale, f"named here but no longer routes: {stale}"
    assert len(routes) > 80

    wrong, checked = [], 0
    for method, template, operation in routes:
        route = f"{method} {template}"
        if route in PLATFORM_CATALOGS | NOT_MADE_HERE or is_public(template):
            continue
        names = re.findall(r"{([^}:]+)(?::path)?}", template)
        values = dataset_params if "/datasets/{name}" in template else params
        missing = [n for n in names if n not in values]
        if missing:
            wrong.append(f"{route}: no resource of A for {missing}; scope it and name one here")
            continue
        path = template
        for name in names:
            path = path.replace(f"{{{name}}}", values[name])
        action = request_action(method, path).action
        if action is Action.IDENTIFY:
            continue
        checked += 1
        if action not in IN_A_PROJECT:  # the platform's own: users, keys, the audit log
            answer = client.request(
                method, path, headers=bob, json=path_bodies.get(route, bodies.get(route, (None,))[0])
            )
            if answer.status_code not in (403, 404):
                wrong.append(f"{route}: {answer.status_code} for a project maintainer")
            continue
        if names:
            answer = client.request(method, path, headers=bob, json=path_bodies.get(route, {}))
            if answer.status_code != 404:
                wrong.append(f"{route}: {answer.status_code} {answer.text[:200]}")
            continue
        if method != "GET":
            if route not in bodies:
                wrong.append(f"{route}: a body route with no isolation check here; add one to bodies")
                continue
            body, status = bodies[route]
            answer = client.request(method, path, headers=bob, json=body)
            if answer.status_code != status:
                wrong.append(f"{route}: {answer.status_code} (expected {status}) {answer.text[:200]}")
            elif status < 400 and any(m in answer.text for m in markers):
                wrong.append(f"{route}: tells of A: {answer.text[:300]}")
            continue
        # A listing: nothing of A in it; one that takes a model names A's model to a 404.
        answer = client.get(path, headers=bob)
        query = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        required = {p["name"] for p in operation.get("parameters", []) if p.get("required")}
        if "model" in required:
            answer = client.get(path, params={"model": "model-a"}, headers=bob)
            if answer.status_code != 404:
                wrong.append(f"{route}?model=model-a: {answer.status_code}")
            continue
        if answer.status_code != 200 or any(m in answer.text for m in markers):
            wrong.append(f"{route}: {answer.status_code} tells of A: {answer.text[:300]}")
        if "model" in query and client.get(path, params={"model": "model-a"}, headers=bob).status_code != 404:
            wrong.append(f"{route}?model=model-a: not a 404")
    assert not wrong, "\n".join(wrong)
    assert checked > 60
    # B's own upload with A's model, and A's upload from B: neither is B's to use, by either route
    mine = client.post("/v1/batch-inputs", files={"file": ("b.csv", b"x,y\n3,4\n")}, headers=bob).json()["id"]
    for job in (
        {"model": "model-a", "input": {"upload": mine}},
        {"model": "model-b", "input": {"upload": a["upload"]}},
    ):
        for path, body in (("/v1/batch-jobs", job), ("/v1/tasks", {"template": "batch-inference", "params": job})):
            answer = client.post(path, json=body, headers=bob)
            assert answer.status_code == 404, (path, answer.text)
    assert client.get("/v1/tasks/counts", headers=bob).json()["total"] == 0
    assert "a" not in [p["name"] for p in client.get("/v1/projects", headers=bob).json()["projects"]]
    hidden = client.post(
        "/v1/results/feedback", json=[{"id": a["result"], "model": "model-b", "label": "0"}], headers=bob
    )
    assert hidden.status_code == 400 and "not found" in hidden.json()["message"] and "model-a" not in hidden.text
    # what A's maintainer sees of the same: everything above was A's own, and found
    assert client.get(f"/v1/alerts/{a['alert']}", headers=IN_A).status_code == 200
    assert [p["model"] for p in client.get("/v1/loops", headers=IN_A).json()["policies"]] == ["model-a"]
    assert client.get(f"/v1/results/{a['result']}", headers=IN_A).status_code == 200
    # the same bytes as A's upload, sent by B: B's own file name back, nothing of A's
    same = client.post("/v1/batch-inputs", files={"file": ("mine.zip", IMAGES)}, headers=bob).json()
    assert (same["id"], same["filename"]) == (a["upload"], "mine.zip")

    _grpc_methods_find_nothing_of_a(bob)


def _grpc_methods_find_nothing_of_a(caller: dict[str, str]) -> None:
    """Every method of the OIP gRPC service, from its descriptor, on A's model: NOT_FOUND."""
    from aiplatform.serving.oip_grpc import predict_v2_pb2

    service = predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    metadata = (("authorization", caller["Authorization"]),)
    wrong = []
    with grpc.insecure_channel(served_grpc_address()) as channel:
        for method in service.methods:
            request_type = getattr(predict_v2_pb2, method.input_type.name)
            field = next((f for f in ("name", "model_name") if f in request_type.DESCRIPTOR.fields_by_name), None)
            if field is None:
                if method.name not in MODEL_FREE_RPCS:
                    wrong.append(f"{method.name}: takes no model name; say why it tells nothing of A")
                continue
            call = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=getattr(predict_v2_pb2, method.output_type.name).FromString,
            )
            try:
                call(request_type(**{field: "model-a"}), metadata=metadata, timeout=30)
                wrong.append(f"{method.name}: answered")
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    wrong.append(f"{method.name}: {exc.code()} {exc.details()}")
    assert not wrong, wrong
