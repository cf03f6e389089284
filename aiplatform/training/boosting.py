"""XGBoost on Ray Train, the workers' side: the loop each worker runs and its reporter.

Kept apart from the template (``tabular``): Ray sends ``boosting_loop`` to its workers by
reference, and a worker imports this module alone, not the template's (the dataset builders, the
model kinds, evaluation and torch behind them: 2.5 s more to start each worker on a slow core).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import ray.train
import xgboost

from aiplatform.feature_bytes import decode_features

BOOSTER_FILE = "model.xgb.json"
STATE_FILE = "state.json"
"""Beside the booster in a checkpoint: the curve so far, the best round and whether the run ended."""


def shard_matrix(shard: Any, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """A worker's dataset shard as (features (N, F) float32, labels (N,))."""
    features, labels = [], []
    for batch in shard.iter_batches(batch_size=8192, batch_format="numpy"):
        features.append(decode_features(list(batch["features"]), num_features))
        labels.append(np.asarray(batch["label"], dtype=np.float32))
    if not features:
        return np.zeros((0, num_features), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return np.concatenate(features), np.concatenate(labels)


def worker_rows(config: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """This worker's rows of ``split``: its share of the table the config carries (a small one:
    every ``world``-th row from its rank), else its Ray Data shard."""
    tables = config.get("tables")
    if tables is None:
        return shard_matrix(ray.train.get_dataset_shard(split), config["num_features"])
    features, labels = tables[split]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    return features[rank::world], labels[rank::world]


def boosting_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: this worker's shards into DMatrix, XGBoost's collective boosts
    (resumed from the last checkpoint after a failure: its booster, curve and early-stopping
    state), reports and checkpoints every few rounds."""
    booster, state = None, {"history": [], "best": None, "finished": False}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            booster = xgboost.Booster(model_file=os.path.join(directory, BOOSTER_FILE))
            with open(os.path.join(directory, STATE_FILE)) as handle:
                state = json.load(handle)
    if state["finished"]:  # lost after its last report: that checkpoint is the run's result
        return
    train_x, train_y = worker_rows(config, "train")
    val_x, val_y = worker_rows(config, "val")
    dtrain = xgboost.DMatrix(train_x, label=train_y, missing=np.nan)
    dval = xgboost.DMatrix(val_x, label=val_y, missing=np.nan)
    done = booster.num_boosted_rounds() if booster is not None else 0
    reporter = RoundReporter(config, state, done, rows=len(train_y))
    xgboost.train(
        config["xgboost"],
        dtrain,
        num_boost_round=max(0, config["num_boost_round"] - done),
        evals=[(dtrain, "train"), (dval, "val")],
        xgb_model=booster,
        verbose_eval=False,
        callbacks=[reporter],
    )


class RoundReporter(xgboost.callback.TrainingCallback):
    """Reports every ``report_every`` rounds, but no sooner than ``report_spacing_s`` after the
    previous report (by time: fast rounds would otherwise queue each report behind the last one
    until the controller's next poll; the first one has nothing to queue behind), and at the end:
    the curves' point on every worker, the booster's JSON and the run's state (curve, best round)
    as rank 0's checkpoint. It also
    stops early, itself rather than with XGBoost's callback, so that its state (the best round
    and its loss) is in the checkpoint and a resumed run stops where an uninterrupted one would."""

    def __init__(self, config: dict[str, Any], state: dict[str, Any], done: int, rows: int) -> None:
        super().__init__()
        self.config, self.state, self.done, self.rows = config, state, done, rows
        self.history: list[dict[str, Any]] = state["history"]
        self.patience = config["early_stopping_rounds"]
        self.last: dict[str, float] = {}
        self.round = done
        self.started = time.perf_counter()
        self.rounds_since = 0
        self.reported_at: float | None = None

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        self.round = self.done + epoch + 1
        self.rounds_since += 1
        self.last = {
            "train_loss": float(evals_log["train"]["mlogloss"][-1]),
            "val_loss": float(evals_log["val"]["mlogloss"][-1]),
            "val_accuracy": 1.0 - float(evals_log["val"]["merror"][-1]),
        }
        best = self.state["best"]
        if best is None or self.last["val_loss"] < best["loss"]:
            self.state["best"] = {"round": self.round, "loss": self.last["val_loss"], "point": self.last}
        if self.patience and self.round - self.state["best"]["round"] >= self.patience:
            return True  # after_training reports the best round
        if (
            self.rounds_since >= self.config["report_every"]
            and self.round < self.config["num_boost_round"]
            and self._spaced()
        ):
            self._report(model, self.last)
        return False

    def _spaced(self) -> bool:
        """Whether the last report is ``report_spacing_s`` old (or there was none), decided alike on
        every worker (each must report as many times): due if due on any."""
        due = self.reported_at is None or time.perf_counter() - self.reported_at >= self.config["report_spacing_s"]
        if xgboost.collective.get_world_size() <= 1:
            return due
        flags = xgboost.collective.allreduce(np.array([int(due)], dtype=np.int32), xgboost.collective.Op.MAX)
        return bool(flags[0])

    def after_training(self, model: Any) -> Any:
        """The last report. With early stopping the model keeps the rounds up to the best one, and
        the figures are that round's (``epoch`` stays the rounds run)."""
        best = self.state["best"]
        keep = best["round"] if self.patience and best else self.round
        if keep < model.num_boosted_rounds():
            model = model[:keep]
        point = best["point"] if keep != self.round and best else (self.last or self._checkpointed_point())
        self.state["finished"] = True
        self._report(model, {**point, "best_round": keep, "stopped_early": self.round < self.config["num_boost_round"]})
        return model

    def _checkpointed_point(self) -> dict[str, float]:
        """Resumed with no round left to boost: the checkpoint's last figures."""
        last = self.history[-1] if self.history else {}
        return {k: last[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in last}

    def _report(self, model: Any, point: dict[str, Any]) -> None:
        seconds = max(1e-9, time.perf_counter() - self.started)
        world = ray.train.get_context().get_world_size()
        metrics = {
            "epoch": self.round,
            "epochs": int(self.config["num_boost_round"]),
            **point,
            "samples_per_second": self.rows * world * self.rounds_since / seconds,
            "train_samples": self.rows * world,
            "epoch_seconds": seconds / max(1, self.rounds_since),
            "resumed_from_epoch": self.done,
        }
        self.history.append(metrics)
        self.started, self.rounds_since = time.perf_counter(), 0
        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                model.save_model(os.path.join(directory, BOOSTER_FILE))
                with open(os.path.join(directory, STATE_FILE), "w") as handle:
                    json.dump(self.state, handle)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        self.reported_at = time.perf_counter()
