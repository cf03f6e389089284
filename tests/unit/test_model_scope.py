"""Projects through the model-keyed stores, without a platform: what a project's ``ModelScope``
owns, a loop run of another project's model found by no one else (the run routes), alerts that
gain their project in place and take their model's, the result store narrowed to a project's
models, a batch job's project checks, batch uploads answered per project, and what a project
keeps in storage counted among what it holds."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aiplatform.access.holdings import describe, project_holdings, stored_holdings
from aiplatform.alerting.store import AlertStore
from aiplatform.api.errors import install_error_handlers
from aiplatform.api.routes import loops as loop_routes
from aiplatform.api.routes.batch import check_batch_job
from aiplatform.api.scope import ModelScope, get_model_scope
from aiplatform.batch.inputs import BatchInputs
from aiplatform.batch.params import BatchParams
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.results.feedback import LabelRequest, result_time
from aiplatform.results.store import PredictionRecord, ResultStore, new_result_id
from aiplatform.storage import LocalStorage

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
    # nor is another project told that a request had many inputs, or that a result was archived
    archived, at = new_result_id(), 1.8e9
    store.record_batch(
        [PredictionRecord(f"req-{i}", "model-a", 1, "d" * 64, {"label": "x"}, 1.0, at + i) for i in range(2)]
        + [PredictionRecord(archived, "model-a", 1, "d" * 64, {"label": "x"}, 1.0, result_time(archived) or 0.0)]
    )
    store.mark_move("k", "model-a", 0.0, at, at, None, 100)
    store.commit_move("k")
    for request, seen_by_a in (
        (LabelRequest("x", request_id="req"), InvalidArgument),
        (LabelRequest("x", id=archived), Conflict),
    ):
        with pytest.raises(NotFound):
            store.resolve_labels([request], ["model-b"])
        with pytest.raises(seen_by_a):
            store.resolve_labels([request], ["model-a"])
    store.close()


def test_a_batch_job_is_checked_in_its_project_whichever_route_creates_it(tmp_path: Path) -> None:
    """``check_batch_job``, which ``POST /v1/batch-jobs`` and ``POST /v1/tasks`` both run: another
    project's model or upload is not found before anything else is looked at."""
    storage = LocalStorage(tmp_path)
    upload = BatchInputs(storage).save("a.csv", io.BytesIO(b"x,y\n1,2\n"), project="a").id
    for model, upload_id, missing in (("model-a", None, "Model 'model-a'"), ("model-b", upload, "Batch input")):
        spec = {"upload": upload_id} if upload_id else {"dataset": "d"}
        params = BatchParams.model_validate({"model": model, "input": spec})
        with pytest.raises(NotFound, match=missing):
            asyncio.run(check_batch_job(params, _scope("b"), storage, None, None))  # type: ignore[arg-type]


def test_the_same_bytes_uploaded_by_another_project_answer_its_own_file_name(tmp_path: Path) -> None:
    inputs = BatchInputs(LocalStorage(tmp_path))
    first = inputs.save("secret-plan.csv", io.BytesIO(b"x,y\n1,2\n"), project="a")
    again = inputs.save("mine.csv", io.BytesIO(b"x,y\n1,2\n"), project="b")
    assert (again.id, again.filename, first.filename) == (first.id, "mine.csv", "secret-plan.csv")
    assert inputs.get(first.id, "b").filename == "mine.csv" and inputs.get(first.id, "a").filename == "secret-plan.csv"
    assert inputs.uploaded_by(first.id, "b") and not inputs.uploaded_by(first.id, "c")


def test_a_project_holds_what_it_keeps_in_storage(tmp_path: Path) -> None:
    """A project with only code, datasets or batch uploads in storage still holds something
    (renaming or deleting it would hand them to a new project of its name)."""
    storage = LocalStorage(tmp_path / "store")
    assert stored_holdings(storage, "a") == {}
    storage.put_bytes("projects/a/code/" + "0" * 64 + ".zip", b"zip")
    storage.put_bytes("projects/a/datasets/d/1/manifest.json", b"{}")
    storage.put_bytes("projects/a/datasets/d/1/data/train/part-0.parquet", b"x")
    storage.put_bytes("projects/ab/code/" + "1" * 64 + ".zip", b"zip")  # another project's
    BatchInputs(storage).save("a.csv", io.BytesIO(b"x,y\n1,2\n"), project="a")
    held = project_holdings(tmp_path / "state", "a", storage)
    assert held == {"dataset versions": 1, "code archives": 1, "batch uploads": 1}
    assert describe(held) == "1 dataset version, 1 code archive, 1 batch upload"
    assert stored_holdings(storage, "b") == {} and stored_holdings(storage, "default") == {}
