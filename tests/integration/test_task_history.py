"""Task history outlives Ray's job and the head (issue 33): one tiny real task, run by the
platform's scheduler on the session's Ray, has its job log copied to storage while it runs and its
final log and record when it ends; then Ray forgets the job and the head actors are started again
from the state folder, and the log (Python, REST, `aip tasks logs`), the task page's fields and the
comparison page still answer, from storage. A platform that lost its state folder too answers from
the record kept in storage."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from aiplatform.api.app import create_api_app
from aiplatform.api.deps import Platform, set_platform
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import RUNNING, SUCCEEDED, Task, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import (
    TINY_CNN_PARAMS,
    free_port,
    platform_settings,
    remove_platform_actors,
    wait_for,
    wait_for_task,
)

REPO = Path(__file__).resolve().parents[2]


def _manager(settings: Settings) -> TaskManager:
    """The API's task manager on the platform's current head actors."""
    return TaskManager(
        TaskClient.connect(settings), RayJobs(settings), settings, storage=storage_from_settings(settings)
    )


class APIServer:
    """The platform's REST API (the task routes' real code) on 127.0.0.1, in a thread; ``install``
    gives it a new head's clients, as a gateway started on that head would have."""

    def __init__(self) -> None:
        self.app = create_api_app()
        self.url = f"http://127.0.0.1:{free_port()}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-under-test", daemon=True)

    def install(self, settings: Settings) -> TaskManager:
        manager = _manager(settings)
        # Only the task routes are asked: the other stores' clients are not made.
        platform = Platform(
            settings=settings,
            registry=None,  # type: ignore[arg-type]
            results=None,  # type: ignore[arg-type]
            tasks=manager,
            storage=manager.history.storage,
            datasets=None,  # type: ignore[arg-type]
            alerts=None,  # type: ignore[arg-type]
            warm=lambda _: None,
        )
        set_platform(self.app, platform)
        return manager

    def __enter__(self) -> APIServer:
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "the API server to listen")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def forget_job(jobs: RayJobs, job_id: str) -> None:
    """Delete the job from Ray until Ray no longer knows it, and still does not a few seconds
    later: the job manager's monitor may write the job's info once more after the job ended (later
    on a busy machine), which brings a deleted job back."""
    gone_since: list[float] = []

    def forgotten() -> bool:
        if jobs.state(job_id) is not None:
            gone_since.clear()
            with contextlib.suppress(RuntimeError):
                jobs.client.delete_job(job_id)
            return False
        gone_since[:] = gone_since or [time.monotonic()]
        return time.monotonic() - gone_since[0] >= STAYS_GONE_S

    wait_for(forgotten, 120, f"Ray to forget job {job_id}")


STAYS_GONE_S = 5.0
"""How long a deleted job must stay gone (several of the job manager's monitoring intervals)."""


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # Copies every second (the default is 10 s) so the running task's copy is seen before it ends.
    with (
        platform_settings(
            tmp_path_factory.mktemp("history"), "history", task_poll_interval_s=0.5, task_log_archive_interval_s=1.0
        ) as settings,
        APIServer() as api,
    ):
        ensure_scheduler(settings)
        yield {"settings": settings, "api": api, "manager": api.install(settings)}


@pytest.fixture(scope="module")
def finished(platform: dict[str, Any]) -> dict[str, Any]:
    """The tiny task, run to its end by the scheduler; ``seen_running``: the state the task was in
    just after its log was first found in storage."""
    manager: TaskManager = platform["manager"]
    task = manager.create("cnn-classification", dict(TINY_CNN_PARAMS), start=True)
    history = manager.history
    seen: dict[str, str] = {}

    def archived_while_running() -> bool:
        if f"task {task.id} (" not in (history.log(task.id) or ""):
            return False
        seen["state"] = manager.queue.get(task.id).state
        return True

    wait_for(archived_while_running, 240, "the running task's log in storage")
    done = wait_for_task(manager.queue, task.id, lambda t: t.finished, timeout_s=300)
    assert done.state == SUCCEEDED, (done.error, manager.logs(task.id)[-3000:])
    # The final copy: once the job has ended, with the lines it printed after finishing its task.
    wait_for(
        lambda: (
            (r := history.record(task.id))
            and r["task"]["state"] == SUCCEEDED
            and "package:" in (history.log(task.id) or "")
        ),
        60,
        "the final log and record in storage",
    )
    record = history.record(task.id)
    return {"task": done, "seen_running": seen["state"], "record": record, "ray_log": manager.logs(task.id)}


