"""The loop engine: triggers in, runs moved on one step at a time, a decision out.

Each ``tick(now)`` looks at every enabled policy's triggers (a due cron tick, a new alert naming
the model, a new version of production's dataset) and opens a run for the first, or records why
it starts nothing (a run is open, the cool-down has not passed). Then it moves each open run on:

    triggered -> data -> train -> gate -> canary -> decide -> promoted | rolled_back | rejected | failed

A step either ends in this tick (its end stored with its links) or has started something it
waits on (a task, a canary, the data step's or the gate's work in a Ray task of its own), noted in
the run before it waits, so a restarted engine picks the same task or canary up again (or
launches the work again: it repeats safely). A training task lost with the cluster (``aip down``
/ ``aip up``) is queued again once by the task queue; lost again, the run fails saying so. The
platform is reached through ``LoopPlatform`` (the real one: ``aiplatform.loops.platform``), and
time through ``now``: the tests drive it with fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiplatform.errors import AIPError, Conflict, NotFound, Unavailable
from aiplatform.loops.cron import due_tick, parse_cron
from aiplatform.loops.policy import ANY_ALERT, LoopPolicy, check_alert_names
from aiplatform.loops.store import FAILED, PROMOTED, REJECTED, ROLLED_BACK, STEPS, LoopStore, Run, StoredPolicy

logger = logging.getLogger(__name__)
MAX_STEP_ERRORS = 5
"""Unexpected errors in a row at one step before its run fails (a platform error fails it at once)."""
INTERRUPTED = "interrupted"
"""A training task's end when its Ray job was lost (``aiplatform.tasks.queue``'s reason)."""
CANARY_ROLLBACK_RULE = "canary-rollback"
"""The alert the alert engine raises when it takes a canary's traffic away (``aiplatform.alerting``)."""


