"""The loop engine without a cluster: cron schedules on an injected clock (a missed schedule runs
once), policies refused by name, triggers during a run or a cool-down skipped and said so, the
state machine from trigger to promoted / rejected / rolled back / failed, and a restart (a new
engine on the same state file) that carries a run on from its last finished step."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import pytest

from aiplatform.errors import Conflict, InvalidArgument, Unavailable
from aiplatform.loops.cron import due_tick, parse_cron
from aiplatform.loops.engine import LoopEngine, gate_refusals
from aiplatform.loops.policy import parse_policy
from aiplatform.loops.store import FAILED, PROMOTED, REJECTED, ROLLED_BACK, LoopStore

pytestmark = pytest.mark.unit


def utc(text: str) -> float:
    """``YYYY-mm-dd HH:MM`` in UTC as unix seconds."""
    import time

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


class FakePlatform:
    """The platform as the engine sees it, every answer settable by the test."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.datasets: list[dict[str, Any]] = []
        self.training_state: dict[str, Any] = {"state": "running"}
        self.figures = {
            "original": {"rows": 50, "production_accuracy": 0.80, "candidate_accuracy": 0.85},
            "fresh": {"rows": 20, "production_accuracy": 0.50, "candidate_accuracy": 0.90},
        }
        self.serving = True
        self.calls: list[tuple[str, Any]] = []
        self.unavailable = False
        self.gate_pending = 0
        """Polls the gate answers None for (its Ray task still scoring)."""
        self.data_pending = 0
        """Polls the data step answers None for (its Ray task still writing)."""

    def alert_rules(self) -> list[str]:
        return ["quality-low", "drift-significant", "error-rate-high", "latency-p99-high"]

    def alerts_since(self, since: float) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["started_at"] >= since]

    def production(self, model: str) -> dict[str, Any]:
        return {"version": 1, "dataset": "penguins@abc", "created_at": 0.0}

    def dataset_versions_after(self, model: str, dataset_ref: str, after: float) -> list[dict[str, Any]]:
        self.calls.append(("dataset_versions_after", model))
        return [d for d in self.datasets if d["created_at"] > after]

    def build_data(self, run_id: str, model: str, policy: Any, production: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("build_data", run_id))
        if self.data_pending:
            self.data_pending -= 1
            return None
        return {"dataset": "loop-data@1", "labeled": 30, "fresh_train": 21, "holdout": 9}

    def start_training(self, run_id: str, model: str, policy: Any, data: dict[str, Any]) -> str:
        if self.unavailable:
            raise Unavailable("the task queue is restarting")
        self.calls.append(("start_training", run_id))
        return f"task-{run_id}"

    def training(self, task_id: str) -> dict[str, Any]:
        return self.training_state

    def gate(self, model: str, production: int, candidate: int, data: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("gate", candidate))
        if self.gate_pending:
            self.gate_pending -= 1
            return None
        return self.figures

    def start_canary(self, model: str, version: int, weight: float) -> dict[str, Any]:
        self.calls.append(("start_canary", version))
        return {"1": 100 - weight, str(version): weight}

    def canary_state(self, model: str, version: int) -> dict[str, Any]:
        return {"serving": self.serving, "weights": {}}

    def promote(self, model: str, version: int) -> dict[str, Any]:
        self.calls.append(("promote", version))
        return {"previous_version": 1}

    def end_canary(self, model: str) -> None:
        self.calls.append(("end_canary", model))


def engine(tmp_path: Path, platform: FakePlatform | None = None) -> LoopEngine:
    return LoopEngine(LoopStore(tmp_path / "loops.sqlite"), platform or FakePlatform())


POLICY = {"model": "penguins", "on_alerts": ["quality-low"], "cooldown_s": 600, "canary": {"watch_s": 60}}


