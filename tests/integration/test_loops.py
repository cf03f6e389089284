"""A whole retraining loop on the session's Ray with the platform's scheduler, gateway and loop
engine: the penguins table model trained on a small sample through the task queue and made
production; predictions for the whole table, labeled; a policy (bad ones refused by name); the
quality alert those labels fire starts a run (a trigger by hand during it skipped, and said so)
that builds data with the labeled
predictions, trains through the real task queue, passes the gate on production's test split and
the fresh held-out slice, canaries and promotes, with the loop engine's actor killed and
restarted (same state folder) while the run trains; the run's steps, links and lineage. The model
is a team's (project ``team``): the run's dataset version and training task are that project's,
and nothing of the run appears in ``default``."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from aiplatform.datasets.tabular_sources import penguins_file
from aiplatform.loops.actor import LOOP_ACTOR_NAME, LoopClient
from aiplatform.registry import RegistryClient
from aiplatform.tasks.queue import SUCCEEDED, TaskClient
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import platform_settings, served_platform, wait_for, wait_for_task

pytestmark = pytest.mark.integration

MODEL = "loop-penguins"
PROJECT = "team"
"""The model's project: every request of this module acts in it (``X-AIP-Project``)."""
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
SMALL = {"max_rows": 60, "num_boost_round": 30, "early_stopping_rounds": 5}
"""Production learns from 60 rows: the loop's run has the whole labeled table besides."""
CHROMIUM = Path("/usr/bin/chromium")
RUN_S = 420.0
"""A run's two steps that take work (its data's build, its training: each a Ray job on two cores)."""


@contextlib.contextmanager
def loop_platform(home: Path, name: str, **settings: Any) -> Iterator[dict[str, Any]]:
    """A served platform with its scheduler and a loop engine that ticks every 0.5 s, alerts
    evaluated only when a test asks (``settings`` add the quality thresholds a module needs)."""
    with (
        platform_settings(
            home, name, task_poll_interval_s=0.5, loop_interval_s=0.5, alert_interval_s=3600, **settings
        ) as s,
        served_platform(s) as url,
        httpx.Client(base_url=url, timeout=120) as api,
    ):
        ensure_scheduler(s)
        yield {
            "settings": s,
            "url": url,
            "api": api,
            "queue": TaskClient.connect(s),
            "registry": RegistryClient.connect(s),
        }


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # A production that errs at all on the labeled table fires the quality rule.
    with loop_platform(tmp_path_factory.mktemp("loops"), "loops", alert_quality_accuracy=0.999) as platform:
        assert platform["api"].post("/v1/projects", json={"name": PROJECT}).status_code == 201
        platform["api"].headers["X-AIP-Project"] = PROJECT
        yield platform


def _rows() -> list[dict[str, Any]]:
    """The penguins table as JSON rows ('NA' as null) with their species."""
    with open(penguins_file(), newline="") as handle:
        table = list(csv.DictReader(handle))
    rows = []
    for row in table:
        features = {
            n: None if row[n] == "NA" else (row[n] if n in ("island", "sex") else float(row[n])) for n in FEATURES
        }
        rows.append({"features": features, "species": row["species"]})
    return rows


def train_production(platform: dict[str, Any], model: str, template: str, params: dict[str, Any]) -> int:
    """``model`` trained by ``template`` through the task queue and made production: its version."""
    created = platform["api"].post(
        "/v1/tasks", json={"template": template, "model_name": model, "start": True, "params": params}
    )
    assert created.status_code == 201, created.text
    done = wait_for_task(platform["queue"], created.json()["id"], lambda t: t.finished, timeout_s=RUN_S)
    assert done.state == SUCCEEDED, done.error
    version = int(done.result["version"])
    platform["registry"].set_alias(model, "production", version)
    return version


def _production(platform: dict[str, Any]) -> int:
    return train_production(platform, MODEL, "tabular-classification", SMALL)


def _label_traffic(platform: dict[str, Any]) -> int:
    """Every row predicted by production, then labeled with its species; how many were labeled."""
    api, rows = platform["api"], _rows()
    labels = []
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        answer = api.post(f"/v1/models/{MODEL}/predict", json={"rows": [r["features"] for r in chunk]})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        labels += [{"request_id": request_id, "index": i, "label": r["species"]} for i, r in enumerate(chunk)]
    last = f"{labels[-1]['request_id']}-{labels[-1]['index']}"
    wait_for(lambda: api.get(f"/v1/results/{last}").status_code == 200, 60, "the predictions in the result store")
    labeled = api.post("/v1/results/feedback", json=labels)
    assert labeled.status_code == 200, labeled.text
    assert labeled.json()["labeled"] == len(rows)
    return len(rows)


