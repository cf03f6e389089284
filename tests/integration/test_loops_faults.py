"""Runs that must not promote, on the session's Ray with the platform's scheduler, gateway and
loop engine (the penguins table model of test_loops.py, production trained on 60 rows, its
predictions of the whole table labeled): a run whose training task ends without a version fails
with the task linked; a run whose canary's version draws an alert (its own predictions labeled
wrong: the quality rule fires for that version) rolls back, the canary's version out of traffic
and production unchanged, the alert linked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import wait_for, wait_for_task
from tests.integration.test_loops import RUN_S, _ended, _label_traffic, _production, _rows, _run, loop_platform

pytestmark = pytest.mark.integration

MODEL = "loop-penguins"
"""The name test_loops.py's helpers train and label (this module's platform is its own)."""
CLASSES = ("Adelie", "Chinstrap", "Gentoo")


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("loop-faults")
    with loop_platform(home, "loopfaults", alert_quality_accuracy=0.9, alert_quality_min_labeled=20) as platform:
        yield platform


def _trigger(api: httpx.Client, detail: str) -> str:
    started = api.post(f"/v1/loops/{MODEL}/trigger", json={"detail": detail})
    assert started.status_code == 202, started.text
    assert started.json()["run"] is not None, started.json()
    return started.json()["run"]["id"]


def test_a_failed_training_fails_its_run_and_an_alert_in_the_canary_rolls_back(platform: dict[str, Any]) -> None:
    api, registry = platform["api"], platform["registry"]
    production = _production(platform)
    _label_traffic(platform)
    # Production's own quality alert (if its labels put it low) opens now, before any canary.
    api.post("/v1/alerts/evaluate")
    policy = {
        "model": MODEL,
        "cooldown_s": 0,
        "data": {"holdout_fraction": 0.3, "seed": 1},
        "gate": {"margin": 0.0},
        "canary": {"weight": 50, "watch_s": 3600, "alerts": ["quality-low"]},
    }
    assert api.post("/v1/loops", json=policy).status_code == 201

    # 1. The run's training task ends without a version (stopped as soon as the run started it).
    failing = _trigger(api, "a training that fails")
    wait_for(lambda: "task_id" in _run(api, failing)["context"], RUN_S, "the run's data and its training task")
    task_id = _run(api, failing)["context"]["task_id"]
    assert api.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    wait_for_task(platform["queue"], task_id, lambda t: t.finished, timeout_s=RUN_S)
    wait_for(lambda: _ended(api, failing), RUN_S, "the failed run's end")
    run = _run(api, failing)
    steps = {s["step"]: s for s in run["steps"]}
    assert run["state"] == "failed", run
    assert list(steps) == ["triggered", "data", "train"]
    assert steps["train"]["outcome"] == "failed" and steps["train"]["task_id"] == task_id
    assert steps["train"]["error"]
    assert registry.aliases(MODEL)["production"] == production and registry.get_traffic(MODEL) == {}

    # 2. A run that trains, passes the gate and canaries; the canary's predictions are labeled
    # wrong, the quality rule fires for its version, and the run rolls back.
    rolling = _trigger(api, "a canary that draws an alert")
    wait_for(lambda: "canary_started_at" in _run(api, rolling)["context"], RUN_S, "the run's canary")
    candidate = int(_run(api, rolling)["context"]["candidate"])
    assert registry.get_traffic(MODEL) == {production: 50.0, candidate: 50.0}
    rows, pending = _rows(), set()
    for start in range(0, len(rows), 10):  # 35 requests: the split is drawn per request
        chunk = [r["features"] for r in rows[start : start + 10]]
        answer = api.post(f"/v1/models/{MODEL}/predict", json={"rows": chunk})
        assert answer.status_code == 200, answer.text
        pending.add(f"{answer.json()['request_id']}-{len(chunk) - 1}")

    def stored() -> bool:
        pending.difference_update({i for i in list(pending) if api.get(f"/v1/results/{i}").status_code == 200})
        return not pending

    wait_for(stored, 60, "the canary's predictions stored")
    served = api.get("/v1/results", params={"model": MODEL, "version": candidate, "limit": 1000}).json()["results"]
    assert len(served) >= 20, len(served)  # about half the requests
    wrong = [{"id": r["id"], "label": next(c for c in CLASSES if c != r["output"].get("label"))} for r in served]
    assert api.post("/v1/results/feedback", json=wrong).status_code == 200
    fired = [
        a
        for a in api.post("/v1/alerts/evaluate").json()["fired"]
        if a["rule"] == "quality-low" and a["labels"].get("model") == MODEL
    ]
    assert [str(a["labels"].get("version")) for a in fired] == [str(candidate)], fired
    wait_for(lambda: _ended(api, rolling), RUN_S, "the rolled-back run's end")
    run = _run(api, rolling)
    steps = {s["step"]: s for s in run["steps"]}
    assert run["state"] == "rolled_back", run
    assert list(steps) == ["triggered", "data", "train", "gate", "canary", "decide"]
    assert steps["canary"]["outcome"] == "alert" and steps["canary"]["alert_id"] == fired[0]["id"]
    assert steps["decide"]["outcome"] == "rolled back" and steps["decide"]["version"] == candidate
    assert registry.get_traffic(MODEL) == {}  # the canary's version out of traffic
    assert registry.aliases(MODEL)["production"] == production
    chain = api.get(f"/v1/loops/runs/{rolling}/lineage").json()["chain"]
    assert chain[-1]["outcome"] == "rolled back", chain
