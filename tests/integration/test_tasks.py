"""Task queue actor and task manager on the session's local Ray, with real Ray jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.settings import Settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import (
    CANCELLED,
    FAILED,
    QUEUED,
    REASON_INTERRUPTED,
    RUNNING,
    TaskClient,
)
from aiplatform.tasks.ray_jobs import RayJobs
from tests.factories import TINY_CNN_PARAMS, make_task, platform_settings, wait_for_task


@pytest.fixture()
def settings(ray_session: None, tmp_path: Path) -> Iterator[Settings]:
    with platform_settings(tmp_path, "tasks", task_poll_interval_s=0.5) as settings:
        yield settings


@pytest.fixture()
def manager(settings: Settings) -> TaskManager:
    return TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)


def test_highest_priority_starts_first_and_cancel_works_queued_and_running(manager: TaskManager) -> None:
    low = manager.create("cnn-classification", dict(TINY_CNN_PARAMS), priority=-1, start=True)
    high = manager.create("cnn-classification", {**TINY_CNN_PARAMS, "epochs": 50}, priority=5, start=True)
    manager.reconcile()  # capacity 1: only the highest-priority task starts
    assert manager.queue.get(high.id).state == RUNNING and manager.queue.get(low.id).state == QUEUED
    assert manager.cancel(low.id).state == CANCELLED
    wait_for_task(manager.queue, high.id, lambda t: manager.jobs.state(t.ray_job_id).status == "RUNNING", 60)
    cancelled = manager.cancel(high.id)
    assert cancelled.state == CANCELLED and cancelled.error_reason == "cancelled"
    assert manager.jobs.state(cancelled.ray_job_id).status == "STOPPED"
    with pytest.raises(Conflict, match="only a CREATED task can be started"):
        manager.start(high.id)
    assert manager.queue.counts()["finished"] == 2


def test_a_task_whose_job_is_gone_is_interrupted_or_requeued(manager: TaskManager) -> None:
    lost = make_task(manager.queue, start=True)
    retried = make_task(manager.queue, start=True, max_retries=1)
    for task in (lost, retried):  # as if their jobs ran on a cluster that has since restarted
        manager.queue.claim(task.id, f"aip-task-{task.id}-1")
        manager.queue.mark_submitted(task.id)
    manager.reconcile()
    failed = manager.queue.get(lost.id)
    assert (failed.state, failed.error_reason) == (FAILED, REASON_INTERRUPTED)
    assert "no longer exists" in failed.error
    again = manager.queue.get(retried.id)  # queued again, and started again in the same round
    assert (again.state, again.attempts, again.ray_job_id) == (RUNNING, 2, f"aip-task-{retried.id}-2")
    assert manager.cancel(retried.id).state == CANCELLED


def test_bad_input_is_rejected_and_stores_nothing(manager: TaskManager) -> None:
    with pytest.raises(NotFound, match="Training template 'nope' not found"):
        manager.create("nope", {})
    with pytest.raises(InvalidArgument, match="epochs: Input should be greater than or equal to 1"):
        manager.create("cnn-classification", {"epochs": 0})
    with pytest.raises(InvalidArgument, match="batch_size: Input should be a valid integer"):
        manager.create("cnn-classification", {"batch_size": "big"})
    with pytest.raises(InvalidArgument, match="Model name"):
        manager.create("cnn-classification", {}, model_name="Bad Name")
    with pytest.raises(NotFound, match="Task 'missing' not found"):
        manager.cancel("missing")
    assert manager.queue.counts()["total"] == 0


def test_queue_actor_killed_during_submissions_loses_and_duplicates_nothing(settings: Settings) -> None:
    queue = TaskClient.connect(settings)
    keys = [f"key-{i}" for i in range(300)]
    created: dict[str, str] = {}

    def submit() -> None:
        for key in keys:
            created[key] = make_task(queue, idempotency_key=key, start=True).id

    worker = threading.Thread(target=submit)
    worker.start()
    kills = 0
    while worker.is_alive() and kills < 4:
        time.sleep(0.4)
        ray.kill(queue.handle, no_restart=False)
        kills += 1
    worker.join(120)
    assert kills >= 2 and len(created) == len(keys)
    tasks = queue.list(limit=1000)
    assert len(tasks) == len(keys) and len({t.id for t in tasks}) == len(keys)
    assert sorted(t.idempotency_key for t in tasks) == sorted(keys)
    assert {t.id for t in tasks} == set(created.values())


def test_a_task_larger_than_the_cluster_never_holds_up_the_tasks_behind_it(ray_session: None, tmp_path: Path) -> None:
    with platform_settings(tmp_path, "fit", autoscaling=True) as settings:
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        big = manager.create("cnn-classification", {**TINY_CNN_PARAMS, "workers": 8}, priority=5, start=True)
        small = manager.create("cnn-classification", dict(TINY_CNN_PARAMS), start=True)
        waiting = manager.why_waiting([big, small])
        assert "needs 4 CPU, more than the whole cluster has (2 CPU); the autoscaler has been asked" in waiting[big.id]
        assert waiting[small.id] == "starting: the scheduler takes it on its next round"  # the round passes big over
        manager.reconcile()  # the big one waits for nodes; the small one behind it starts
        assert manager.queue.get(small.id).state == RUNNING and manager.queue.get(big.id).state == QUEUED
        behind = manager.create("cnn-classification", dict(TINY_CNN_PARAMS), start=True)
        assert manager.why_waiting([behind])[behind.id] == (
            "the platform already runs as many tasks at once as it may (AIP_TASK_MAX_RUNNING=1)"
        )
        for task in (small, big, behind):
            manager.cancel(task.id)
    with platform_settings(tmp_path / "fixed", "fit") as settings:  # a cluster that cannot grow refuses it
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        with pytest.raises(InvalidArgument, match=r"needs 4 CPU \(8 worker\(s\)\) but the whole cluster has 2 CPU"):
            manager.create("cnn-classification", {**TINY_CNN_PARAMS, "workers": 8}, start=True)
        assert manager.queue.counts()["total"] == 0
