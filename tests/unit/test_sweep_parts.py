"""A sweep's parts that need no cluster: the search space's checks, the CLI's dimensions, the
best trial, and ASHA's rungs carried through a restore."""

from __future__ import annotations

import pickle

import pytest

from aip.sweeps_cli import parse_dimension
from aiplatform.errors import Conflict, InvalidArgument
from aiplatform.tasks.queue.trials import Trial
from aiplatform.tasks.sweeps.params import SweepParams, best_trial


def trial(trial_id: str, state: str, value: float | None) -> Trial:
    return Trial("s", trial_id, 0, {}, state, 2, {} if value is None else {"val_accuracy": value}, None, None, 0.0, 0.0)


def test_the_cli_reads_each_kind_of_dimension_and_names_a_bad_one() -> None:
    assert parse_dimension("lr=loguniform:1e-4:1e-2") == ("lr", {"type": "loguniform", "low": 1e-4, "high": 1e-2})
    assert parse_dimension("c=choice:[4]|[8,16]|x") == ("c", {"type": "choice", "values": [[4], [8, 16], "x"]})
    for bad, message in [
        ("lr", "must look like"),
        ("lr=beta:1:2", "unknown type 'beta'"),
        ("lr=int:a:b", "must be numbers"),
        ("lr=uniform:1", "needs LOW:HIGH"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            parse_dimension(bad)


def test_a_tpe_search_takes_single_values_only() -> None:
    with pytest.raises(ValueError, match="TPE chooses among single values"):
        SweepParams.model_validate(
            {
                "template": "cnn-classification",
                "search": "tpe",
                "space": {"conv_channels": {"type": "choice", "values": [[8], [16]]}},
            }
        )


def test_the_best_trial_is_the_best_finished_one_in_the_metrics_direction() -> None:
    trials = [
        trial("a", "FINISHED", 0.8),
        trial("b", "STOPPED", 0.95),
        trial("c", "FINISHED", 0.9),
        trial("d", "FAILED", None),
        trial("e", "FINISHED", None),
    ]
    sweep = SweepParams.model_validate(
        {"template": "cnn-classification", "space": {"epochs": {"type": "int", "low": 1, "high": 2}}}
    )
    assert best_trial(trials, sweep).trial_id == "c"  # type: ignore[union-attr]
    assert best_trial(trials, sweep.model_copy(update={"mode": "min"})).trial_id == "a"  # type: ignore[union-attr]
    assert best_trial(trials[1:2], sweep) is None


def test_asha_rungs_come_back_with_a_restored_sweep() -> None:
    from aiplatform.tasks.sweeps.recording import RecordingASHA, TrialRecorder

    options = {
        "time_attr": "epoch",
        "budget": 9,
        "grace_period": 1,
        "reduction_factor": 3,
        "metric": "val_accuracy",
        "mode": "max",
    }
    scheduler = RecordingASHA("s", **options)
    recorder = TrialRecorder("s", 0, scheduler)
    scheduler._brackets[0]._rungs[-1][1]["t1"] = 0.5  # t1 passed the first rung with 0.5
    restored_scheduler, restored_recorder = pickle.loads(pickle.dumps((scheduler, recorder)))
    assert restored_recorder.scheduler is restored_scheduler  # one pickle (Tune's tuner.pkl): one object
    fresh = RecordingASHA("s", **options)  # Tune does not save it: it comes back empty...
    TrialRecorder("s", 0, fresh).set_state(recorder.get_state())  # ...and the callback's state refills it
    assert fresh._brackets[0]._rungs[-1][1] == {"t1": 0.5}
    assert TrialRecorder("s", 0).get_state() is None  # without ASHA there is nothing to keep


def test_a_diverged_trial_is_stored_without_nan_and_never_ranks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aiplatform.tasks.queue import TaskStore

    store = TaskStore(tmp_path / "tasks.sqlite")
    sweep = store.create("sweep", {"trials": 2}, start=True)
    for trial_id, value in (("good", 0.7), ("diverged", float("nan"))):
        store.record_trial(sweep.id, trial_id, params={}, segment=0)
        store.report_trial(sweep.id, trial_id, {"epoch": 1, "val_accuracy": value, "val_loss": float("inf")})
        store.finish_trial(sweep.id, trial_id, "FINISHED")
    trials = store.trials(sweep.id)
    assert [t.metrics["val_accuracy"] for t in trials] == [0.7, None] and trials[1].metrics["val_loss"] is None
    params = SweepParams.model_validate(
        {"template": "cnn-classification", "space": {"epochs": {"type": "int", "low": 1, "high": 2}}}
    )
    assert best_trial(trials, params).trial_id == "good"  # type: ignore[union-attr]
    # The first reason a trial failed stays; a later, wrapped one does not replace it.
    store.record_trial(sweep.id, "broken", params={}, segment=0)
    store.finish_trial(sweep.id, "broken", "RUNNING", error="ValueError: lr must be positive")
    store.finish_trial(sweep.id, "broken", "FAILED", error="ray.exceptions.RayTaskError(...)")
    assert store.trial(sweep.id, "broken").error == "ValueError: lr must be positive"


def test_a_finished_segment_leaves_no_trial_running(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """When Tune ends a segment (its callbacks' ``on_experiment_end``), Tune's status settles any
    trial whose end no callback recorded; a stopped segment's trials stay as they are (paused)."""
    from types import SimpleNamespace

    from aiplatform.tasks.queue import TaskStore
    from aiplatform.tasks.sweeps.recording import TrialRecorder
    from aiplatform.tasks.sweeps.stopping import STOPPING

    store = TaskStore(tmp_path / "tasks.sqlite")
    sweep = store.create("sweep", {"trials": 4}, start=True)
    for trial_id in ("ended", "crashed", "stopped", "paused"):
        store.record_trial(sweep.id, trial_id, params={}, segment=0)
    store.finish_trial(sweep.id, "stopped", "STOPPED", error="stopped early by ASHA")

    def tune_trial(trial_id: str, status: str) -> SimpleNamespace:  # the fields of Tune's Trial it reads
        return SimpleNamespace(
            trial_id=trial_id, status=status, get_error=lambda: "Traceback ...\nValueError: the loss diverged"
        )

    tune_trials = [
        tune_trial("ended", "TERMINATED"),
        tune_trial("crashed", "ERROR"),
        tune_trial("stopped", "TERMINATED"),
        tune_trial("paused", "PAUSED"),
        tune_trial("never-started", "TERMINATED"),
    ]
    recorder = TrialRecorder(sweep.id, 0)
    recorder._client = store  # type: ignore[assignment] # the store answers what the queue's client would
    STOPPING.set()
    try:
        recorder.on_experiment_end(trials=tune_trials)  # a stop ended the segment: nothing settled
    finally:
        STOPPING.clear()
    assert {t.trial_id: t.state for t in store.trials(sweep.id)}["ended"] == "RUNNING"
    recorder.on_experiment_end(trials=tune_trials)
    states = {t.trial_id: (t.state, t.error) for t in store.trials(sweep.id)}
    assert states == {
        "ended": ("FINISHED", None),
        "crashed": ("FAILED", "ValueError: the loss diverged"),
        "stopped": ("STOPPED", "stopped early by ASHA"),
        "paused": ("RUNNING", None),
    }


def test_a_later_tpe_segment_starts_from_every_trial_done_so_far() -> None:
    from aiplatform.tasks.sweeps.search import searcher

    sweep = SweepParams.model_validate(
        {
            "template": "cnn-classification",
            "search": "tpe",
            "seed": 3,
            "max_concurrent_trials": 2,
            "space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        }
    )

    def trial(trial_id: str, state: str, value: object) -> Trial:
        return Trial(
            sweep_id="s",
            trial_id=trial_id,
            segment=0,
            params={"learning_rate": 0.001},
            state=state,
            metrics={"val_accuracy": value, "epoch": 1},
            epoch=1,
            checkpoint=None,
            error=None,
            created_at=0.0,
            updated_at=0.0,
        )

    earlier = [
        trial("done", "FINISHED", 0.8),
        trial("early", "STOPPED", 0.5),
        trial("running", "RUNNING", 0.9),
        trial("diverged", "FINISHED", None),
    ]
    search, concurrency = searcher(sweep, 1, earlier)
    assert concurrency == 2  # Optuna does not limit itself: Tune holds it to the sweep's concurrency
    assert search._points_to_evaluate == [{"learning_rate": 0.001}] * 2 and search._evaluated_rewards == [0.8, 0.5]
    assert searcher(sweep.model_copy(update={"search": "random"}), 1, earlier)[1] is None


def test_a_requeued_sweep_drops_its_previous_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aiplatform.tasks.queue import TaskStore

    store = TaskStore(tmp_path / "tasks.sqlite")
    task = store.create("sweep", {"trials": 2}, running=True, running_job_id="job-1")
    store.finish(task.id, "SUCCEEDED", result={"model": "m", "version": 1})
    again = store.requeue(task.id, {"trials": 3})
    assert again.state == "QUEUED" and again.result is None and again.params == {"trials": 3}
    store.claim(task.id, "job-2")  # running again: it cannot be queued a second time
    with pytest.raises(Conflict, match="only a task that has ended"):
        store.requeue(task.id)


def test_a_sweep_reserves_its_largest_trials_and_checks_its_epochs() -> None:
    from aiplatform.training.catalog import get_template

    template = get_template("sweep")
    runs, run = template.concurrent_runs(
        {
            "max_concurrent_trials": 2,
            "params": {"workers": 1},
            "space": {
                "workers": {"type": "int", "low": 1, "high": 3},
                "gpu": {"type": "choice", "values": ["off", "on"]},
            },
        }
    )
    assert (runs, run["workers"], run["gpu"]) == (2, 3, "on")
    space = {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}
    for config, message in [
        ({"epochs": "ten"}, "whole number of epochs"),
        ({"epochs": -2}, "at least 1"),
        ({}, "ASHA stops trials by epoch"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            template.parse_params(
                {
                    "template": "user-code",
                    "space": space,
                    "params": {"entry": "pkg.train:fn", "code": "a" * 64, "config": config},
                }
            )
