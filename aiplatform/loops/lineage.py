"""A run's lineage: the chain from what started it to what it decided, each link naming the
record it points at (an alert id, a dataset version with its labeled predictions, a task id, a
model version), in the order they happened."""

from __future__ import annotations

from typing import Any


def run_lineage(run: dict[str, Any]) -> dict[str, Any]:
    """The chain of a run record (``LoopStore.run(...).to_dict()``)."""
    steps = {step["step"]: step for step in run["steps"]}
    trigger = run["trigger"]
    chain: list[dict[str, Any]] = [
        {
            "kind": trigger.get("kind"),
            "alert_id": trigger.get("alert_id"),
            "detail": trigger.get("detail"),
            "at": trigger.get("at"),
        }
    ]
    data = steps.get("data")
    if data and data.get("dataset"):
        chain.append(
            {
                "kind": "dataset",
                "ref": data["dataset"],
                "from": data.get("original_dataset"),
                "labeled": data.get("labeled"),
                "at": data["at"],
            }
        )
    train = steps.get("train")
    if train and train.get("task_id"):
        chain.append({"kind": "task", "id": train["task_id"], "outcome": train["outcome"], "at": train["at"]})
        if train.get("version") is not None:
            chain.append({"kind": "version", "model": run["model"], "version": train["version"], "at": train["at"]})
    for name in ("gate", "canary", "decide"):
        step = steps.get(name)
        if step:
            chain.append({"kind": name, "outcome": step["outcome"], "version": step.get("version"), "at": step["at"]})
    return {"run": run["id"], "model": run["model"], "chain": chain}


def version_link(run: dict[str, Any]) -> dict[str, Any]:
    """What a model version's registry lineage says of the run that made it: what started the
    run (the alert), the decision, and where the run's record and chain are."""
    trigger, last = run["trigger"], (run["steps"] or [{}])[-1]  # a finished run's last step decided it
    return {
        "run": run["id"],
        "state": run["state"],
        "trigger": {k: trigger.get(k) for k in ("kind", "alert_id", "detail", "at")},
        "decision": {"step": last.get("step"), "outcome": last.get("outcome"), "at": last.get("at")}
        if run["finished_at"]
        else None,
        "url": f"/v1/loops/runs/{run['id']}",
        "lineage_url": f"/v1/loops/runs/{run['id']}/lineage",
    }
