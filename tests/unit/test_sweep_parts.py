"""A sweep's parts that need no cluster: the search space's checks, the CLI's dimensions, the
best trial, and ASHA's rungs carried through a restore."""

from __future__ import annotations

import pickle

import pytest

from aip.sweeps_cli import parse_dimension
from aiplatform.errors import InvalidArgument
from aiplatform.tasks.queue.trials import Trial
from aiplatform.tasks.sweeps.params import SweepParams, best_trial


def trial(trial_id: str, state: str, value: float | None) -> Trial:
    return Trial("s", trial_id, 0, {}, state, 2, {} if value is None else {"val_accuracy": value}, None, None, 0.0, 0.0)


def test_the_cli_reads_each_kind_of_dimension_and_names_a_bad_one() -> None:
    assert parse_dimension("lr=loguniform:1e-4:1e-2") == ("lr", {"type": "loguniform", "low": 1e-4, "high": 1e-2})
    assert parse_dimension("c=choice:[4]|[8,16]|x") == ("c", {"type": "choice", "values": [[4], [8, 16], "x"]})
    for bad, message in [("lr", "must look like"), ("lr=beta:1:2", "unknown type 'beta'"),
                         ("lr=int:a:b", "must be numbers"), ("lr=uniform:1", "needs LOW:HIGH")]:
        with pytest.raises(InvalidArgument, match=message):
            parse_dimension(bad)


def test_a_tpe_search_takes_single_values_only() -> None:
    with pytest.raises(ValueError, match="TPE chooses among single values"):
        SweepParams.model_validate({"template": "cnn-classification", "search": "tpe",
                                    "space": {"conv_channels": {"type": "choice", "values": [[8], [16]]}}})


def test_the_best_trial_is_the_best_finished_one_in_the_metrics_direction() -> None:
    trials = [trial("a", "FINISHED", 0.8), trial("b", "STOPPED", 0.95), trial("c", "FINISHED", 0.9),
              trial("d", "FAILED", None), trial("e", "FINISHED", None)]
    sweep = SweepParams.model_validate({"template": "cnn-classification",
                                        "space": {"epochs": {"type": "int", "low": 1, "high": 2}}})
    assert best_trial(trials, sweep).trial_id == "c"  # type: ignore[union-attr]
    assert best_trial(trials, sweep.model_copy(update={"mode": "min"})).trial_id == "a"  # type: ignore[union-attr]
    assert best_trial(trials[1:2], sweep) is None


def test_asha_rungs_come_back_with_a_restored_sweep() -> None:
    from aiplatform.tasks.sweeps.tuning import RecordingASHA, TrialRecorder

    options = {"time_attr": "epoch", "budget": 9, "grace_period": 1, "reduction_factor": 3,
               "metric": "val_accuracy", "mode": "max"}
    scheduler = RecordingASHA("s", **options)
    recorder = TrialRecorder("s", 0, scheduler)
    scheduler._brackets[0]._rungs[-1][1]["t1"] = 0.5  # t1 passed the first rung with 0.5
    restored_scheduler, restored_recorder = pickle.loads(pickle.dumps((scheduler, recorder)))
    assert restored_recorder.scheduler is restored_scheduler  # one pickle (Tune's tuner.pkl): one object
    fresh = RecordingASHA("s", **options)  # Tune does not save it: it comes back empty...
    TrialRecorder("s", 0, fresh).set_state(recorder.get_state())  # ...and the callback's state refills it
    assert fresh._brackets[0]._rungs[-1][1] == {"t1": 0.5}
    assert TrialRecorder("s", 0).get_state() is None  # without ASHA there is nothing to keep
