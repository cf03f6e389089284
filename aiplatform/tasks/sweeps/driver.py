"""A sweep's job on Ray Tune, durable in the platform's storage.

A sweep's trials come in *segments*, one Tune experiment each (``segments.py``): a stopped or
interrupted sweep restores its unfinished segment (finished trials are not rerun, unfinished ones
continue from their Train checkpoint, whose run name is the trial's), and extending a sweep adds a
segment with a new searcher (``search.py``: TPE warm-started from every trial so far). Each trial
is ``trial.sweep_trial``; what the platform keeps of it is written by ``recording.TrialRecorder``;
at the end the best trial's package is registered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ray import tune

from aiplatform.datasets import DatasetManager
from aiplatform.errors import AIPError, Conflict
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.tasks.queue import PAUSED, TRIAL_DONE_STATES, TRIAL_FAILED, Task, TaskClient, Trial
from aiplatform.tasks.sweeps.params import SweepParams, best_trial
from aiplatform.tasks.sweeps.recording import SWEEP_KEY, TrialRecorder
from aiplatform.tasks.sweeps.search import domain, scheduler, searcher
from aiplatform.tasks.sweeps.segments import candidate_key, load_segments, restorable, save_segments
from aiplatform.tasks.sweeps.stopping import fitting, stop_on_sigterm
from aiplatform.tasks.sweeps.trial import TRIAL_DRIVER_CPUS, shared_splits, sweep_trial
from aiplatform.training.engine import SharedSplits
from aiplatform.training.publish import load_candidate, register_package
from aiplatform.training.user_code import UserSplits

logger = logging.getLogger(__name__)


class SweepStopped(AIPError):
    """The sweep's job was asked to stop: Tune saved its state, running trials are PAUSED."""

    code = "cancelled"


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep hands back to its task."""

    best: Trial
    version: ModelVersion
    trials: dict[str, int]
    segments: int


def run_sweep(
    task: Task,
    sweep: SweepParams,
    *,
    settings: Settings,
    storage: Storage,
    datasets: DatasetManager,
    registry: RegistryAPI,
    queue: TaskClient,
    model_name: str,
) -> SweepOutcome:
    """Run (or resume, or extend) the sweep to its end, then register its best trial's model."""
    stopping = stop_on_sigterm()
    shared = shared_splits(sweep, datasets)
    segments = load_segments(storage, task.id)
    while True:
        planned = sum(s["trials"] for s in segments)
        if segments and not segments[-1]["complete"]:
            segment = segments[-1]
        elif planned < sweep.trials:
            segment = {"index": len(segments), "trials": sweep.trials - planned, "complete": False}
            segments.append(segment)
            save_segments(storage, task.id, segments)
        else:
            break
        if not stopping.is_set():
            _run_segment(task, sweep, segment, storage=storage, queue=queue, shared=shared)
        if stopping.is_set():
            paused = queue.pause_trials(task.id)
            raise SweepStopped(f"Sweep {task.id} stopped; {paused} running trial(s) paused: resume it to go on")
        segment["complete"] = True
        save_segments(storage, task.id, segments)
    for trial in queue.trials(task.id):  # paused when a stop came, then not resumed by Tune (it had failed)
        if trial.state == PAUSED:
            queue.finish_trial(
                task.id,
                trial.trial_id,
                TRIAL_FAILED,
                error="it failed while its sweep was stopping (Tune does not run it again)",
            )
    trials = queue.trials(task.id)
    best = best_trial([t for t in trials if storage.exists(f"{candidate_key(task.id, t.trial_id)}.json")], sweep)
    if best is None:
        raise Conflict(f"No trial of sweep {task.id} finished with metric {sweep.metric!r}; see the trials' errors")
    version = register_package(
        load_candidate(storage, candidate_key(task.id, best.trial_id)),
        name=model_name,
        storage=storage,
        registry=registry,
    )
    counts = {state: sum(t.state == state for t in trials) for state in TRIAL_DONE_STATES}
    return SweepOutcome(best=best, version=version, trials=counts, segments=len(segments))


def _run_segment(
    task: Task,
    sweep: SweepParams,
    segment: dict[str, Any],
    *,
    storage: Storage,
    queue: TaskClient,
    shared: SharedSplits | UserSplits | None,
) -> None:
    root, filesystem = storage.arrow_path(f"sweeps/{task.id}"), storage.arrow_filesystem()
    name = f"seg{segment['index']}"
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, shared=shared), {"cpu": TRIAL_DRIVER_CPUS})
    if restorable(filesystem, f"{root}/{name}"):
        logger.info("sweep %s: resuming %s", task.id, name)
        tuner = tune.Tuner.restore(
            f"{root}/{name}",
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            storage_filesystem=filesystem,
        )
    else:
        asha = scheduler(task.id, sweep)
        search, concurrency = searcher(sweep, segment["index"], queue.trials(task.id))
        recorder = TrialRecorder(task.id, segment["index"], asha)
        tuner = tune.Tuner(
            trainable,
            param_space={**{k: domain(d) for k, d in sweep.space.items()}, SWEEP_KEY: task.id},
            tune_config=tune.TuneConfig(
                metric=sweep.metric,
                mode=sweep.mode,
                search_alg=search,
                scheduler=asha,
                num_samples=int(segment["trials"]),
                max_concurrent_trials=concurrency,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                storage_filesystem=filesystem,
                verbose=1,
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures, fail_fast=False),
                callbacks=[recorder],
            ),
        )
    with fitting():  # a finished segment's trials are settled by the recorder's on_experiment_end
        tuner.fit()


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)