def test_a_running_tasks_log_is_copied_to_storage_before_it_ends(finished: dict[str, Any]) -> None:
    assert finished["seen_running"] == RUNNING


def test_history_outlives_the_job_and_the_head(platform: dict[str, Any], finished: dict[str, Any]) -> None:
    settings: Settings = platform["settings"]
    task: Task = finished["task"]
    record = finished["record"]
    assert record["task"]["params"] == task.params and record["task"]["attempts"] == 1
    assert record["task"]["source"] == "api" and record["task"]["finished_at"] == task.finished_at
    assert [m["epoch"] for m in record["metrics_history"]] == [1] and "val_accuracy" in record["metrics_history"][0]

    # Ray forgets the job; the head's actors are started again from the state folder.
    forget_job(RayJobs(settings), task.ray_job_id)
    remove_platform_actors(settings.ray_namespace)
    ensure_scheduler(settings)
    manager = platform["api"].install(settings)

    log = manager.read_logs(task.id)
    assert (log.source, log.ray_job_known) == ("storage", False)
    assert f"task {task.id} (cnn-classification, Ray job {task.ray_job_id})" in log.text
    assert "epoch 1/1" in log.text and "package:" in log.text
    assert log.text.strip() == finished["ray_log"].strip()  # all of it, as Ray had it

    with httpx.Client(base_url=platform["api"].url, timeout=30) as client:
        logs = client.get(f"/v1/tasks/{task.id}/logs").json()
        assert (logs["source"], logs["ray_job_known"]) == ("storage", False)
        assert f"task {task.id} (" in logs["logs"]
        page = client.get(f"/v1/tasks/{task.id}").json()
        assert (page["state"], page["ray_job_known"], page["ray_dashboard_url"]) == (SUCCEEDED, False, None)
        assert client.get(f"/v1/tasks/{task.id}/metrics").json()["history"] == record["metrics_history"]
        compared = client.post("/v1/runs/compare", json={"ids": [task.id]}).json()["runs"]
        assert compared[0]["history"] == record["metrics_history"] and compared[0]["state"] == SUCCEEDED

    env = {**os.environ, "AIP_API_URL": platform["api"].url, "AIP_HOME": str(settings.home)}
    cli = subprocess.run(
        [sys.executable, "-m", "aip", "tasks", "logs", task.id],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"task {task.id} (" in cli.stdout and "package:" in cli.stdout
    assert "Ray no longer has this task's job" in cli.stderr


def test_a_platform_that_lost_its_state_folder_answers_from_storage(
    platform: dict[str, Any], finished: dict[str, Any], tmp_path: Path
) -> None:
    """The record in storage is the second copy: a new head with an empty state folder and the
    same storage still shows the task, its curves, its log and its comparison."""
    task: Task = finished["task"]
    storage_uri = platform["settings"].resolved_storage_uri
    with platform_settings(tmp_path, "history-new", storage_uri=storage_uri) as settings:
        manager = _manager(settings)
        assert manager.queue.counts()["total"] == 0
        kept = manager.get(task.id)
        assert (kept.state, kept.params, kept.result) == (SUCCEEDED, task.params, task.result)
        assert manager.metrics_history(task.id) == finished["record"]["metrics_history"]
        assert manager.read_logs(task.id).source == "storage" and "package:" in manager.logs(task.id)
        (run,) = manager.compare_runs([task.id])
        curves = finished["record"]["metrics_history"]
        assert (run["state"], run["params"], run["history"]) == (SUCCEEDED, task.params, curves)
        assert run["metrics"]["val_accuracy"] == curves[-1]["val_accuracy"]
