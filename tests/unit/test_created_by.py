"""Who made what: tasks and sweeps, model versions (a task's job's: the task's creator), alias
moves, deployments and canaries record the caller's name, shown in the API's answers; records
from before it say null (unknown). Through the real access guard, without Ray."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi.testclient import TestClient

from aiplatform.access.store import AccessStore
from aiplatform.api.app import create_api_app
from aiplatform.api.security import AccessPolicy
from aiplatform.registry import ModelProjects, RegistryStore
from aiplatform.settings import Settings
from aiplatform.storage import open_storage, sha256_bytes
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import Task, TaskStore
from aiplatform.tasks.ray_jobs import RayJobs
from tests.factories import TINY_CNN_PARAMS

TOKEN = "bootstrap-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BEFORE_PROJECTS = Path(__file__).resolve().parents[1] / "data" / "state-before-projects"


class QueueInProcess(TaskStore):
    """The queue as the manager calls it (the actor client's async create)."""

    async def create_async(self, *args: Any, **kwargs: Any) -> Task:
        return self.create(*args, **kwargs)


def _register(registry: RegistryStore, content: bytes, **options: object) -> int:
    key = f"packages/m/{sha256_bytes(content)[:12]}.zip"
    registry.storage.put_bytes(key, content)
    return registry.register_version(
        "m", package_key=key, sha256=sha256_bytes(content), template="t", **options
    ).version  # type: ignore[arg-type]


def test_tasks_versions_aliases_and_canaries_say_who_made_them(tmp_path: Path) -> None:
    settings = Settings(autoscaling=True, state_dir=str(tmp_path))
    access = AccessStore.in_state_dir(tmp_path)
    queue = QueueInProcess(tmp_path / "tasks.sqlite")
    registry = RegistryStore(tmp_path / "registry.sqlite", open_storage(str(tmp_path / "art")))
    app = create_api_app()
    policy = AccessPolicy("token", TOKEN, ("127.0.0.1",), access, ModelProjects(tmp_path / "registry.sqlite"))
    app.state.platform = SimpleNamespace(
        access=policy,
        settings=settings,
        tasks=TaskManager(queue, RayJobs(settings), settings),  # type: ignore[arg-type]
        registry=registry,
        storage=registry.storage,
        warm=lambda model_id: None,
    )
    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    access.create_user("ann", role="maintainer", by="platform")
    ann = {"Authorization": "Bearer " + access.create_key("ann", name="k", by="ann")[1]}

    body = {"template": "cnn-classification", "params": TINY_CNN_PARAMS, "model_name": "m"}
    mine = client.post("/v1/tasks", json=body, headers=ann)
    assert mine.status_code == 201 and mine.json()["created_by"] == "ann"
    theirs = client.post("/v1/tasks", json={**body, "idempotency_key": "once"}, headers=ADMIN).json()
    assert theirs["created_by"] == "platform"
    # a repeated key answers the first task as it was: it does not change hands
    assert client.post("/v1/tasks", json={**body, "idempotency_key": "once"}, headers=ann).json() == theirs
    rerun = client.post(f"/v1/tasks/{theirs['id']}/rerun", headers=ann).json()
    assert rerun["created_by"] == "ann" and rerun["rerun_of"] == theirs["id"]
    listed = {t.id: t.created_by for t in queue.list(template="cnn-classification")}  # the listing asks Ray
    assert listed == {mine.json()["id"]: "ann", theirs["id"]: "platform", rerun["id"]: "ann"}
    params = {k: v for k, v in TINY_CNN_PARAMS.items() if k != "hidden_units"}
    space = {"hidden_units": {"type": "choice", "values": [8, 16]}}
    sweep = {"template": "cnn-classification", "params": params, "space": space, "trials": 2, "start": False}
    made = client.post("/v1/sweeps", json=sweep, headers=ann)
    assert made.status_code == 201, made.text
    assert made.json()["created_by"] == "ann"

    # a version a task's job registers names the task's creator; one registered directly, nobody
    assert _register(registry, b"one", lineage={"task_id": theirs["id"]}) == 1
    assert _register(registry, b"two", lineage={"task_id": mine.json()["id"]}, metrics={"test_accuracy": 0.9}) == 2
    assert _register(registry, b"three", created_by="bob") == 3
    versions = {v["version"]: v["created_by"] for v in client.get("/v1/models/m", headers=ann).json()["versions"]}
    assert versions == {1: "platform", 2: "ann", 3: "bob"}
    assert client.get("/v1/models/m/versions/2", headers=ann).json()["created_by"] == "ann"

    # alias moves, deployments and canaries
    staged = client.post("/v1/models/m/promote", json={"version": 1, "alias": "staging"}, headers=ann).json()
    assert staged["by"] == "ann"
    deployed = client.post("/v1/models/m/promote", json={"version": 1, "force": True}, headers=ADMIN).json()
    assert deployed["by"] == "platform"
    promoted = client.post("/v1/models/m/promote", json={"version": 2, "force": True}, headers=ann)
    assert promoted.json()["by"] == "ann"
    history = client.get("/v1/models/m/aliases/production/history", headers=ann).json()["history"]
    assert [(h["version"], h["by"]) for h in history] == [(2, "ann"), (1, "platform")]
    rolled = client.post("/v1/models/m/rollback", headers=ADMIN).json()
    assert (rolled["version"], rolled["by"]) == (1, "platform")
    canary = client.post("/v1/models/m/canary", json={"version": 3, "weight": 10}, headers=ann).json()
    assert canary["set_by"] == "ann"
    assert client.get("/v1/models/m/traffic", headers=ADMIN).json()["set_by"] == "ann"
    assert client.delete("/v1/models/m/aliases/staging", headers=ann).status_code == 204
    assert registry.alias_history("m", "staging")[0] | {"at": 0} == {
        "version": None,
        "previous_version": 1,
        "at": 0,
        "by": "ann",
    }
    queue.close()
    registry.close()


def test_records_from_before_say_unknown(tmp_path: Path) -> None:
    for name in ("tasks.sqlite", "registry.sqlite"):
        shutil.copy(BEFORE_PROJECTS / name, tmp_path / name)
    tasks = TaskStore(tmp_path / "tasks.sqlite")
    assert {t.created_by for t in tasks.list()} == {None}
    registry = RegistryStore(tmp_path / "registry.sqlite", open_storage(str(tmp_path / "art")))
    assert {v.created_by for v in registry.list_versions("old-cnn")} == {None}
    assert {h["by"] for h in registry.alias_history("old-cnn", "production")} == {None}
    assert registry.traffic_set_by("old-cnn") is None
    tasks.close()
    registry.close()
