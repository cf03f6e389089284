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
