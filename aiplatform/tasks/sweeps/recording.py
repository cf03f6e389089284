"""What the platform keeps of a sweep's trials, written from Tune's side into the task queue:
each trial started, every epoch, finished, failed or stopped early by ASHA, and the sweep's own
progress (trials done, best so far)."""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from aiplatform.settings import Settings
from aiplatform.tasks.queue import FINISHED, PAUSED, STOPPED, TRIAL_FAILED, TaskClient
from aiplatform.tasks.sweeps.params import SweepParams, best_trial
from aiplatform.tasks.sweeps.stopping import STOPPING

logger = logging.getLogger(__name__)

SWEEP_KEY = "_sweep"
"""The key of a trial's config that names its sweep (the rest are the searched values)."""
TUNE_KEYS = {
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "date",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "done",
    "trial_id",
    "experiment_tag",
    "config",
    "should_checkpoint",
    "checkpoint_path",
}


def connect_queue() -> TaskClient:
    return TaskClient.connect(Settings())


class TrialRecorder(tune.Callback):
    """A Tune callback (in the sweep's driver) that keeps each trial in the task queue.
    Pickled into Tune's experiment state, so it holds only names and reconnects when restored.

    It also carries ASHA's rungs through a restore: Tune saves its callbacks' state but not its
    scheduler's, and the two come back from the same pickle, so this callback still holds the
    scheduler the restored run uses. The rungs are ASHA's private ``_brackets[i]._rungs``
    (``tests/unit/test_sweep_parts.py`` pins their shape)."""

    def __init__(self, sweep_id: str, segment: int, scheduler: RecordingASHA | None = None) -> None:
        self.sweep_id, self.segment, self.scheduler = sweep_id, segment, scheduler
        self._client: TaskClient | None = None

    def get_state(self) -> dict[str, Any] | None:
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
            self._client = connect_queue()
        return self._client

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        values = {k: v for k, v in trial.config.items() if k != SWEEP_KEY}
        self.queue.record_trial(self.sweep_id, trial.trial_id, params=values, segment=self.segment)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS and isinstance(v, (int, float, str, bool))}
        metrics.setdefault("epoch", int(result.get("training_iteration", 0)))
        metrics["epoch"] = int(metrics["epoch"])
        checkpoint = result.get("checkpoint_path")
        self.queue.report_trial(self.sweep_id, trial.trial_id, metrics, str(checkpoint) if checkpoint else None)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.queue.finish_trial(self.sweep_id, trial.trial_id, FINISHED)
        self._progress()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if STOPPING.is_set():  # killed because its sweep is stopping: it goes on when resumed
            self.queue.finish_trial(self.sweep_id, trial.trial_id, PAUSED)
            return
        self.queue.finish_trial(self.sweep_id, trial.trial_id, TRIAL_FAILED, error=error_line(trial))
        self._progress()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if not STOPPING.is_set():  # a stopped segment's trials are PAUSED, not ended
            settle_trials(self.sweep_id, trials, self.queue)

    def _progress(self) -> None:
        """The sweep's own curve: one point per trial done, with the best value so far."""
        trials = self.queue.trials(self.sweep_id)
        task = self.queue.get(self.sweep_id)
        sweep = SweepParams.model_validate(task.params)
        done = [t for t in trials if t.done]
        best = best_trial(trials, sweep)
        point: dict[str, Any] = {
            "epoch": len(done),
            "epochs": sweep.trials,
            "trials_failed": sum(t.state == TRIAL_FAILED for t in done),
            "trials_stopped_early": sum(t.state == STOPPED for t in done),
        }
        if best is not None:
            point[f"best_{sweep.metric}"] = float(best.metrics[sweep.metric])
        self.queue.report_progress(self.sweep_id, point)


def settle_trials(sweep_id: str, tune_trials: list[Any], queue: TaskClient) -> None:
    """Tune's word on how each trial ended is final: a trial whose end no callback recorded (a
    callback that failed, or one Tune skipped) is recorded from the status Tune gave it, so no
    trial of a finished segment stays RUNNING."""
    records = {t.trial_id: t for t in queue.trials(sweep_id)}
    for trial in tune_trials:
        record = records.get(trial.trial_id)
        if record is None or record.done or trial.status not in ("TERMINATED", "ERROR"):
            continue
        logger.warning(
            "sweep %s: trial %s ended %s but was recorded %s; recording its end now",
            sweep_id,
            trial.trial_id,
            trial.status,
            record.state,
        )
        if trial.status == "TERMINATED":
            queue.finish_trial(sweep_id, trial.trial_id, FINISHED)
        else:
            queue.finish_trial(sweep_id, trial.trial_id, TRIAL_FAILED, error=error_line(trial))


def error_line(trial: Any) -> str:
    """Why a trial failed, in one line: what its function recorded, else Tune's error's last line."""
    try:
        error = trial.get_error()
    except Exception:
        error = None
    text = str(error or "the trial failed (no error recorded)").strip().splitlines()
    line = next((x for x in reversed(text) if ("Error" in x or "Exception" in x) and ": " in x), text[-1])
    return line.strip()[:500]


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
            connect_queue().finish_trial(
                self.sweep_id,
                trial.trial_id,
                STOPPED,
                error=f"stopped early by ASHA at epoch {epoch} of {epochs}: {self.metric} "
                f"{result.get(self.metric)!r} was below its rung's cut",
            )
        return decision