def test_cron_parses_the_five_fields_and_refuses_by_name() -> None:
    cron = parse_cron("*/15 2-3 * * 1,3")
    assert cron.minutes == {0, 15, 30, 45} and cron.hours == {2, 3} and cron.weekdays == {1, 3}
    assert parse_cron("0 0 * * 7").weekdays == {0}  # 7 is Sunday too
    # Monday 2026-12-07 02:10 -> 02:15 the same day; after 03:45 -> Wednesday 02:00
    assert parse_cron("*/15 2-3 * * 1,3").next_after(utc("2026-12-07 02:10")) == utc("2026-12-07 02:15")
    assert parse_cron("*/15 2-3 * * 1,3").next_after(utc("2026-12-07 03:45")) == utc("2026-12-09 02:00")
    assert parse_cron("30 4 1 * *").next_after(utc("2026-12-07 00:00")) == utc("2027-01-01 04:30")
    for bad, named in (
        ("* * *", "5 fields"),
        ("61 * * * *", "minute"),
        ("* x * * *", "hour"),
        ("* * 0 * *", "day of month"),
    ):
        with pytest.raises(InvalidArgument, match=named):
            parse_cron(bad)


def test_a_schedule_missed_while_down_is_due_once_not_once_per_tick() -> None:
    hourly = parse_cron("0 * * * *")
    last = utc("2026-12-07 01:00")
    assert due_tick(hourly, last, utc("2026-12-07 01:59")) is None
    assert due_tick(hourly, last, utc("2026-12-07 02:00")) == utc("2026-12-07 02:00")
    # Down from 01:30 to 07:10: six ticks missed, one due (the latest); then none until 08:00.
    assert due_tick(hourly, last, utc("2026-12-07 07:10")) == utc("2026-12-07 07:00")
    assert due_tick(hourly, utc("2026-12-07 07:00"), utc("2026-12-07 07:50")) is None
    assert due_tick(hourly, None, utc("2026-12-07 07:50")) is None  # a new schedule owes nothing


def test_the_engine_runs_a_missed_schedule_once(tmp_path: Path) -> None:
    loops = engine(tmp_path)
    loops.put_policy(
        parse_policy({"model": "penguins", "schedule": "0 * * * *", "cooldown_s": 0}), utc("2026-12-07 01:30")
    )
    assert loops.tick(utc("2026-12-07 01:40")).opened == []
    report = loops.tick(utc("2026-12-07 07:10"))  # the platform was down since 01:40
    assert len(report.opened) == 1 and report.skipped == []
    run = loops.store.run(report.opened[0])
    assert run.trigger["kind"] == "schedule" and run.trigger["tick"] == utc("2026-12-07 07:00")
    assert loops.tick(utc("2026-12-07 07:20")).opened == []


def test_policies_are_refused_by_name(tmp_path: Path) -> None:
    loops = engine(tmp_path)
    for body, named in (
        ({"model": "m", "schedule": "every day"}, "Cron schedule"),
        ({"model": "m", "gate": {"margin": 2}}, "gate.margin"),
        ({"model": "m", "canary": {"weight": 100}}, "canary.weight"),
        ({"model": "m", "surprise": 1}, "surprise"),
        # production's split is the run's: the gate's test rows must be ones neither model trained on
        ({"model": "m", "train": {"params": {"seed": 3, "max_depth": 4}}}, r"train.params.*\['seed'\]"),
        ({"model": "m", "train": {"params": {"val_fraction": 0.2}}}, "val_fraction"),
        (
            {
                "model": "m",
                "train": {"sweep": {"space": {"test_fraction": {"type": "uniform", "low": 0.1, "high": 0.2}}}},
            },
            r"sweep.space.*test_fraction",
        ),
    ):
        with pytest.raises(InvalidArgument, match=named):
            parse_policy(body)
    with pytest.raises(InvalidArgument, match="no-such-rule"):
        loops.put_policy(parse_policy({"model": "m", "on_alerts": ["no-such-rule"]}), 0.0)
    assert loops.store.policies() == []


