"""The loops' REST routes on an engine of their own (a real store in a temporary folder, a fake
platform; no Ray): policies created, refused by name (400 / 404, nothing stored), runs by hand and
skipped triggers, a run's steps and lineage; ``aip loops`` flags as a policy and a run as lines;
a retraining run's fresh rows read back from kept inputs, held out by a seeded hash."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aip.loops_cli import add_loops_commands, describe_policy, describe_run, policy_body
from aiplatform.api.deps import get_creator
from aiplatform.api.errors import install_error_handlers
from aiplatform.api.routes import loops as loop_routes
from aiplatform.errors import NotFound
from aiplatform.loops.actor import LoopService
from aiplatform.loops.data import fresh_rows, held_out, newest, table_row
from aiplatform.loops.engine import LoopEngine
from aiplatform.loops.lineage import run_lineage
from aiplatform.loops.policy import parse_policy
from aiplatform.loops.store import LoopStore
from aiplatform.results.feedback import LabeledPrediction
from aiplatform.storage import LocalStorage
from tests.unit.test_loops_engine import FakePlatform

pytestmark = pytest.mark.unit


def in_process_loops(folder: Path, platform: FakePlatform) -> LoopService:
    """The loop actor's methods over an engine in this process (what ``LoopClient`` forwards to)."""
    store = LoopStore(folder / "loops.sqlite")
    return LoopService(store, LoopEngine(store, platform))


class OnlyPenguins(FakePlatform):
    def production(self, model: str) -> dict[str, Any]:
        if model != "penguins":
            raise NotFound(f"Model {model!r} has no production version for a loop to retrain")
        return super().production(model)


def test_policies_runs_and_lineage_through_the_routes(tmp_path: Path) -> None:
    platform = OnlyPenguins()
    loops = in_process_loops(tmp_path, platform)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(loop_routes.router)
    app.dependency_overrides[loop_routes.get_loops] = lambda: loops
    app.dependency_overrides[get_creator] = lambda: "alice"  # the guard's principal
    api = TestClient(app)

    for body, status, named in (
        ({"model": "penguins", "schedule": "0 25 * * *"}, 400, "hour"),
        ({"model": "penguins", "on_alerts": ["nope"]}, 400, "nope"),
        ({"model": "penguins", "gate": {"margin": -0.1}}, 400, "gate.margin"),
        ({"model": "penguins", "canary": {"weight": 0}}, 400, "canary.weight"),
        ({"model": "unknown"}, 404, "unknown"),
        ([1, 2], 400, "body"),
    ):
        answer = api.post("/v1/loops", json=body)
        assert answer.status_code == status and named in answer.json()["message"], answer.text
    assert api.get("/v1/loops").json() == {"policies": []}
    assert api.get("/v1/loops/penguins").status_code == 404
    assert api.post("/v1/loops/penguins/trigger").status_code == 404

    created = api.post("/v1/loops", json={"model": "penguins", "schedule": "0 3 * * *", "on_alerts": ["any"]})
    assert created.status_code == 201, created.text
    assert created.json()["schedule"] == "0 3 * * *" and created.json()["canary"]["weight"] == 10.0
    started = api.post("/v1/loops/penguins/trigger", json={"detail": "by a test"})
    assert started.status_code == 202 and started.json()["run"]["state"] == "data"
    assert started.json()["run"]["trigger"]["by"] == "alice"  # the caller, not "api"
    run_id = started.json()["run"]["id"]
    skipped = api.post("/v1/loops/penguins/trigger").json()
    assert skipped["run"] is None and run_id in skipped["skipped"]["reason"]
    assert [s["reason"] for s in api.get("/v1/loops/penguins/skipped").json()["skipped"]] == [
        skipped["skipped"]["reason"]
    ]

    platform.training_state = {"state": "succeeded", "version": 2}
    loops.engine.tick(time.time())  # data, train, gate, canary started
    run = api.get(f"/v1/loops/runs/{run_id}").json()
    assert [s["step"] for s in run["steps"]] == ["triggered", "data", "train", "gate"] and run["state"] == "canary"
    assert [r["id"] for r in api.get("/v1/loops/penguins/runs").json()["runs"]] == [run_id]
    chain = api.get(f"/v1/loops/runs/{run_id}/lineage").json()["chain"]
    assert [link["kind"] for link in chain] == ["manual", "dataset", "task", "version", "gate"]
    assert chain[1] | {"at": 0} == {"kind": "dataset", "ref": "loop-data@1", "from": None, "labeled": 30, "at": 0}
    assert api.get("/v1/loops/runs/loop-missing").status_code == 404
    assert api.get(f"/v1/loops/runs/{run_id}/deliveries").json() == {"deliveries": []}  # no webhooks set
    assert api.delete("/v1/loops/penguins").status_code == 204
    assert api.delete("/v1/loops/penguins").status_code == 404


