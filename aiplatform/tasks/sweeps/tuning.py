"""A sweep's job: its trials on Ray Tune, durable in the platform's storage.

Each trial is a function trainable that trains through the same path as a task (``run_training``,
or ``run_user_code`` for users' functions) with Ray Train's per-epoch reports passed to Tune
(``TuneReportCallback``), so ASHA sees every epoch. What the platform keeps of a trial (its
values, state, curves, checkpoint) is written by :class:`TrialRecorder` into the task queue, and a
finished trial keeps its built package unregistered in storage: the sweep registers the best one.

Durability: Tune's experiment lives under ``sweeps/<sweep id>/seg<k>`` in the platform's storage
(local or S3). A sweep's trials come in *segments*, one Tune experiment each (``segments.json``):
a stopped or interrupted sweep restores its unfinished segment (finished trials are not rerun,
unfinished ones continue from their Train checkpoint, whose run name is the trial's), and
extending a sweep adds a segment with a new searcher (TPE warm-started from every trial so far).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Optional

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from aiplatform.datasets import DatasetManager
from aiplatform.errors import AIPError, Conflict
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.runtime import quiet_ray_data
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings
from aiplatform.tasks.queue import (
    FINISHED,
    PAUSED,
    STOPPED,
    TRIAL_DONE_STATES,
    TRIAL_FAILED,
    TRIAL_RUNNING,
    Task,
    TaskClient,
    Trial,
)
from aiplatform.tasks.sweeps.params import Dimension, SweepParams, best_trial, finite
from aiplatform.tasks.sweeps.template import USER_CODE, SweepTemplate, budget, trial_params
from aiplatform.training.engine import SharedSplits, run_training
from aiplatform.training.publish import (
    load_candidate,
    package_model,
    register_package,
    save_candidate,
)
from aiplatform.training.template import TrainingTemplate
from aiplatform.training.templates import get_template
from aiplatform.training.user_code import UserSplits

logger = logging.getLogger(__name__)
TRIAL_DRIVER_CPUS = 0.01
"""What Tune reserves for a trial's own process: it only waits on its Ray Train run, whose
workers reserve the CPUs (the scheduler counts those, ``concurrent_runs``)."""
SWEEP_KEY = "_sweep"
TUNE_KEYS = {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date", "pid", "hostname",
             "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "done",
             "trial_id", "experiment_tag", "config", "should_checkpoint", "checkpoint_path"}


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


def candidate_key(sweep_id: str, trial_id: str) -> str:
    """Where a finished trial keeps its package until the sweep picks the best."""
    return f"sweeps/{sweep_id}/trials/{trial_id}.zip"


# -- the job's driver ---------------------------------------------------------------------------
def run_sweep(task: Task, sweep: SweepParams, *, settings: Settings, storage: Storage, datasets: DatasetManager,
              registry: RegistryAPI, queue: TaskClient, model_name: str) -> SweepOutcome:
    """Run (or resume, or extend) the sweep to its end, then register its best trial's model."""
    stopping = _stop_on_sigterm()
    shared = _shared_splits(sweep, datasets)
    segments = _load_segments(storage, task.id)
    while True:
        planned = sum(s["trials"] for s in segments)
        if segments and not segments[-1]["complete"]:
            segment = segments[-1]
        elif planned < sweep.trials:
            segment = {"index": len(segments), "trials": sweep.trials - planned, "complete": False}
            segments.append(segment)
            _save_segments(storage, task.id, segments)
        else:
            break
        if not stopping.is_set():
            _run_segment(task, sweep, segment, storage=storage, queue=queue, shared=shared)
        if stopping.is_set():
            paused = queue.pause_trials(task.id)
            raise SweepStopped(f"Sweep {task.id} stopped; {paused} running trial(s) paused: resume it to go on")
        segment["complete"] = True
        _save_segments(storage, task.id, segments)
    for trial in queue.trials(task.id):  # paused when a stop came, then not resumed by Tune (it had failed)
        if trial.state == PAUSED:
            queue.finish_trial(task.id, trial.trial_id, TRIAL_FAILED,
                               error="it failed while its sweep was stopping (Tune does not run it again)")
    trials = queue.trials(task.id)
    best = best_trial([t for t in trials if storage.exists(f"{candidate_key(task.id, t.trial_id)}.json")], sweep)
    if best is None:
        raise Conflict(f"No trial of sweep {task.id} finished with metric {sweep.metric!r}; see the trials' errors")
    version = register_package(load_candidate(storage, candidate_key(task.id, best.trial_id)), name=model_name,
                               storage=storage, registry=registry)
    counts = {state: sum(t.state == state for t in trials) for state in TRIAL_DONE_STATES}
    return SweepOutcome(best=best, version=version, trials=counts, segments=len(segments))