def test_a_run_goes_from_alert_to_promoted_and_triggers_meanwhile_are_skipped(tmp_path: Path) -> None:
    platform = FakePlatform()
    loops = engine(tmp_path, platform)
    loops.put_policy(parse_policy(POLICY), 1000.0)
    platform.alerts.append({"id": "a1", "rule": "quality-low", "labels": {"model": "penguins"}, "started_at": 1001.0})
    platform.alerts.append({"id": "a0", "rule": "quality-low", "labels": {"model": "other"}, "started_at": 1001.0})
    report = loops.tick(1002.0)
    assert len(report.opened) == 1
    run_id = report.opened[0]
    run = loops.store.run(run_id)
    assert run.trigger["alert_id"] == "a1"
    assert run.state == "train" and run.context["task_id"] == f"task-{run_id}"  # data built, task started
    # A second alert and a manual trigger during the run start nothing and say so.
    platform.alerts.append({"id": "a2", "rule": "quality-low", "labels": {"model": "penguins"}, "started_at": 1003.0})
    assert "is open" in loops.tick(1004.0).skipped[0]["reason"]
    assert "is open" in loops.trigger("penguins", 1005.0)["skipped"]["reason"]
    platform.training_state = {"state": "succeeded", "version": 2, "metrics": {"test_accuracy": 0.9}}
    loops.tick(1006.0)  # trained, gated and canaried in one tick: nothing there to wait on
    run = loops.store.run(run_id)
    assert run.state == "canary" and run.context["canary_started_at"] == 1006.0
    loops.tick(1030.0)  # watched 23 s of 60
    assert loops.store.run(run_id).state == "canary"
    loops.tick(1070.0)
    loops.tick(1071.0)
    run = loops.store.run(run_id)
    assert run.state == PROMOTED and run.finished
    assert [s["step"] for s in run.steps] == ["triggered", "data", "train", "gate", "canary", "decide"]
    assert (
        run.steps[1]["labeled"] == 30 and run.steps[2]["task_id"] == f"task-{run_id}" and run.steps[2]["version"] == 2
    )
    assert run.steps[4]["outcome"] == "clean" and ("promote", 2) in platform.calls
    # Within the cool-down a trigger starts nothing; after it, a new run.
    assert "cool-down" in loops.trigger("penguins", 1100.0)["skipped"]["reason"]
    assert "run" in loops.trigger("penguins", 1071.0 + 601)
    assert len(loops.store.skipped("penguins")) == 3


def test_a_candidate_that_does_not_beat_production_is_not_canaried(tmp_path: Path) -> None:
    platform = FakePlatform()
    platform.training_state = {"state": "succeeded", "version": 2}
    platform.figures["fresh"]["candidate_accuracy"] = 0.50
    loops = engine(tmp_path, platform)
    loops.put_policy(parse_policy({**POLICY, "gate": {"margin": 0.01}}), 0.0)
    run_id = loops.trigger("penguins", 1.0)["run"]["id"]
    for now in (2.0, 3.0, 4.0):
        loops.tick(now)
    run = loops.store.run(run_id)
    assert run.state == REJECTED and "fresh: accuracy 0.5000" in run.steps[-1]["reasons"][0]
    assert not any(call[0] == "start_canary" for call in platform.calls)
    assert gate_refusals({"fresh": {"rows": 0, "candidate_accuracy": 0, "production_accuracy": 1}}, 0.0, 1) == []


def test_an_alert_during_the_canary_rolls_back_and_a_failed_training_never_promotes(tmp_path: Path) -> None:
    platform = FakePlatform()
    platform.training_state = {"state": "succeeded", "version": 2}
    loops = engine(tmp_path, platform)
    loops.put_policy(parse_policy(POLICY), 0.0)
    run_id = loops.trigger("penguins", 1.0)["run"]["id"]
    for now in (2.0, 3.0, 4.0):
        loops.tick(now)
    assert loops.store.run(run_id).state == "canary"
    platform.alerts.append(
        {"id": "c1", "rule": "canary-rollback", "labels": {"model": "penguins", "version": "2"}, "started_at": 5.0}
    )
    loops.tick(6.0)
    loops.tick(7.0)
    run = loops.store.run(run_id)
    assert run.state == ROLLED_BACK and run.steps[4]["alert_id"] == "c1"
    assert ("end_canary", "penguins") in platform.calls and not any(c[0] == "promote" for c in platform.calls)

    platform.training_state = {"state": "failed", "error": "worker died"}
    failed = loops.trigger("penguins", 1000.0)["run"]["id"]
    loops.tick(1001.0)
    run = loops.store.run(failed)
    assert run.state == FAILED and run.error == "worker died" and run.steps[-1]["step"] == "train"


