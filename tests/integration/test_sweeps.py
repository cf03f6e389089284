"""Sweeps on Ray Tune through the task manager, with real Ray jobs on the session's local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from aiplatform.code_archives import CodeArchives, pack_directory
from aiplatform.errors import InvalidArgument
from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import CANCELLED, FINISHED, PAUSED, SUCCEEDED, TRIAL_FAILED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import TINY_CNN_PARAMS, platform_settings, wait_for_task

BROKEN_NETWORK = [4, 4, 4, 4, 4]
"""Five pooled convolutions shrink a 28-pixel digit to nothing: a trial with them fails as it trains."""
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-mlp"
TRIAL_PARAMS = {k: v for k, v in TINY_CNN_PARAMS.items() if k != "conv_channels"}


@pytest.fixture()
def settings(ray_session: None, tmp_path: Path) -> Iterator[Settings]:
    with platform_settings(tmp_path, "sweeps", task_poll_interval_s=0.5, user_code=True) as settings:  # auth off
        scheduler = ensure_scheduler(settings)
        yield settings
        ray.kill(scheduler)


@pytest.fixture()
def manager(settings: Settings) -> TaskManager:
    return TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)


def sweep_params(**overrides: object) -> dict[str, object]:
    return {
        "template": "cnn-classification",
        "params": {**TRIAL_PARAMS, "epochs": 2},
        "space": {
            "learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
            "conv_channels": {"type": "choice", "values": [[4], [8], BROKEN_NETWORK]},
        },
        "metric": "val_accuracy",
        "mode": "max",
        "trials": 2,
        "max_concurrent_trials": 1,
        "scheduler": {"type": "none"},
        "search": "random",
        "seed": 9,
        **overrides,
    }


def test_a_sweep_survives_a_failing_trial_resumes_and_grows_after_a_stop_and_registers_the_best(
    settings: Settings, manager: TaskManager
) -> None:
    # Seed 9 draws the broken network, then conv_channels [4]: one trial at a time.
    task = manager.create("sweep", sweep_params(), model_name="swept-cnn", start=True)
    first = wait_for_task(
        manager.queue,
        task.id,
        lambda t: t.finished or [x.state for x in manager.queue.trials(t.id)][:1] == [TRIAL_FAILED],
        timeout_s=300,
    )
    assert first.state == "RUNNING", (first.error, manager.logs(task.id)[-3000:])
    manager.cancel(task.id)  # `aip sweeps stop`: its Ray job is stopped; Tune saves its state
    stopped = wait_for_task(manager.queue, task.id, lambda t: t.finished, timeout_s=120)
    assert stopped.state == CANCELLED, stopped
    before = {t.trial_id: t for t in manager.queue.trials(task.id)}
    assert all(t.state in (TRIAL_FAILED, PAUSED) for t in before.values()), before

    # `aip sweeps extend` on the stopped sweep: it resumes the segment Tune saved (the failed trial
    # stays failed, the other one runs), then one more trial in a new segment (a new searcher, its
    # own seed: 10 draws [4]), so the best is picked across segments.
    manager.extend_sweep(task.id, 1)
    done = wait_for_task(manager.queue, task.id, lambda t: t.finished, timeout_s=400)
    assert done.state == SUCCEEDED and done.params["trials"] == 3, (done.error, manager.logs(task.id)[-3000:])
    trials = manager.queue.trials(task.id)
    assert [t.state for t in trials] == [TRIAL_FAILED, FINISHED, FINISHED], trials
    assert [t.segment for t in trials] == [0, 0, 1] and done.result["segments"] == 2
    failed = trials[0]  # it did not run again
    assert failed.updated_at == before[failed.trial_id].updated_at
    assert failed.params["conv_channels"] == BROKEN_NETWORK and failed.error, failed
    for trial in trials[1:]:  # curves per epoch, and the checkpoint each reported
        history = manager.queue.compare_runs([trial.run_id])[0]["history"]
        assert [h["epoch"] for h in history] == [1, 2] and trial.checkpoint, (history, trial)
    paused = before.get(trials[1].trial_id)
    if paused is not None and (paused.epoch or 0) >= 1:  # stopped mid-way: it went on from its checkpoint
        history = manager.queue.compare_runs([trials[1].run_id])[0]["history"]
        assert history[-1]["resumed_from_epoch"] >= 1, history
    best = max(trials[1:], key=lambda t: t.metrics["val_accuracy"])
    assert done.result["best_trial"] == best.trial_id and done.result["trials"][TRIAL_FAILED] == 1
    version = RegistryClient.connect(settings).get_version("swept-cnn", done.result["version"])
    assert version.lineage["sweep_id"] == task.id and version.lineage["trial_id"] == best.trial_id
    assert version.lineage["sweep_params"] == best.params and version.lineage["dataset"].startswith("mnist")
    assert version.metrics["val_accuracy"] == pytest.approx(best.metrics["val_accuracy"])
    # The sweep's own curve: trials done, and the best value so far.
    assert manager.queue.metrics_history(task.id)[-1]["epoch"] == 3


def test_bad_sweeps_are_refused_naming_the_problem(manager: TaskManager) -> None:
    for change, message in [
        ({"space": {}}, "the search space is empty"),
        ({"space": {"depth": {"type": "int", "low": 1, "high": 3}}}, "has no parameter 'depth'"),
        ({"space": {"dropout": {"type": "uniform", "low": 0.5, "high": 0.1}}}, "'low' must be below 'high'"),
        ({"space": {"kernel_size": {"type": "int", "low": 0, "high": 5}}}, "space.kernel_size = 0 is refused"),
        ({"space": {"learning_rate": {"type": "choice"}}}, "a choice needs at least one value"),
        ({"metric": "val_f1"}, "metric 'val_f1' is not one template 'cnn-classification' reports"),
        ({"max_concurrent_trials": 8}, "for each of 8 concurrent trials"),
        ({"params": {**TRIAL_PARAMS, "learning_rate": 0.1}}, "'learning_rate' is both searched and fixed"),
        ({"template": "sweep"}, "'sweep' itself cannot be swept"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            manager.create("sweep", sweep_params(**change))


def test_a_sweep_of_your_own_code_registers_only_its_best_trial(settings: Settings, manager: TaskManager) -> None:
    code = CodeArchives(storage_from_settings(settings)).put(pack_directory(EXAMPLE)).digest
    params = {
        "template": "user-code",
        "metric": "val_accuracy",
        "mode": "max",
        "trials": 2,
        "max_concurrent_trials": 2,
        "search": "tpe",
        "seed": 1,
        "params": {
            "entry": "digits_mlp.train:train_loop",
            "code": code,
            "dataset": "mnist",
            "max_rows": 600,
            "config": {"epochs": 2},
        },
        "space": {
            "hidden": {"type": "choice", "values": [8, 32]},
            "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
        },
        "scheduler": {"type": "asha", "grace_period": 1},
    }
    task = manager.create("sweep", params, model_name="swept-mlp", start=True)
    done = wait_for_task(manager.queue, task.id, lambda t: t.finished, timeout_s=400)
    assert done.state == SUCCEEDED, (done.error, manager.logs(task.id)[-3000:])
    trials = manager.queue.trials(task.id)
    assert len(trials) == 2 and all(t.state in (FINISHED, "STOPPED") for t in trials), (
        [(t.trial_id, t.state, t.error, t.metrics) for t in trials],
        manager.logs(task.id)[-4000:],
    )
    assert all({"hidden", "lr"} == set(t.params) and t.metrics.get("epoch") for t in trials)
    registry = RegistryClient.connect(settings)
    versions = registry.list_versions("swept-mlp")
    assert [v.version for v in versions] == [done.result["version"]]  # only the best trial became a version
    best = versions[0]
    assert best.lineage["method"] == "sdk" and best.lineage["code_digest"] == code
    assert best.lineage["run_name"] == f"sweep-{task.id}-{done.result['best_trial']}"