def _shared_splits(sweep: SweepParams, datasets: DatasetManager) -> Optional[SharedSplits | UserSplits]:
    """The trials' dataset read once, here, into the object store: every trial whose dataset is
    the same (the search does not change it) trains and evaluates on these blocks."""
    template = get_template(sweep.template)
    if sweep.template == USER_CODE:  # the searched values go into the function's config only
        return UserSplits.read(SweepTemplate().sample_trial(sweep), datasets)  # type: ignore[arg-type]
    if not isinstance(template, TrainingTemplate) or type(template).fit is not TrainingTemplate.fit:
        return None  # a template with its own trainer reads its own data
    return SharedSplits.read(template.dataset_spec(SweepTemplate().sample_trial(sweep)), datasets)


def _run_segment(task: Task, sweep: SweepParams, segment: dict[str, Any], *, storage: Storage, queue: TaskClient,
                 shared: Optional[SharedSplits | UserSplits]) -> None:
    root, filesystem = storage.arrow_path(f"sweeps/{task.id}"), storage.arrow_filesystem()
    name = f"seg{segment['index']}"
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, shared=shared), {"cpu": TRIAL_DRIVER_CPUS})
    if _restorable(filesystem, f"{root}/{name}"):
        logger.info("sweep %s: resuming %s", task.id, name)
        tuner = tune.Tuner.restore(f"{root}/{name}", trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False, storage_filesystem=filesystem)
    else:
        scheduler = _scheduler(task.id, sweep)
        search, concurrency = _search(sweep, segment["index"], queue.trials(task.id))
        recorder = TrialRecorder(task.id, segment["index"], scheduler)
        tuner = tune.Tuner(
            trainable,
            param_space={**{k: _domain(d) for k, d in sweep.space.items()}, SWEEP_KEY: task.id},
            tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, search_alg=search,
                                        scheduler=scheduler, num_samples=int(segment["trials"]),
                                        max_concurrent_trials=concurrency, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=root, storage_filesystem=filesystem, verbose=1,
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures, fail_fast=False),
                callbacks=[recorder]),
        )
    _FITTING.set()
    try:
        grid = tuner.fit()
    finally:
        _FITTING.clear()
    if not _STOPPING.is_set():  # a stopped segment's trials are PAUSED, not ended
        _settle_trials(task.id, getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or [], queue)


def _settle_trials(sweep_id: str, tune_trials: list[Any], queue: TaskClient) -> None:
    """Tune's word on how each trial ended is final: a trial whose end no callback recorded (a
    callback that failed, or one Tune skipped) is recorded from the status Tune gave it, so no
    trial of a finished segment stays RUNNING."""
    records = {t.trial_id: t for t in queue.trials(sweep_id)}
    for trial in tune_trials:
        record = records.get(trial.trial_id)
        if record is None or record.done or trial.status not in ("TERMINATED", "ERROR"):
            continue
        logger.warning("sweep %s: trial %s ended %s but was recorded %s; recording its end now",
                       sweep_id, trial.trial_id, trial.status, record.state)
        if trial.status == "TERMINATED":
            queue.finish_trial(sweep_id, trial.trial_id, FINISHED)
        else:
            queue.finish_trial(sweep_id, trial.trial_id, TRIAL_FAILED, error=_error_line(trial))


def _restorable(filesystem: Any, path: str) -> bool:
    """Whether the segment can be restored: Tune writes ``tuner.pkl`` when the Tuner is made but
    its experiment state only once it runs, and restoring without that state fails every time.
    A segment that never got that far is removed and made again."""
    import pyarrow.fs

    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        return False
    names = [info.base_name for info in filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))]
    if any(name.startswith("experiment_state") for name in names):
        return True
    logger.warning("segment %s has no experiment state (it stopped while starting): starting it again", path)
    filesystem.delete_dir(path)
    return False


def _domain(dimension: Dimension) -> Any:
    if dimension.type == "uniform":
        return tune.uniform(dimension.low, dimension.high)
    if dimension.type == "loguniform":
        return tune.loguniform(dimension.low, dimension.high)
    if dimension.type == "int":
        return tune.randint(int(dimension.low or 0), int(dimension.high or 0) + 1)
    return tune.choice(list(dimension.values or []))


