"""Analysis acts in the request's project (without a platform): a drift analysis of another
project's model is a 404 that reaches nothing (no PSI, no drift scores recorded on it) and needs
a member; a chart is served only to the project whose dataset or model it draws; two projects'
datasets of the same name each keep their own profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aiplatform.access.actions import request_action
from aiplatform.access.roles import ROLE_NEEDED
from aiplatform.analysis.report import analyze_dataset, chart_owner, read_chart
from aiplatform.api.deps import get_project, get_settings, get_storage
from aiplatform.api.errors import install_error_handlers
from aiplatform.api.routes import analysis as analysis_routes
from aiplatform.api.scope import ModelScope, get_model_scope
from aiplatform.datasets import DatasetManager
from aiplatform.errors import InvalidArgument
from aiplatform.storage import open_storage

pytestmark = pytest.mark.unit

OWNERS = {"model-a": "a", "model-b": "b"}
BEFORE_PROJECTS = Path(__file__).resolve().parents[1] / "data" / "state-before-projects" / "storage"
CHARTS = {
    "reports/analysis/datasets/x/1/class_balance.svg": "default",
    "projects/a/reports/analysis/datasets/x/1/class_balance.svg": "a",
    "reports/analysis/drift/model-a/r1/predicted_class.svg": "a",
}


def test_a_chart_key_says_whose_it_is() -> None:
    assert chart_owner("reports/analysis/datasets/x/1/c.svg") == ("default", None)
    assert chart_owner("projects/a/reports/analysis/datasets/x/1/c.png") == ("a", None)
    assert chart_owner("reports/analysis/drift/model-a/r1/f.svg") == ("default", "model-a")
    for key in (
        "datasets/x/1/manifest.json",
        "reports/analysis/datasets/x/1/profile.json",
        "projects/default/reports/analysis/datasets/x/1/c.svg",  # default's are at the root
        "projects/a/reports/analysis/drift/model-a/r1/f.svg",  # drift reports sit under their model
        "projects/a/datasets/x/1/c.svg",
        "reports/analysis/c.svg",
    ):
        with pytest.raises(InvalidArgument):
            chart_owner(key)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FastAPI, list[str]]:
    storage = open_storage(str(tmp_path / "storage"))
    for key in CHARTS:
        storage.put_bytes(key, b"<svg/>")
    analysed: list[str] = []

    async def drift_on_cluster(settings: Any, model: str, *args: Any) -> dict[str, Any]:
        analysed.append(model)  # what would read the model's results and record its drift scores
        return {"model": model, "charts": {}}

    monkeypatch.setattr(analysis_routes, "drift_on_cluster", drift_on_cluster)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(analysis_routes.router)
    app.dependency_overrides[get_storage] = lambda: storage
    app.dependency_overrides[get_settings] = lambda: None
    return app, analysed


def _in(app: FastAPI, project: str) -> TestClient:
    app.dependency_overrides[get_project] = lambda: project
    app.dependency_overrides[get_model_scope] = lambda: ModelScope(project, OWNERS.get, lambda: [])
    return TestClient(app)


@pytest.mark.parametrize("project", ["a", "b", "default"])
def test_drift_and_charts_act_in_the_request_project(api: tuple[FastAPI, list[str]], project: str) -> None:
    app, analysed = api
    client = _in(app, project)
    for model, owner in OWNERS.items():
        answer = client.post("/v1/analysis/drift", json={"model": model})
        assert answer.status_code == (200 if owner == project else 404), answer.text
    assert analysed == [m for m, owner in OWNERS.items() if owner == project]  # nothing of another's reached
    missing = client.get("/v1/analysis/charts/reports/analysis/datasets/x/2/class_balance.svg")
    for key, owner in CHARTS.items():
        answer = client.get(f"/v1/analysis/charts/{key}")
        assert answer.status_code == (200 if owner == project else 404), (key, answer.text)
        if owner != project:  # worded as for no chart at all
            assert answer.json()["message"] == missing.json()["message"].replace("x/2", "x/1").replace(
                "reports/analysis/datasets/x/1/class_balance.svg", key
            )


def test_drift_needs_a_member() -> None:
    assert ROLE_NEEDED[request_action("POST", "/v1/analysis/drift").action] == "member"
    assert ROLE_NEEDED[request_action("GET", "/v1/analysis/charts/reports/analysis/x.svg").action] == "viewer"


def test_same_named_datasets_of_two_projects_keep_their_own_profiles(tmp_path: Path) -> None:
    shutil.copytree(BEFORE_PROJECTS, tmp_path / "storage")
    storage = open_storage(str(tmp_path / "storage"))
    default = DatasetManager(storage)
    old = default.list_versions()[0]
    b = default.in_project("b")
    for key in storage.list(f"datasets/{old.name}/{old.version}"):
        storage.put_bytes(f"projects/b/{key}", storage.get_bytes(key))
    manifest = json.loads(storage.get_bytes(f"datasets/{old.name}/{old.version}/manifest.json"))
    for split in manifest["splits"].values():
        split["files"] = [{**f, "key": f"projects/b/{f['key']}"} for f in split["files"]]
    storage.put_bytes(f"projects/b/datasets/{old.name}/{old.version}/manifest.json", json.dumps(manifest).encode())

    mine = analyze_dataset(default, storage, old.ref)
    stored = f"reports/analysis/datasets/{old.name}/{old.version}/profile.json"
    storage.put_bytes(stored, json.dumps({**mine, "default's": True}).encode())
    assert analyze_dataset(default, storage, old.ref)["default's"]  # read back once computed
    theirs = analyze_dataset(b, storage, old.ref)
    assert "default's" not in theirs  # b's is computed from b's dataset, not read back from default's
    assert all(k.startswith("reports/analysis/datasets/") for k in mine["charts"].values())
    assert all(k.startswith(f"projects/b/reports/analysis/datasets/{old.name}/") for k in theirs["charts"].values())
    assert analyze_dataset(b, storage, old.ref) == theirs
    for key in theirs["charts"].values():
        assert chart_owner(key)[0] == "b" and read_chart(storage, key)[0]