def test_aip_loops_flags_make_the_policy_and_a_run_reads_as_lines() -> None:
    parser = argparse.ArgumentParser()
    add_loops_commands(parser.add_subparsers())
    flags = "--on-alert quality-low --margin 0.02 --param num_boost_round=50 --param note=fresh --watch-s 60"
    args = parser.parse_args(["loops", "create", "penguins", "--schedule", "0 3 * * *", *flags.split()])
    body = policy_body(args)
    assert parse_policy(body).model_dump()["train"]["params"] == {"num_boost_round": 50, "note": "fresh"}
    assert body["on_alerts"] == ["quality-low"] and body["gate"] == {"margin": 0.02}
    swept = parser.parse_args(
        ["loops", "create", "penguins", "--sweep", '{"space": {"max_depth": {"type": "int", "low": 2, "high": 4}}}']
    )
    assert parse_policy(policy_body(swept)).train.sweep == {
        "space": {"max_depth": {"type": "int", "low": 2, "high": 4}}
    }
    assert "a sweep over max_depth" in "\n".join(describe_policy(parse_policy(policy_body(swept)).model_dump()))
    whole = parser.parse_args(["loops", "create", "penguins", "--policy", json.dumps({"cooldown_s": 5})])
    assert policy_body(whole) == {"cooldown_s": 5, "model": "penguins"}
    run = {
        "id": "loop-1",
        "model": "penguins",
        "state": "promoted",
        "created_at": 0.0,
        "error": None,
        "trigger": {"kind": "alert", "alert_id": "a1", "detail": "quality-low"},
        "steps": [
            {"step": "triggered", "at": 0.0, "outcome": "ok", "kind": "alert", "alert_id": "a1"},
            {"step": "data", "at": 1.0, "outcome": "built", "dataset": "d@1", "labeled": 9, "params": {"x": 1}},
            {"step": "train", "at": 2.0, "outcome": "trained", "task_id": "t1", "version": 2},
            {"step": "decide", "at": 3.0, "outcome": "promoted", "version": 2},
        ],
        "finished_at": 3.0,
    }
    lines = describe_run(run)
    assert lines[0].startswith("loop-1 penguins: promoted")
    assert "dataset=d@1 labeled=9" in lines[2] and "params" not in lines[2] and "task_id=t1" in lines[3]
    kinds = [link["kind"] for link in run_lineage(run)["chain"]]
    assert kinds == ["alert", "dataset", "task", "version", "decide"]