def _scheduler(sweep_id: str, sweep: SweepParams) -> Any:
    if sweep.scheduler.type == "none":
        return None
    return RecordingASHA(sweep_id, time_attr="epoch", budget=int(budget(sweep) or 1),
                         grace_period=sweep.scheduler.grace_period, reduction_factor=sweep.scheduler.reduction_factor)


def _search(sweep: SweepParams, index: int, earlier: list[Trial]) -> tuple[Any, Optional[int]]:
    """The segment's searcher and the concurrency Tune should enforce itself (None when the
    searcher does). Each segment draws with its own seed; TPE starts from every trial so far."""
    if sweep.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=sweep.max_concurrent_trials,
                                     random_state=sweep.seed + index), None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    known = [t for t in earlier if t.done and finite(t.metrics.get(sweep.metric)) and set(t.params) == set(sweep.space)]
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.seed + index),
                        points_to_evaluate=[dict(t.params) for t in known] or None,
                        evaluated_rewards=[float(t.metrics[sweep.metric]) for t in known] or None,
                        ), sweep.max_concurrent_trials


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


_STOPPING = threading.Event()
_FITTING = threading.Event()


def _stop_on_sigterm() -> threading.Event:
    """``ray job stop`` sends SIGTERM; Tune saves its state and ends ``fit`` only on SIGINT or
    SIGUSR1, so SIGTERM is passed on as SIGUSR1 while Tune runs (and remembered in any case: a
    stop between segments ends the sweep before the next one)."""
    stopping = _STOPPING

    def forward(signum: int, frame: Any) -> None:
        stopping.set()
        if _FITTING.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)
    return stopping


def _segments_key(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}/segments.json"


def _load_segments(storage: Storage, sweep_id: str) -> list[dict[str, Any]]:
    key = _segments_key(sweep_id)
    return list(json.loads(storage.get_bytes(key))) if storage.exists(key) else []


def _save_segments(storage: Storage, sweep_id: str, segments: list[dict[str, Any]]) -> None:
    storage.put_bytes(_segments_key(sweep_id), json.dumps(segments).encode())


# -- Tune's side ----------------------------------------------------------------------------
def _queue() -> TaskClient:
    return TaskClient.connect(Settings())


class TrialRecorder(tune.Callback):
    """A Tune callback (in the sweep's driver) that keeps each trial in the task queue: started,
    every epoch, finished or failed; and the sweep's own progress (trials done, best so far).
    Pickled into Tune's experiment state, so it holds only names and reconnects when restored.

    It also carries ASHA's rungs through a restore: Tune saves its callbacks' state but not its
    scheduler's, and the two come back from the same pickle, so this callback still holds the
    scheduler the restored run uses."""

    def __init__(self, sweep_id: str, segment: int, scheduler: Optional["RecordingASHA"] = None) -> None:
        self.sweep_id, self.segment, self.scheduler = sweep_id, segment, scheduler
        self._client: Optional[TaskClient] = None

    def get_state(self) -> Optional[dict[str, Any]]:
        if self.scheduler is None:
            return None
        return {"rungs": [[dict(recorded) for _, recorded in bracket._rungs] for bracket in self.scheduler._brackets]}

    def set_state(self, state: dict[str, Any]) -> None:
        if self.scheduler is None or not state.get("rungs"):
            return
        for bracket, saved in zip(self.scheduler._brackets, state["rungs"]):
            for (_, recorded), values in zip(bracket._rungs, saved):
                recorded.update(values)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def queue(self) -> TaskClient:
        if self._client is None:
            self._client = _queue()
        return self._client

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        values = {k: v for k, v in trial.config.items() if k != SWEEP_KEY}
        self.queue.record_trial(self.sweep_id, trial.trial_id, params=values, segment=self.segment)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS and isinstance(v, (int, float, str, bool))}
        metrics.setdefault("epoch", int(result.get("training_iteration", 0)))
        metrics["epoch"] = int(metrics["epoch"])
        checkpoint = result.get("checkpoint_path")
        self.queue.report_trial(self.sweep_id, trial.trial_id, metrics, str(checkpoint) if checkpoint else None)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.queue.finish_trial(self.sweep_id, trial.trial_id, FINISHED)
        self._progress()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _STOPPING.is_set():  # killed because its sweep is stopping: it goes on when resumed
            self.queue.finish_trial(self.sweep_id, trial.trial_id, PAUSED)
            return
        self.queue.finish_trial(self.sweep_id, trial.trial_id, TRIAL_FAILED, error=_error_line(trial))
        self._progress()

    def _progress(self) -> None:
        """The sweep's own curve: one point per trial done, with the best value so far."""
        trials = self.queue.trials(self.sweep_id)
        task = self.queue.get(self.sweep_id)
        sweep = SweepParams.model_validate(task.params)
        done = [t for t in trials if t.done]
        best = best_trial(trials, sweep)
        point: dict[str, Any] = {"epoch": len(done), "epochs": sweep.trials, "trials_failed":
                                 sum(t.state == TRIAL_FAILED for t in done), "trials_stopped_early":
                                 sum(t.state == STOPPED for t in done)}
        if best is not None:
            point[f"best_{sweep.metric}"] = float(best.metrics[sweep.metric])
        self.queue.report_progress(self.sweep_id, point)


