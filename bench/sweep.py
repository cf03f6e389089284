"""Benchmark: the same MNIST sweep with ASHA early stopping and without.

    python bench/sweep.py [--trials 8] [--epochs 4] [--max-rows 3000] [--concurrent 2] [--repeats 1]

Both sweeps draw the same trials (random search, the same seed), on the same cores, through the
platform's path (a sweep task on an embedded Ray: the scheduler runs it as a Ray job, Ray Tune
runs the trials on Ray Train). Prints for each: the best validation accuracy reached, the
trial-epochs run, the wall time, and the epochs and time ASHA saved as ratios against the run
without it, measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
    "hidden_units": {"type": "choice", "values": [16, 64, 128]},
    "conv_channels": {"type": "choice", "values": [[8], [16, 32]]},
}


def run_sweep(manager: Any, scheduler: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One sweep to its end; what it reached and what it cost."""
    from aiplatform.tasks.queue import FINISHED

    params = {
        "template": "cnn-classification",
        "space": SPACE,
        "metric": "val_accuracy",
        "mode": "max",
        "params": {"epochs": args.epochs, "max_rows": args.max_rows, "batch_size": 64},
        "trials": args.trials,
        "max_concurrent_trials": args.concurrent,
        "search": "random",
        "seed": seed,
        "scheduler": {"type": scheduler, "grace_period": 1, "reduction_factor": 2},
    }
    task = manager.create("sweep", params, model_name=f"bench-sweep-{scheduler}", start=True)
    while not (done := manager.queue.get(task.id)).finished:
        time.sleep(2)
    if done.state != "SUCCEEDED":
        raise SystemExit(f"sweep {task.id} {done.state}: {done.error}\n{manager.logs(task.id)[-3000:]}")
    trials = manager.queue.trials(task.id)
    return {
        "best_val_accuracy": max(t.metrics.get("val_accuracy", 0.0) for t in trials),
        "trial_epochs": sum(t.epoch or 0 for t in trials),
        "stopped_early": sum(t.state != FINISHED for t in trials),
        "wall_seconds": (done.finished_at or 0) - (done.started_at or 0),
    }


def prebuild(settings: Any, args: argparse.Namespace) -> None:
    """The dataset version both sweeps train on, built before either is timed."""
    from aiplatform.datasets import DatasetManager
    from aiplatform.storage import storage_from_settings
    from aiplatform.training.catalog import get_template

    template = get_template("cnn-classification")
    params = template.parse_params({"epochs": args.epochs, "max_rows": args.max_rows})
    DatasetManager(storage_from_settings(settings)).build(template.dataset_spec(params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-rows", type=int, default=3000)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of sweeps (seeds 0, 1, ...)")
    args = parser.parse_args()

    from aiplatform.runtime import connect, quiet_ray_data
    from aiplatform.settings import Settings
    from aiplatform.tasks.manager import TaskManager
    from aiplatform.tasks.queue import TaskClient
    from aiplatform.tasks.ray_jobs import RayJobs
    from aiplatform.tasks.scheduler import ensure_scheduler

    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="aip-bench-sweep-")),
        ray_num_cpus=2,
        ray_namespace=f"bench-{uuid.uuid4().hex[:8]}",
        api_auth="off",
        task_poll_interval_s=0.5,
        ray_temp_dir=Path(f"/tmp/aip-bench-ray-{os.getpid()}"),
    )
    connect(settings)
    quiet_ray_data()
    ensure_scheduler(settings)
    manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
    prebuild(settings, args)
    pairs = []
    for seed in range(args.repeats):
        none = run_sweep(manager, "none", args, seed)
        asha = run_sweep(manager, "asha", args, seed)
        pair = {
            "seed": seed,
            "none": none,
            "asha": asha,
            "epochs_saved": 1 - asha["trial_epochs"] / none["trial_epochs"],
            "wall_ratio_asha_over_none": asha["wall_seconds"] / none["wall_seconds"],
            "best_accuracy_change_points": 100 * (asha["best_val_accuracy"] - none["best_val_accuracy"]),
        }
        pairs.append(pair)
        print(json.dumps(pair), flush=True)
    print(
        json.dumps(
            {
                "trials": args.trials,
                "epochs": args.epochs,
                "max_rows": args.max_rows,
                "concurrent": args.concurrent,
                "median_epochs_saved": statistics.median(p["epochs_saved"] for p in pairs),
                "median_wall_ratio_asha_over_none": statistics.median(p["wall_ratio_asha_over_none"] for p in pairs),
                "median_best_accuracy_change_points": statistics.median(
                    p["best_accuracy_change_points"] for p in pairs
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
