"""Run a queued batch inference task: score its input with its model version, write Parquet parts.

    python -m jobs.batch --task-id 0123456789abcdef      (how the task manager starts a task)

A job started again for the same task (after a kill or a lost node) scores only the parts not yet
written. Exit status: 0 done, 2 bad input or another error (a message on stderr; the task FAILED
with it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from aiplatform.errors import AIPError, Conflict

EXIT_ERROR = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.batch", description=__doc__.split("\n")[0])
    parser.add_argument("--task-id", required=True, help="the queued batch-inference task to run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = None
    try:
        from aiplatform.batch.job import run_batch
        from aiplatform.batch.params import BatchParams
        from aiplatform.registry import RegistryClient
        from aiplatform.runtime import connect, quiet_ray_data
        from aiplatform.settings import Settings
        from aiplatform.storage import storage_from_settings
        from aiplatform.tasks.queue import RUNNING, TaskClient
        from aiplatform.tasks.reporting import TaskRun

        settings = Settings()
        connect(settings)
        quiet_ray_data()
        queue = TaskClient.connect(settings)
        task = queue.get(args.task_id)
        if task.state != RUNNING:
            raise Conflict(f"Task {task.id} is {task.state}; the task manager starts a task by making it RUNNING first")
        run = TaskRun(queue, task)
        params = BatchParams.model_validate(task.params)
        print(f"task {task.id} (batch-inference, Ray job {task.ray_job_id or 'none'})", flush=True)
        summary = run_batch(
            task.id,
            params,
            settings=settings,
            storage=storage_from_settings(settings),
            registry=RegistryClient.connect(settings),
            report=lambda progress: queue.report_progress(task.id, progress),
            project=task.project,
        )
        run.succeeded({k: v for k, v in summary.items() if k != "evaluation"} | _scores(summary))
    except AIPError as exc:
        if run is not None:
            run.failed(exc.message)
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except BaseException as exc:
        if run is not None:
            run.failed(f"{type(exc).__name__}: {exc}")
        raise
    print(json.dumps(summary))
    return 0


def _scores(summary: dict) -> dict:  # type: ignore[type-arg]
    """The evaluation's figures as the task's result shows them (the matrix stays in summary.json)."""
    evaluation = summary.get("evaluation")
    if not evaluation:
        return {}
    return {
        "accuracy": evaluation["accuracy"],
        "macro_f1": evaluation["macro_f1"],
        "evaluated_rows": evaluation["rows"],
    }


if __name__ == "__main__":
    sys.exit(main())