def test_a_restarted_engine_carries_a_run_on_from_its_last_step(tmp_path: Path) -> None:
    platform = FakePlatform()
    loops = engine(tmp_path, platform)
    loops.put_policy(parse_policy(POLICY), 0.0)
    run_id = loops.trigger("penguins", 1.0)["run"]["id"]
    platform.unavailable = True  # the queue is down: the run waits at train, not failed
    loops.tick(2.0)
    assert loops.store.run(run_id).state == "train" and "task_id" not in loops.store.run(run_id).context
    platform.unavailable = False
    loops.tick(3.0)
    loops.store.close()

    again = engine(tmp_path, platform)  # `aip down` / `aip up`: a new engine, the same state folder
    run = again.store.run(run_id)
    assert run.state == "train" and run.context["task_id"] == f"task-{run_id}"
    platform.training_state = {"state": "succeeded", "version": 2}
    for now in (4.0, 5.0, 6.0, 70.0, 71.0):
        again.tick(now)
    run = again.store.run(run_id)
    assert run.state == PROMOTED
    assert platform.calls.count(("build_data", run_id)) == 1  # no step done twice
    assert platform.calls.count(("start_training", run_id)) == 1
    again.store.open_run("penguins", {"kind": "manual"})
    with pytest.raises(Conflict):  # one open run per model, whoever asks
        again.store.open_run("penguins", {"kind": "manual"})


def test_data_and_gate_work_off_the_tick_through_a_restart_and_a_lost_training_fails_saying_so(
    tmp_path: Path,
) -> None:
    platform = FakePlatform()
    platform.training_state = {"state": "succeeded", "version": 2}
    platform.data_pending, platform.gate_pending = 1, 2  # their Ray tasks work for a poll or two
    loops = engine(tmp_path, platform)
    loops.put_policy(parse_policy(POLICY), 0.0)
    run_id = loops.trigger("penguins", 1.0)["run"]["id"]
    loops.tick(2.0)
    run = loops.store.run(run_id)
    assert run.state == "data" and run.context["data_started_at"] == 2.0  # waiting, the tick not held
    loops.tick(3.0)
    run = loops.store.run(run_id)
    assert run.state == "gate" and run.context["gate_started_at"] == 3.0
    loops.store.close()
    again = engine(tmp_path, platform)  # the actor died while the gate scored: asked again
    again.tick(4.0)
    assert again.store.run(run_id).context["gate_started_at"] == 3.0
    again.tick(5.0)
    run = again.store.run(run_id)
    assert run.state == "canary" and run.steps[-1]["step"] == "gate" and run.steps[-1]["at"] == 5.0
    assert platform.calls.count(("gate", 2)) == 3 and platform.calls.count(("build_data", run_id)) == 2
    assert platform.calls.count(("start_training", run_id)) == 1

    # A training task lost with the cluster after its one retry: the run fails, saying so.
    again.store.finish_step(run_id, "canary", "alert", {}, "decide", 6.0)
    again.tick(7.0)
    platform.training_state = {"state": "failed", "error": "job gone", "reason": "interrupted"}
    lost = again.trigger("penguins", 1000.0)["run"]["id"]
    again.tick(1001.0)
    run = again.store.run(lost)
    assert run.state == FAILED and run.steps[-1]["reason"] == "interrupted"
    assert "lost with its Ray job" in run.error and "again on its retry: job gone" in run.error


