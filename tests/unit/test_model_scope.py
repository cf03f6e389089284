"""Projects through the model-keyed stores, without a platform: what a project's ``ModelScope``
owns, a loop run of another project's model found by no one else (the run routes), alerts that
gain their project in place and take their model's, and the result store narrowed to a
project's models."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aiplatform.alerting.store import AlertStore
from aiplatform.api.errors import install_error_handlers
from aiplatform.api.routes import loops as loop_routes
from aiplatform.api.scope import ModelScope, get_model_scope
from aiplatform.errors import NotFound
from aiplatform.results.feedback import LabelRequest
from aiplatform.results.store import PredictionRecord, ResultStore

pytestmark = pytest.mark.unit

OWNERS = {"model-a": "a", "model-b": "b", "old": "default"}


def _scope(project: str) -> ModelScope:
    return ModelScope(project, OWNERS.get, lambda: sorted(m for m, p in OWNERS.items() if p == project))


def test_a_scope_owns_its_project_models_and_nothing_else() -> None:
    a, default = _scope("a"), _scope("default")
    assert a.owns("model-a") and not a.owns("model-b")
    assert a.check("model-a") == "model-a"
    with pytest.raises(NotFound, match="Model 'model-b' not found"):
        a.check("model-b")
    assert default.owns("never-registered") and not a.owns("never-registered")  # as before projects
    assert a.models() == ["model-a"]
    assert a.owns_labels({"model": "model-a"}) and not a.owns_labels({})  # the queue's: the operator's
    assert default.owns_labels({}) and ModelScope("a").owns("model-b")  # no platform: no projects


class OneRun:
    """The loop client as the run routes use it: one run, of model-a."""

    def run(self, run_id: str) -> dict[str, Any]:
        if run_id != "r1":
            raise NotFound(f"Loop run {run_id!r} not found")
        return {"id": "r1", "model": "model-a"}

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        return []

    def policy(self, model: str) -> dict[str, Any]:
        raise AssertionError("another project's model reached the loop engine")

    runs = policy


@pytest.mark.parametrize(("project", "status"), [("a", 200), ("b", 404)])
def test_a_loop_run_is_found_only_in_its_model_project(project: str, status: int) -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(loop_routes.router)
    app.dependency_overrides[loop_routes.get_loops] = OneRun
    app.dependency_overrides[get_model_scope] = lambda: _scope(project)
    api = TestClient(app)
    answer = api.get("/v1/loops/runs/r1/deliveries")
    assert answer.status_code == status, answer.text
    if status == 404:
        assert answer.json()["message"] == api.get("/v1/loops/runs/nope/deliveries").json()["message"].replace(
            "nope", "r1"
        )
        for path in ("/v1/loops/runs/r1", "/v1/loops/runs/r1/lineage", "/v1/loops/model-a", "/v1/loops/model-a/runs"):
            assert api.get(path).status_code == 404, path


def test_alerts_gain_a_project_in_place_and_take_their_model_project(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    with sqlite3.connect(path) as db:  # a store written before projects
        db.execute(
            "CREATE TABLE alerts (id TEXT PRIMARY KEY, rule TEXT NOT NULL, series TEXT NOT NULL, labels TEXT NOT NULL,"
            " severity TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, value REAL,"
            " started_at REAL NOT NULL, updated_at REAL NOT NULL, resolved_at REAL)"
        )
        db.execute(
            "INSERT INTO alerts VALUES ('old1', 'r', 's', ?, 'info', 'firing', 'm', 1.0, 1.0, 1.0, NULL)",
            (json.dumps({"model": "model-a"}),),
        )
    db.close()
    store = AlertStore(path, OWNERS.get)
    assert store.get("old1").project == "default"
    on_a, _ = store.open_alert("r", "s{model=model-a}", {"model": "model-a"}, "info", "m", 1.0, [], now=2.0)
    queue, _ = store.open_alert("r", "queued_tasks{}", {}, "info", "m", 1.0, [], now=3.0)
    assert (on_a.project, queue.project) == ("a", "default")
    assert [x.id for x in store.query(project="a")] == [on_a.id]
    assert [x.id for x in store.query(project="default")] == [queue.id, "old1"]
    assert store.query(project="b") == []
    store.close()


def test_the_result_store_narrows_to_a_project_models(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    store.record_batch(
        [
            PredictionRecord(f"r{i}", model, 1, "d" * 64, {"label": "x"}, 1.0, 1.7e9 + i)
            for i, model in enumerate(("model-a", "model-b", "model-a"))
        ]
    )
    assert [r.id for r in store.query(models=["model-a"])] == ["r2", "r0"]
    assert store.query(models=[]) == [] and store.scan(models=[]) == []
    assert [r.id for r in store.scan(models=["model-b"])] == ["r1"]
    assert store.quality(models=[]) == [] and store.moves(models=[]) == []
    # a label naming another project's result is not found, and never says whose model it is
    for request in (LabelRequest("x", id="r0", model="model-b"), LabelRequest("x", id="r0")):
        with pytest.raises(NotFound) as hidden:
            store.resolve_labels([request], ["model-b"])
        assert "model-a" not in hidden.value.message
    assert store.resolve_labels([LabelRequest("x", id="r0")], ["model-a"])[0].model == "model-a"
    store.close()