def test_fresh_rows_come_from_kept_inputs_with_a_seeded_holdout(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    features = ["a", "b"]
    storage.put_bytes("results/inputs/one", json.dumps({"features": {"a": 1.0, "b": "x"}}).encode())
    storage.put_bytes("results/inputs/many", json.dumps({"rows": [{"a": 2, "b": "y"}, {"a": 3, "b": None}]}).encode())
    storage.put_bytes("results/inputs/csv", b"a,b,species\n4,z,Adelie\n5,,Gentoo\n")
    storage.put_bytes("results/inputs/v2", json.dumps({"inputs": [{"data": [1, 2]}]}).encode())
    assert table_row(storage.get_bytes("results/inputs/many"), "r9-1", features) == {"a": 3, "b": None}
    assert table_row(storage.get_bytes("results/inputs/csv"), "r8-1", features) == {"a": "5", "b": None}
    assert table_row(storage.get_bytes("results/inputs/v2"), "r7", features) is None

    def labeled(result_id: str, uri: str | None, label: str, at: float) -> LabeledPrediction:
        return LabeledPrediction(result_id, "m", 1, at, "p", label, uri, at, "test")

    predictions = [
        labeled("r1", "results/inputs/one", "A", 1.0),
        labeled("r2-0", "results/inputs/many", "B", 2.0),
        labeled("r2-1", "results/inputs/many", "C", 3.0),
        labeled("r3-0", "results/inputs/csv", "D", 4.0),
        labeled("r4", "results/inputs/v2", "E", 5.0),
        labeled("r5", None, "F", 6.0),
    ]
    fresh = fresh_rows(predictions, storage, features, seed=0, fraction=0.5)
    assert fresh.unreadable == 2
    rows = sorted(fresh.train + fresh.holdout, key=lambda r: r["label_name"])
    assert [r["label_name"] for r in rows] == ["A", "B", "C", "D"] and rows[3] == {
        "a": "4",
        "b": "z",
        "label_name": "D",
    }
    assert [r["label_name"] for r in fresh.holdout] == [
        p.label for p in predictions[:4] if held_out(p.result_id, 0, 0.5)
    ]
    # The split is the seed's: the same ids always fall the same way; about the fraction held out.
    ids = [f"r{i}" for i in range(2000)]
    share = sum(held_out(i, 7, 0.3) for i in ids) / len(ids)
    assert 0.25 < share < 0.35 and [held_out(i, 7, 0.3) for i in ids] == [held_out(i, 7, 0.3) for i in ids]
    assert [held_out(i, 7, 0.3) for i in ids] != [held_out(i, 8, 0.3) for i in ids]
    assert [p.result_id for p in newest(iter(predictions), 2)] == ["r4", "r5"]


def test_a_sweep_policy_is_checked_and_trains_through_the_sweep_template(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from aiplatform.errors import InvalidArgument
    from aiplatform.loops.platform import PlatformLoops
    from aiplatform.settings import Settings

    space = {"max_depth": {"type": "int", "low": 2, "high": 6}}
    for sweep, named in (
        ({"space": {}}, "search space is empty"),
        ({"space": space, "template": "cnn-classification"}, "template"),
        ({"space": space, "trials": 0}, "trials"),
    ):
        with pytest.raises(InvalidArgument, match=named):
            parse_policy({"model": "penguins", "train": {"sweep": sweep}})
    policy = parse_policy({"model": "penguins", "train": {"sweep": {"space": space, "trials": 4}}})

    created: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    class Tasks:
        def create(self, template: str, params: dict[str, Any], **options: Any) -> Any:
            created.append((template, params, options))
            return SimpleNamespace(id="sweep-1")

    loops = PlatformLoops(Settings(home=tmp_path), warm=lambda model_id: None)
    loops.__dict__["tasks"] = Tasks()
    loops.__dict__["registry"] = SimpleNamespace(model_project=lambda name: "team")
    loops.production = lambda model: {"template": "tabular-classification", "version": 1}  # type: ignore[method-assign]
    data = {"params": {"dataset": "parquet:/data/t.parquet", "max_depth": 6, "num_boost_round": 30}}
    assert loops.start_training("loop-1", "penguins", policy, data) == "sweep-1"
    [(template, params, options)] = created
    assert template == "sweep" and params["template"] == "tabular-classification"
    assert params["params"] == {"dataset": "parquet:/data/t.parquet", "num_boost_round": 30}  # searched: not fixed
    assert params["space"] == space and params["trials"] == 4
    assert options["idempotency_key"] == "loop-1" and options["model_name"] == "penguins"
    assert options["max_retries"] == 1  # a task lost with the cluster (`aip down` / `up`) runs once more
    assert options["project"] == "team"  # the model's project, not default


def test_a_run_reads_and_watches_the_datasets_of_its_models_project(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from aiplatform.loops.platform import PlatformLoops
    from aiplatform.settings import Settings

    storage = LocalStorage(tmp_path / "objects")
    for key, version, at in (
        ("projects/team/datasets/penguins/new/manifest.json", "new", 5.0),
        ("datasets/penguins/other/manifest.json", "other", 6.0),  # default's dataset of the same name
    ):
        storage.put_bytes(key, json.dumps({"name": "penguins", "version": version, "created_at": at}).encode())
    loops = PlatformLoops(Settings(home=tmp_path), warm=lambda model_id: None)
    loops.__dict__["storage"] = storage
    loops.__dict__["registry"] = SimpleNamespace(model_project=lambda name: {"penguins": "team"}.get(name))
    assert loops.dataset_versions_after("penguins", "penguins@old", 1.0) == [{"ref": "penguins@new", "created_at": 5.0}]
    assert loops.datasets(loops.project_of("penguins")).root == "projects/team/datasets"
    assert loops.project_of("unclaimed") == "default" and loops.datasets("default").root == "datasets"
    assert loops.datasets("team") is loops.datasets("team")  # one manager per project, kept


def test_the_run_tables_keep_production_rows_and_add_the_fresh_ones_in_their_types(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aiplatform.loops.data import FreshRows, holdout_rows, write_run_tables

    original = pa.table(
        {
            "island": ["Biscoe", "Dream"],
            "year": pa.array([2007, 2008], pa.int64()),
            "mass": [3750.5, None],
            "label_name": ["Adelie", "Gentoo"],
        }
    )
    fresh = FreshRows(
        train=[{"island": "Torgersen", "year": 2009.0, "mass": "4000", "label_name": "Chinstrap"}],
        holdout=[{"island": "Biscoe", "year": 2009, "mass": None, "label_name": "Adelie"}],
        unreadable=0,
    )
    train_path, holdout_path = write_run_tables(tmp_path / "run", original, ["island", "year", "mass"], fresh)
    train = pq.read_table(train_path)
    assert (
        train.column("year").to_pylist() == [2007.0, 2008.0, 2009.0] and train.schema.field("year").type == pa.float64()
    )
    assert train.column("mass").to_pylist() == [3750.5, None, 4000.0]
    assert train.column("label_name").to_pylist() == ["Adelie", "Gentoo", "Chinstrap"]
    rows, labels = holdout_rows(holdout_path)
    assert rows == [{"island": "Biscoe", "year": 2009.0, "mass": None}] and labels == ["Adelie"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "holdout.parquet",
        "train.parquet",
    ]  # no partial file


def test_a_version_a_run_made_names_the_run_in_its_registry_lineage(tmp_path: Path) -> None:
    from aiplatform.api import deps
    from aiplatform.api.routes import models as model_routes
    from aiplatform.registry.store import RegistryStore
    from aiplatform.storage import open_storage, sha256_bytes

    platform = FakePlatform()
    platform.training_state = {"state": "succeeded", "version": 2}
    loops = in_process_loops(tmp_path, platform)
    policy = {"model": "penguins", "on_alerts": ["quality-low"], "cooldown_s": 0, "canary": {"watch_s": 0}}
    loops.engine.put_policy(parse_policy(policy), 0.0)
    platform.alerts.append({"id": "a1", "rule": "quality-low", "labels": {"model": "penguins"}, "started_at": 1.0})
    loops.engine.tick(2.0)
    [run] = loops.runs("penguins")
    assert run["state"] == "promoted"
    link = loops.version_run("penguins", 2)
    assert link is not None and link["run"] == run["id"] and link["url"] == f"/v1/loops/runs/{run['id']}"
    assert link["trigger"] | {"at": 0} == {"kind": "alert", "alert_id": "a1", "detail": "quality-low", "at": 0}
    assert link["decision"]["step"] == "decide" and link["decision"]["outcome"] == "promoted"
    assert loops.version_run("penguins", 1) is None  # production: no run made it

    storage = open_storage(str(tmp_path / "art"))
    registry = RegistryStore(tmp_path / "registry.sqlite", storage)
    for content in (b"one", b"two"):
        key = f"packages/penguins/{sha256_bytes(content)[:12]}.zip"
        storage.put_bytes(key, content)
        registry.register_version("penguins", package_key=key, sha256=sha256_bytes(content), template="t")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(model_routes.router)
    app.dependency_overrides[deps.get_registry] = lambda: registry
    app.dependency_overrides[model_routes.get_loop_run_of] = lambda: loops.version_run
    api = TestClient(app)
    made = api.get("/v1/models/penguins/versions/2/lineage")
    assert made.status_code == 200 and made.json()["lineage"][0]["loop"] == link
    assert "loop" not in api.get("/v1/models/penguins/versions/1/lineage").json()["lineage"][0]
    registry.close()