def test_each_decision_is_sent_signed_and_retried_until_accepted(tmp_path: Path) -> None:
    import hashlib
    import hmac
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from aiplatform.loops.notify import send_due

    received: list[tuple[dict[str, str], bytes]] = []
    answers = [500, 200]

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(answers.pop(0))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        platform = FakePlatform()
        platform.training_state = {"state": "succeeded", "version": 2}
        platform.figures["original"]["candidate_accuracy"] = 0.1
        store = LoopStore(tmp_path / "loops.sqlite", webhooks=[f"http://127.0.0.1:{server.server_port}/hook"])
        loops = LoopEngine(store, platform)
        loops.put_policy(parse_policy(POLICY), 0.0)
        run_id = loops.trigger("penguins", 1.0)["run"]["id"]
        loops.tick(2.0)
        assert store.run(run_id).state == REJECTED
        assert send_due(store, "s3cret", 3.0) == 0  # the receiver failed: retried later, not now
        assert store.deliveries(run_id)[0]["error"] == "HTTP 500" and send_due(store, "s3cret", 3.5) == 0
        assert send_due(store, "s3cret", 10.0) == 1
        assert store.deliveries(run_id)[0]["done_at"] == 10.0 and send_due(store, "s3cret", 100.0) == 0
    finally:
        server.shutdown()
    headers, body = received[-1]
    assert json.loads(body)["event"] == "loop.decision" and json.loads(body)["run"]["state"] == REJECTED
    expected = hmac.new(b"s3cret", headers["X-AIP-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-AIP-Signature"] == f"sha256={expected}" and len(received) == 2


def test_a_step_that_keeps_raising_fails_its_run_after_a_few_tries(tmp_path: Path) -> None:
    class Broken(FakePlatform):
        def build_data(self, *args: Any) -> dict[str, Any]:
            raise RuntimeError("the disk is full")

    loops = engine(tmp_path, Broken())
    loops.put_policy(parse_policy(POLICY), 0.0)
    run_id = loops.trigger("penguins", 1.0)["run"]["id"]
    for now in range(2, 6):
        loops.tick(float(now))
    assert loops.store.run(run_id).state == "data"  # tried again each tick
    loops.tick(6.0)
    run = loops.store.run(run_id)
    assert run.state == FAILED and "data failed 5 times: RuntimeError: the disk is full" in run.error


def test_a_new_version_of_the_source_dataset_starts_a_run_on_it(tmp_path: Path) -> None:
    built_on: list[str] = []

    class Recording(FakePlatform):
        def build_data(self, run_id: str, model: str, policy: Any, production: dict[str, Any]) -> dict[str, Any]:
            built_on.append(production["dataset"])
            return super().build_data(run_id, model, policy, production)

    platform = Recording()
    loops = engine(tmp_path, platform)
    loops.put_policy(parse_policy({"model": "penguins", "on_new_data": True, "cooldown_s": 0}), 100.0)
    assert loops.tick(101.0).opened == []
    platform.datasets.append({"ref": "penguins@new", "created_at": 102.0})
    report = loops.tick(103.0)
    [run_id] = report.opened
    run = loops.store.run(run_id)
    assert run.trigger["kind"] == "dataset" and run.trigger["dataset"] == "penguins@new"
    assert built_on == ["penguins@new"]  # the new version is the run's base
    assert ("dataset_versions_after", "penguins") in platform.calls  # the model's project's versions
    assert loops.tick(104.0).opened == [] and loops.store.skipped("penguins") == []  # seen once


def test_with_a_clock_each_step_is_stamped_when_it_ends_not_when_its_tick_began(tmp_path: Path) -> None:
    platform = FakePlatform()
    readings = iter(range(2000, 3000, 7))  # the clock moves on while the steps of one tick run
    loops = LoopEngine(LoopStore(tmp_path / "loops.sqlite"), platform, clock=lambda: float(next(readings)))
    loops.put_policy(parse_policy({**POLICY, "canary": {"watch_s": 0}}), 1000.0)
    run_id = loops.trigger("penguins", 1001.0)["run"]["id"]
    platform.training_state = {"state": "succeeded", "version": 2, "metrics": {"test_accuracy": 0.9}}
    loops.tick(1002.0)  # one tick: data, train, gate, canary, decide
    times = [step["at"] for step in loops.store.run(run_id).steps[1:]]
    assert times == sorted(times) and len(set(times)) == len(times) and times[0] >= 2000