def _run(api: httpx.Client, run_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/loops/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ended(api: httpx.Client, run_id: str) -> bool:
    """Whether the run has ended; an engine still starting again answers 503 meanwhile. A poll
    whose connection Serve's proxy closed unanswered is polled again (seen once in a suite's run
    of thousands of polls; what the loop does is what these tests check)."""
    try:
        answer = api.get(f"/v1/loops/runs/{run_id}")
    except httpx.RemoteProtocolError:
        return False
    if answer.status_code == 503:
        return False
    assert answer.status_code == 200, answer.text
    return answer.json()["finished_at"] is not None


def test_a_loop_retrains_gates_canaries_and_promotes_through_a_restart(
    platform: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api, registry = platform["api"], platform["registry"]
    production = _production(platform)
    labeled = _label_traffic(platform)

    # Bad policies: each refused naming what is wrong, nothing stored.
    for body, status, named in (
        ({"model": MODEL, "schedule": "61 * * * *"}, 400, "minute"),
        ({"model": MODEL, "on_alerts": ["no-such-rule"]}, 400, "no-such-rule"),
        ({"model": MODEL, "canary": {"weight": 150}}, 400, "canary.weight"),
        ({"model": "no-such-model"}, 404, "no-such-model"),
    ):
        refused = api.post("/v1/loops", json=body)
        assert refused.status_code == status and named in refused.json()["message"], refused.text
    assert api.get("/v1/loops").json()["policies"] == []

    policy = {
        "model": MODEL,
        "on_alerts": ["quality-low"],
        "cooldown_s": 0,
        "data": {"holdout_fraction": 0.3, "seed": 1},
        "gate": {"margin": 0.0},
        "canary": {"weight": 20, "watch_s": 1},
    }
    created = api.post("/v1/loops", json=policy)
    assert created.status_code == 201, created.text
    assert created.json()["marks"]["production"] == production

    # The labels put production's accuracy below the quality rule's threshold: the alert starts a run.
    evaluation = api.post("/v1/alerts/evaluate").json()
    fired = [a for a in evaluation["fired"] if a["rule"] == "quality-low" and a["labels"].get("model") == MODEL]
    assert fired, evaluation["signals"]
    wait_for(lambda: api.get(f"/v1/loops/{MODEL}/runs").json()["runs"], 60, "the alert's run")
    run_id = api.get(f"/v1/loops/{MODEL}/runs").json()["runs"][0]["id"]
    again = api.post(f"/v1/loops/{MODEL}/trigger", json={"detail": "by hand"}).json()
    assert again["run"] is None and "is open" in again["skipped"]["reason"]

    # The engine's actor dies while the run trains; Ray starts it again on the same state folder.
    wait_for(lambda: "task_id" in _run(api, run_id)["context"], RUN_S, "the run's data and its training task")
    task_id = _run(api, run_id)["context"]["task_id"]
    actor = ray.get_actor(LOOP_ACTOR_NAME, namespace=platform["settings"].ray_namespace)
    ray.kill(actor, no_restart=False)
    wait_for(lambda: _ended(api, run_id), RUN_S, "the run's end")

    run = _run(api, run_id)
    steps = {s["step"]: s for s in run["steps"]}
    assert run["state"] == "promoted", run
    assert list(steps) == ["triggered", "data", "train", "gate", "canary", "decide"]
    assert steps["triggered"]["kind"] == "alert" and steps["triggered"]["alert_id"] == fired[0]["id"]
    data = steps["data"]
    assert data["labeled"] + data["unreadable"] == labeled and data["unreadable"] == 0
    assert data["holdout"] > 0 and data["fresh_train"] > data["holdout"]
    assert data["rows"]["train"] > SMALL["max_rows"]  # production's rows and the labeled ones
    assert data["test_rows_out"] > 0  # production's test rows (the gate's original slice) not trained on
    assert steps["train"]["task_id"] == task_id  # the restarted engine followed the same task
    candidate = steps["train"]["version"]
    gate = steps["gate"]
    assert gate["fresh"]["rows"] == data["holdout"]
    assert gate["fresh"]["candidate_accuracy"] >= gate["fresh"]["production_accuracy"]
    assert steps["canary"]["outcome"] == "clean"
    assert steps["canary"]["weights"] == {str(production): 80.0, str(candidate): 20.0}
    assert registry.aliases(MODEL)["production"] == candidate and registry.get_traffic(MODEL) == {}

    # The candidate's lineage is the run's: its task and the dataset version the run built.
    version = registry.get_version(MODEL, candidate)
    assert version.lineage["task_id"] == task_id and version.lineage["dataset"] == data["dataset"]
    # ... and names the run: the alert that started it and the decision.
    link = api.get(f"/v1/models/{MODEL}/versions/{candidate}/lineage").json()["lineage"][0]["loop"]
    assert link["run"] == run_id and link["trigger"]["alert_id"] == fired[0]["id"]
    assert link["decision"]["outcome"] == "promoted"
    chain = api.get(f"/v1/loops/runs/{run_id}/lineage").json()["chain"]
    assert [link["kind"] for link in chain] == ["alert", "dataset", "task", "version", "gate", "canary", "decide"]
    assert chain[0]["alert_id"] == fired[0]["id"] and chain[0]["detail"] == "quality-low"
    assert chain[1]["labeled"] == data["labeled"] and chain[3]["version"] == candidate
    assert chain[-1]["outcome"] == "promoted"

    # All in the model's project: the run's task and its dataset version; nothing in default.
    assert platform["queue"].get(task_id).project == PROJECT
    name, _, built = data["dataset"].partition("@")
    assert api.get(f"/v1/datasets/{name}/{built}").status_code == 200
    in_default = {"X-AIP-Project": "default"}
    assert api.get(f"/v1/datasets/{name}/{built}", headers=in_default).status_code == 404
    assert api.get("/v1/datasets", headers=in_default).json()["datasets"] == []
    assert api.get("/v1/tasks", headers=in_default).json()["tasks"] == []

    listed = api.get(f"/v1/loops/{MODEL}/runs").json()["runs"]
    assert [r["id"] for r in listed] == [run_id]
    assert "is open" in api.get(f"/v1/loops/{MODEL}/skipped").json()["skipped"][0]["reason"]
    assert LoopClient.connect(platform["settings"]).status()["ticks"] >= 1
    _check_the_cli(platform, run_id, monkeypatch, capsys)
    if CHROMIUM.exists():
        _check_the_model_page(platform["url"], run_id, task_id)


def _check_the_cli(
    platform: dict[str, Any], run_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aip loops`: the run with its steps and lineage; a policy refused; a trigger in the cool-down."""
    from aip.cli import main

    monkeypatch.setenv("AIP_HOME", str(platform["settings"].home))
    monkeypatch.setenv("AIP_API_URL", platform["url"])
    monkeypatch.setenv("AIP_API_AUTH", "off")
    monkeypatch.setenv("AIP_PROJECT", PROJECT)
    monkeypatch.setenv("AIP_RAY_ADDRESS", "auto")  # so main() leaves this process's Ray environment alone
    assert main(["loops", "run", run_id]) == 0
    shown = capsys.readouterr().out
    assert f"{run_id} {MODEL}: promoted" in shown and "lineage: alert " in shown and "-> decide promoted" in shown
    assert main(["loops", "runs", MODEL]) == 0 and run_id in capsys.readouterr().out
    assert main(["loops", "create", MODEL, "--schedule", "0 99 * * *"]) != 0
    assert "hour" in capsys.readouterr().err
    assert main(["loops", "create", MODEL, "--on-alert", "quality-low", "--cooldown-s", "3600"]) == 0
    assert "cool-down 3600 s" in capsys.readouterr().out
    assert main(["loops", "trigger", MODEL]) == 3  # the run just ended: within the cool-down
    assert "started nothing: cool-down until" in capsys.readouterr().out
    assert main(["loops", "show", MODEL]) == 0 and "skipped" in capsys.readouterr().out


def _check_the_model_page(url: str, run_id: str, task_id: str) -> None:
    """The model's page shows the loop's run with its steps, and the lineage graph its trigger."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.add_init_script(f"window.localStorage.setItem('aip-project', '{PROJECT}')")  # the model's project
            page.goto(f"{url}/#models/{MODEL}")
            panel = page.locator("#loops")
            expect(panel).to_contain_text(run_id, timeout=60_000)
            expect(panel.locator(f"tr[data-run='{run_id}']")).to_contain_text("promoted")
            expect(panel.locator(f"tr[data-run='{run_id}']")).to_contain_text(f"task {task_id}")
            graph = page.locator("#lineage-graph")
            expect(graph.locator(f"[data-edge='loop:{run_id}->task:{task_id}']")).to_have_count(1)
        finally:
            browser.close()
