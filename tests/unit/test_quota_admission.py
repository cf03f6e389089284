"""The task manager's side of quotas (``aiplatform.tasks.manager``), without Ray: a task that
needs more than its project's quota is refused at creation, start, sweep resume and extend (409
naming it), as is a resume past the queued-task quota; a queued task's reason is the scheduler's
round and names nothing of another project; a template installed from before projects, whose
``check_inputs`` takes no project, still creates tasks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

from aiplatform.access import AccessStore
from aiplatform.access.quotas import Quota
from aiplatform.errors import Conflict
from aiplatform.settings import Settings
from aiplatform.storage import Storage, open_storage
from aiplatform.tasks import fair_share
from aiplatform.tasks import manager as manager_module
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import CANCELLED, TaskStore
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.training import catalog
from aiplatform.training.catalog import get_template
from tests.factories import TINY_CNN_PARAMS

SWEEP_PARAMS = {
    "template": "cnn-classification",
    "params": TINY_CNN_PARAMS,
    "space": {"seed": {"type": "choice", "values": [1, 2]}},
    "trials": 2,
    "max_concurrent_trials": 2,
}


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TaskManager:
    monkeypatch.setattr(manager_module.ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(manager_module.ray, "available_resources", lambda: {"CPU": 4.0})
    settings = Settings(state_dir=str(tmp_path), task_max_running=4)  # workers hold 0.5 CPU each
    access = AccessStore.in_state_dir(tmp_path)
    for project in ("a", "b"):
        access.create_project(project, by="platform")
    access.close()
    storage = open_storage(f"file://{tmp_path / 'storage'}")
    return TaskManager(TaskStore(tmp_path / "tasks.sqlite"), RayJobs(settings), settings, storage=storage)


def _create(tasks: TaskManager, project: str, template: str = "cnn-classification", **params: Any) -> str:
    base = SWEEP_PARAMS if template == "sweep" else TINY_CNN_PARAMS
    return tasks.create(template, {**base, **params}, start=True, project=project).id


def test_a_task_past_its_projects_whole_quota_is_refused_and_sweeps_back_in_the_queue_are_checked(
    tasks: TaskManager,
) -> None:
    tasks.quotas.set(Quota("a", cpus=1), by="platform")
    with pytest.raises(Conflict, match=r"needs 1.5 CPUs, more than its project's quota of 1 CPUs \(project 'a'\)"):
        _create(tasks, "a", workers=3)
    assert not any(tasks.counts("a").values())  # nothing stored
    sweep = _create(tasks, "a", "sweep")  # two trials at once of one 0.5-CPU worker: 1 CPU
    tasks.queue.cancel(sweep)
    # the quota lowered after it was made: resume and extend are refused naming it
    tasks.quotas.set(Quota("a", cpus=0.5), by="platform")
    for back_in_the_queue in (lambda: tasks.resume_sweep(sweep), lambda: tasks.extend_sweep(sweep, 2)):
        with pytest.raises(Conflict, match="needs 1 CPUs, more than its project's quota of 0.5 CPUs"):
            back_in_the_queue()
    # within it again, but the queued-task quota is full: refused naming that quota
    tasks.quotas.set(Quota("a", cpus=1, queued=1), by="platform")
    queued = _create(tasks, "a")
    for back_in_the_queue in (lambda: tasks.resume_sweep(sweep), lambda: tasks.extend_sweep(sweep, 2)):
        with pytest.raises(Conflict, match="queued-task quota"):
            back_in_the_queue()
    assert tasks.queue.get(sweep).state == CANCELLED
    tasks.queue.cancel(queued)
    assert tasks.resume_sweep(sweep).state == "QUEUED"


def test_a_queued_tasks_reason_is_the_rounds_and_names_nothing_of_another_project(tasks: TaskManager) -> None:
    """a's tasks are ahead of b's in the queue and two of them run (2 of the 4 CPUs): b's reasons
    come from the round (its quota lets one of its two start) and say nothing of a's."""
    tasks.quotas.set(Quota("b", cpus=0.5), by="platform")
    theirs = [_create(tasks, "a", workers=2) for _ in range(3)]
    for task_id in theirs[:2]:
        tasks.queue.claim(task_id, f"job-{task_id}")
    mine = [_create(tasks, "b") for _ in range(2)]
    bigger = _create(tasks, "a", workers=3)
    reasons = tasks.why_waiting([tasks.queue.get(t) for t in [*mine, theirs[2], bigger]])
    assert reasons[mine[0]] == "starting: the scheduler takes it on its next round"
    assert reasons[mine[1]] == "project quota: 0.5 of 0.5 CPUs in use (it needs 0.5)"
    for task_id in mine:
        assert not any(other in reasons[task_id] for other in [*theirs, bigger]), reasons[task_id]
    assert reasons[theirs[2]] == "starting: the scheduler takes it on its next round"
    assert reasons[bigger] == fair_share.MOST_AT_ONCE  # the round's two slots are taken


class OldTemplate(type(get_template("cnn-classification"))):  # type: ignore[misc]
    """A template installed from before projects: its ``check_inputs`` takes no project."""

    name = "old-signature"
    checked: ClassVar[list[Any]] = []

    def check_inputs(self, params: Any, storage: Storage) -> None:  # type: ignore[override]
        self.checked.append(params)


def test_a_template_whose_check_inputs_takes_no_project_still_creates_tasks(
    tasks: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(catalog._extra, OldTemplate.name, OldTemplate())
    task = tasks.create("old-signature", TINY_CNN_PARAMS, project="b")
    assert task.project == "b" and len(OldTemplate.checked) == 1


def test_creations_at_the_same_instant_never_queue_past_the_quota(
    tasks: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight creations racing past the manager's early check (here: every one passes it, as all
    would that read the count at the same instant) leave exactly the quota's three queued: the
    queue checks again in the write that queues."""
    tasks.quotas.set(Quota("b", queued=3), by="platform")
    monkeypatch.setattr(TaskManager, "check_queued_quota", lambda self, project, limit: None)
    barrier = threading.Barrier(8)

    def create(_: int) -> str:
        barrier.wait()
        try:
            return _create(tasks, "b")
        except Conflict as refused:
            assert "has 3 of 3 queued tasks (its queued-task quota)" in refused.message
            return "refused"

    with ThreadPoolExecutor(8) as threads:
        outcomes = list(threads.map(create, range(8)))
    assert outcomes.count("refused") == 5
    assert tasks.counts("b").get("QUEUED") == 3
    created = tasks.create("cnn-classification", dict(TINY_CNN_PARAMS), project="b")  # not queued: no quota
    with pytest.raises(Conflict, match="queued-task quota"):
        tasks.start(created.id)
    assert tasks.queue.get(created.id).state == "CREATED"