def _error_line(trial: Any) -> str:
    """Why a trial failed, in one line: what its function recorded, else Tune's error's last line."""
    try:
        error = trial.get_error()
    except Exception:  # noqa: BLE001 - no error file: say so
        error = None
    text = str(error or "the trial failed (no error recorded)").strip().splitlines()
    line = next((x for x in reversed(text) if ("Error" in x or "Exception" in x) and ": " in x), text[-1])
    return line.strip()[:500]


# -- a trial, in Tune's trial actor -------------------------------------------------------------
def sweep_trial(config: dict[str, Any], shared: Optional[SharedSplits | UserSplits] = None) -> None:
    """Train one trial the way a task of its template trains, and keep its package."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from aiplatform.training.user_code import run_user_code, user_error_line

    quiet_ray_data()
    sweep_id = str(config[SWEEP_KEY])
    values = {k: v for k, v in config.items() if k != SWEEP_KEY}
    settings = Settings()
    storage = storage_from_settings(settings)
    queue = TaskClient.connect(settings)
    task = queue.get(sweep_id)
    sweep = SweepParams.model_validate(task.params)
    trial_id = tune.get_context().get_trial_id()
    template = get_template(sweep.template)
    params = template.parse_params(trial_params(sweep, values))
    datasets = DatasetManager.from_settings(storage, settings, untrusted=task.source == "api")
    run_name = f"sweep-{sweep_id}-{trial_id}"  # the same after a resume: Train continues its checkpoints
    model_name = task.model_name or template.default_model_name(params)
    key = candidate_key(sweep_id, trial_id)
    lineage = {"sweep_id": sweep_id, "trial_id": trial_id, "sweep_params": values, "task_id": sweep_id,
               "ray_job_id": task.ray_job_id}
    try:
        if sweep.template == USER_CODE:
            run_user_code(params, settings=settings, storage=storage, datasets=datasets, run_name=run_name,
                          task_id=sweep_id, model_name=model_name, callbacks=[TuneReportCallback()],
                          candidate_key=key, shared=shared if isinstance(shared, UserSplits) else None)
            return
        # A worker's error fails the trial at once (Tune's max_failures retries it, from its checkpoint).
        outcome = run_training(template, params, settings=settings, storage=storage, datasets=datasets,
                               run_name=run_name, callbacks=[TuneReportCallback()],
                               shared=shared if isinstance(shared, SharedSplits) else None, max_failures=0)
        save_candidate(storage, key, package_model(outcome, name=model_name, lineage=lineage))
    except Exception as exc:  # the reason in one line, kept before Tune wraps it
        queue.finish_trial(sweep_id, trial_id, TRIAL_RUNNING,
                           error=exc.message if isinstance(exc, AIPError) else user_error_line(exc))
        raise


class RecordingASHA(ASHAScheduler):
    """ASHA that lets a trial's last epoch through (the trial then evaluates and packages its model
    by itself), and records each trial it stops early as STOPPED, with the epoch and value."""

    def __init__(self, sweep_id: str, *, budget: int, **options: Any) -> None:
        super().__init__(max_t=budget + 1, **options)
        self.sweep_id, self.budget = sweep_id, budget

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch, epochs = result.get("epoch"), int(result.get("epochs", self.budget))
        if isinstance(epoch, int) and epoch >= epochs:
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            _queue().finish_trial(self.sweep_id, trial.trial_id, STOPPED,
                                  error=f"stopped early by ASHA at epoch {epoch} of {epochs}: {self._metric} "
                                        f"{result.get(self._metric)!r} was below its rung's cut")
        return decision