class LoopPlatform(Protocol):
    """What the engine asks of the platform (every call may raise a platform error)."""

    def alert_rules(self) -> list[str]: ...

    def alerts_since(self, since: float) -> list[dict[str, Any]]: ...

    def production(self, model: str) -> dict[str, Any]: ...

    def dataset_versions_after(self, model: str, dataset_ref: str, after: float) -> list[dict[str, Any]]: ...

    def build_data(
        self, run_id: str, model: str, policy: LoopPolicy, production: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The run's data (its dataset version, counts and slice), or None while it is being
        written (asked again next tick)."""
        ...

    def start_training(self, run_id: str, model: str, policy: LoopPolicy, data: dict[str, Any]) -> str: ...

    def training(self, task_id: str) -> dict[str, Any]: ...

    def gate(self, model: str, production: int, candidate: int, data: dict[str, Any]) -> dict[str, Any] | None:
        """Both models' figures, or None while they are still being scored (asked again next tick)."""
        ...

    def start_canary(self, model: str, version: int, weight: float) -> dict[str, Any]: ...

    def canary_state(self, model: str, version: int) -> dict[str, Any]: ...

    def promote(self, model: str, version: int) -> dict[str, Any]: ...

    def end_canary(self, model: str) -> None: ...


@dataclass
class TickReport:
    """What one tick did (for the actor's status and the tests)."""

    opened: list[str]
    skipped: list[dict[str, Any]]
    advanced: list[str]


class LoopEngine:
    """Policies, triggers and the runs' state machine over a ``LoopStore``."""

    def __init__(self, store: LoopStore, platform: LoopPlatform, clock: Callable[[], float] | None = None) -> None:
        """``clock``: the time each step ends at, read as it ends (the actor's ``time.time``); a
        tick's ``now`` is used throughout when none is given (the tests' fixed clock)."""
        self.store = store
        self.platform = platform
        self.clock = clock

    # -- policies --------------------------------------------------------------------------
    def put_policy(self, policy: LoopPolicy, now: float) -> StoredPolicy:
        """Store ``policy`` after checking the names it uses against the platform: its model has a
        production version, its alert rules exist. Its schedule counts from now (no tick owed)."""
        check_alert_names(policy, [*self.platform.alert_rules(), CANARY_ROLLBACK_RULE])
        production = self.platform.production(policy.model)
        marks = {
            "schedule_tick": now,
            "alert_since": now,
            "data_since": now,
            "production": production["version"],
            "dataset": production.get("dataset"),  # the source whose new versions start runs
        }
        return self.store.put_policy(policy, marks)

    # -- triggers --------------------------------------------------------------------------
    def trigger(self, model: str, now: float, by: str = "manual", detail: str | None = None) -> dict[str, Any]:
        """A run by hand: ``{"run": ...}``, or ``{"skipped": ...}`` saying why none started."""
        stored = self.store.policy(model)
        return self._start(stored, {"kind": "manual", "by": by, "detail": detail or "by hand"}, now)

    def tick(self, now: float) -> TickReport:
        report = TickReport([], [], [])
        for stored in self.store.policies():
            if not stored.policy.enabled:
                continue
            try:
                triggers = self._triggers(stored, now)
            except (Unavailable, NotFound) as exc:
                logger.warning("loop triggers of %s not checked this tick: %s", stored.policy.model, exc)
                continue
            for trigger in triggers:
                outcome = self._start(stored, trigger, now)
                if "run" in outcome:
                    report.opened.append(outcome["run"]["id"])
                else:
                    report.skipped.append(outcome["skipped"])
        for run in self.store.open_runs():
            try:
                self.advance(run.id, now)
                report.advanced.append(run.id)
            except Exception as exc:
                self._unexpected(run, exc, now)
        return report

    def _unexpected(self, run: Run, exc: Exception, now: float) -> None:
        """A step that raised something other than a platform error: tried again next tick, and
        the run failed once it has raised ``MAX_STEP_ERRORS`` times in a row at the same step."""
        run = self.store.run(run.id)  # the step it got to before it raised
        errors = int(run.context.get("step_errors", {}).get(run.state, 0)) + 1
        logger.exception("loop run %s: %s failed unexpectedly (%d of %d)", run.id, run.state, errors, MAX_STEP_ERRORS)
        self.store.note(run.id, now, step_errors={run.state: errors})
        if errors >= MAX_STEP_ERRORS:
            reason = f"{run.state} failed {errors} times: {type(exc).__name__}: {str(exc)[:300]}"
            self._end(run, run.state, "failed", {"error": reason}, FAILED, now)

    def _triggers(self, stored: StoredPolicy, now: float) -> list[dict[str, Any]]:
        """The triggers that arrived since the policy's marks (the marks move past them)."""
        policy, marks, found = stored.policy, stored.marks, []
        if policy.schedule:
            tick = due_tick(parse_cron(policy.schedule), marks.get("schedule_tick"), now)
            if tick is not None:
                found.append({"kind": "schedule", "detail": policy.schedule, "tick": tick})
                self.store.set_marks(policy.model, schedule_tick=tick)
        if policy.on_alerts:
            since = float(marks.get("alert_since", now))
            alerts = [a for a in self.platform.alerts_since(since) if a["started_at"] > since]
            for alert in sorted(alerts, key=lambda a: a["started_at"]):
                if alert.get("labels", {}).get("model") != policy.model:
                    continue
                if ANY_ALERT in policy.on_alerts or alert["rule"] in policy.on_alerts:
                    found.append({"kind": "alert", "detail": alert["rule"], "alert_id": alert["id"]})
            if alerts:
                self.store.set_marks(policy.model, alert_since=max(a["started_at"] for a in alerts))
        if policy.on_new_data:
            dataset = marks.get("dataset") or self.platform.production(policy.model).get("dataset")
            since = float(marks.get("data_since", now))
            newer = self.platform.dataset_versions_after(policy.model, dataset, since) if dataset else []
            if newer:
                latest = max(newer, key=lambda v: v["created_at"])
                found.append({"kind": "dataset", "detail": latest["ref"], "dataset": latest["ref"]})
                self.store.set_marks(policy.model, data_since=latest["created_at"])
        return found

    def _start(self, stored: StoredPolicy, trigger: dict[str, Any], now: float) -> dict[str, Any]:
        model = stored.policy.model
        trigger = {**trigger, "at": now}
        open_run = self.store.open_run_of(model)
        if open_run is not None:
            return {"skipped": self.store.skip(model, trigger, f"run {open_run.id} is open ({open_run.state})", now)}
        last_end = self.store.policy(model).marks.get("last_finished_at")
        if last_end is not None and now < last_end + stored.policy.cooldown_s:
            until = last_end + stored.policy.cooldown_s
            return {"skipped": self.store.skip(model, trigger, f"cool-down until {until:.0f} (unix time)", now)}
        try:
            run = self.store.open_run(model, trigger, now)
        except Conflict as exc:  # another caller opened one in between
            return {"skipped": self.store.skip(model, trigger, exc.message, now)}
        return {"run": run.to_dict()}

    # -- the state machine -----------------------------------------------------------------
    def advance(self, run_id: str, now: float) -> Run:
        """Move an open run on by what can be done now. A platform error fails the run (the step
        says why); an unreachable part of the platform leaves it where it is, for the next tick."""
        run = self.store.run(run_id)
        for _ in STEPS:  # a step that ended goes straight on to the next
            if self.clock is not None:  # a step's end is stamped when it ends, not when the tick began
                now = max(now, self.clock())
            moved = self._advance_once(run, now)
            if moved.finished or moved.state == run.state:
                return moved
            run = moved
        return run

    def _advance_once(self, run: Run, now: float) -> Run:
        if run.finished:
            return run
        step = run.state
        try:
            policy = self.store.policy(run.model).policy
        except NotFound:
            return self._end(run, step, "failed", {"error": "its policy was deleted"}, FAILED, now)
        try:
            return getattr(self, f"_step_{step}")(run, policy, now)
        except Unavailable as exc:
            logger.warning("loop run %s waits at %s: %s", run.id, step, exc)
            return run
        except AIPError as exc:
            return self._end(run, step, "failed", {"error": exc.message}, FAILED, now)

    def _end(self, run: Run, step: str, outcome: str, links: dict[str, Any], state: str, now: float) -> Run:
        ended = self.store.finish_step(run.id, step, outcome, links, state, now)
        if ended.finished:
            self.store.set_marks(run.model, last_finished_at=now)
        return ended

    def _step_data(self, run: Run, policy: LoopPolicy, now: float) -> Run:
        production = self.platform.production(run.model)
        if run.trigger.get("dataset"):  # a new version of the source: the run's base instead of production's
            # ... but the gate still scores on production's own test split, which production never
            # trained on (the new version's split may differ from the one production was trained on)
            production = {**production, "dataset": run.trigger["dataset"], "trained_on": production.get("dataset")}
        data = self.platform.build_data(run.id, run.model, policy, production)
        if data is None:  # still being written; noted so the record shows the step at work
            return run if "data_started_at" in run.context else self.store.note(run.id, now, data_started_at=now)
        links = {**data, "production": production["version"]}
        if data["labeled"] < policy.data.min_labeled:
            reason = f"{data['labeled']} labeled predictions; the policy needs {policy.data.min_labeled}"
            return self._end(run, "data", "not enough data", {**links, "error": reason}, FAILED, now)
        self.store.note(run.id, now, data=links)
        return self.store.finish_step(run.id, "data", "built", links, "train", now)

    def _step_train(self, run: Run, policy: LoopPolicy, now: float) -> Run:
        task_id = run.context.get("task_id")
        if task_id is None:
            task_id = self.platform.start_training(run.id, run.model, policy, run.context["data"])
            run = self.store.note(run.id, now, task_id=task_id)
        state = self.platform.training(task_id)
        if state["state"] == "running":
            return run
        if state["state"] != "succeeded":
            error = state.get("error") or f"training {state['state']}"
            if state.get("reason") == INTERRUPTED:
                error = (
                    f"training task {task_id} was lost with its Ray job (the platform restarted or its node"
                    f" went away) and again on its retry: {error}"
                )
            links = {"task_id": task_id, "error": error, **({"reason": state["reason"]} if state.get("reason") else {})}
            return self._end(run, "train", "failed", links, FAILED, now)
        self.store.note(run.id, now, candidate=state["version"])
        links = {"task_id": task_id, "version": state["version"], "metrics": state.get("metrics", {})}
        links |= {k: state[k] for k in ("sweep_id", "best_trial", "best_params") if k in state}
        return self.store.finish_step(run.id, "train", "trained", links, "gate", now)

    def _step_gate(self, run: Run, policy: LoopPolicy, now: float) -> Run:
        data, candidate = run.context["data"], int(run.context["candidate"])
        figures = self.platform.gate(run.model, int(data["production"]), candidate, data)
        if figures is None:  # still scoring; noted so the record shows the gate at work
            return run if "gate_started_at" in run.context else self.store.note(run.id, now, gate_started_at=now)
        refusals = gate_refusals(figures, policy.gate.margin, policy.gate.min_fresh)
        links = {"version": candidate, "production": data["production"], "margin": policy.gate.margin, **figures}
        if refusals:
            return self._end(run, "gate", "refused", {**links, "reasons": refusals}, REJECTED, now)
        return self.store.finish_step(run.id, "gate", "passed", links, "canary", now)

    def _step_canary(self, run: Run, policy: LoopPolicy, now: float) -> Run:
        candidate = int(run.context["candidate"])
        started = run.context.get("canary_started_at")
        if started is None:
            weights = self.platform.start_canary(run.model, candidate, policy.canary.weight)
            run = self.store.note(run.id, now, canary_started_at=now, canary_weights=weights)
            started = now
        state = self.platform.canary_state(run.model, candidate)
        alerts = [
            a
            for a in self.platform.alerts_since(float(started))
            if a["started_at"] >= started
            and a.get("labels", {}).get("model") == run.model
            and a["rule"] in {*policy.canary.alerts, CANARY_ROLLBACK_RULE}
        ]
        links = {"version": candidate, "weight": policy.canary.weight, "watched_s": round(now - started, 1), **state}
        if alerts or not state.get("serving", True):
            alert = alerts[0] if alerts else None
            why = {"alert_id": alert["id"], "alert_rule": alert["rule"]} if alert else {"reason": "traffic taken away"}
            self.store.note(run.id, now, canary_outcome="alert")
            return self.store.finish_step(run.id, "canary", "alert", {**links, **why}, "decide", now)
        if now - started < policy.canary.watch_s:
            return run
        self.store.note(run.id, now, canary_outcome="clean")
        return self.store.finish_step(run.id, "canary", "clean", links, "decide", now)

    def _step_decide(self, run: Run, policy: LoopPolicy, now: float) -> Run:
        candidate = int(run.context["candidate"])
        if run.context.get("canary_outcome") == "clean":
            deployed = self.platform.promote(run.model, candidate)
            return self._end(run, "decide", "promoted", {"version": candidate, **deployed}, PROMOTED, now)
        self.platform.end_canary(run.model)
        links = {"version": candidate, "production": run.context["data"]["production"]}
        return self._end(run, "decide", "rolled back", links, ROLLED_BACK, now)


def gate_refusals(figures: dict[str, Any], margin: float, min_fresh: int) -> list[str]:
    """Why a candidate fails the gate: on each slice (``original``: production's test split,
    ``fresh``: the held-out labeled predictions) its accuracy must be production's plus ``margin``
    or more; the fresh slice counts when it has ``min_fresh`` rows."""
    reasons = []
    for slice_name in ("original", "fresh"):
        figure = figures.get(slice_name)
        if not figure or (slice_name == "fresh" and figure.get("rows", 0) < max(1, min_fresh)):
            continue
        new, old = float(figure["candidate_accuracy"]), float(figure["production_accuracy"])
        if new < old + margin:
            reasons.append(f"{slice_name}: accuracy {new:.4f} is not production's {old:.4f} + margin {margin}")
    return reasons
