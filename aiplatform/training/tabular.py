"""The ``tabular-classification`` template: gradient-boosted trees on a table, on Ray Train's
XGBoost trainer.

The table is built into a dataset version (``datasets.tabular_builder``: a feature schema with
types, ranges and categories, encoded rows), each worker turns its shard into a DMatrix, and
XGBoost's collective trains one booster over all the shards. Every few rounds the workers report
the round's losses and validation accuracy (the task's curves) and rank 0 checkpoints the booster
in XGBoost's JSON format, so a restarted worker group continues from its last round. The model is
packaged as that JSON (``packaging.xgboost_model``), never a pickle, and served by the model
servers like any network.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import ray.train
import xgboost
from pydantic import BaseModel, ConfigDict, Field

from aiplatform.datasets import DatasetManager, DatasetVersion, TabularDatasetSpec
from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.evaluation import evaluate_model, table_batches
from aiplatform.kinds.rows import decode_features
from aiplatform.packaging.xgboost_model import (
    XGBOOST_ARCHITECTURE,
    BoosterModule,
    booster_from_json,
)
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.training.outcome import TrainingOutcome
from aiplatform.training.template import TrainingTemplate, ray_train_configs, worker_threads

BOOSTER_FILE = "model.xgb.json"
STATE_FILE = "state.json"
"""Beside the booster in a checkpoint: the curve so far, the best round and whether the run ended."""
MAX_REPORTS = 20
"""Reports (curve points and checkpoints) per run: at most one every ``rounds / MAX_REPORTS`` rounds
(each costs Ray Train a synchronisation and a checkpoint upload, far more than a round on a small
table)."""
REPORT_SPACING_POLLS = 2
"""After its first, a report waits for this many of the Train controller's polls since the last
(``AIP_TRAIN_POLL_INTERVAL_S`` each): a worker's result queue holds one report and the controller
takes one per poll, so a report sent sooner blocks boosting until the poll that frees the queue."""


class TabularParams(BaseModel):
    """Parameters of a ``tabular-classification`` run."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("penguins", description="penguins, breast-cancer, wine, csv:<uri> or parquet:<uri>")
    label_column: str | None = Field(
        None, description="the column holding the class (default: the built-in table's own, 'label' for files)"
    )
    feature_columns: list[str] | None = Field(None, description="the feature columns (default: every other one)")
    num_boost_round: int = Field(100, ge=1, le=5000, description="boosting rounds (trees per class)")
    max_depth: int = Field(6, ge=1, le=16)
    learning_rate: float = Field(0.3, gt=0, le=1, description="XGBoost's eta")
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0, le=1000)
    reg_lambda: float = Field(1.0, ge=0, le=1000, description="L2 regularisation")
    early_stopping_rounds: int | None = Field(
        20, ge=1, le=1000, description="stop when validation loss has not improved for N rounds"
    )
    workers: int = Field(1, ge=1, le=64, description="Ray Train workers (XGBoost's collective over their shards)")
    val_fraction: float = Field(0.15, ge=0.01, lt=0.5)
    test_fraction: float = Field(0.15, ge=0.01, lt=0.5)
    max_categories: int = Field(64, ge=2, le=10_000, description="a text column with more values is not a category")
    max_rows: int | None = Field(None, ge=10, description="use a seeded random subset of N source rows")
    seed: int = Field(0, ge=0)


class TabularClassificationTemplate(TrainingTemplate):
    name = "tabular-classification"
    title = "Table classification (XGBoost)"
    description = (
        "Classes of table rows with gradient-boosted trees on Ray Train's XGBoost trainer: the Palmer "
        "penguins by default, scikit-learn's breast-cancer and wine tables, or your CSV or parquet; "
        "serves JSON rows, CSV uploads and FP32 tensors."
    )
    task = "tabular-classification"
    params_model = TabularParams
    budget_parameter = "num_boost_round"

    def dataset_spec(self, params: TabularParams) -> TabularDatasetSpec:
        try:
            return TabularDatasetSpec(
                source=params.dataset,
                label_column=params.label_column,
                feature_columns=tuple(params.feature_columns) if params.feature_columns else None,
                val_fraction=params.val_fraction,
                test_fraction=params.test_fraction,
                seed=params.seed,
                max_rows=params.max_rows,
                max_categories=params.max_categories,
            )
        except ValueError as exc:  # pydantic's message, one line per problem
            raise InvalidArgument(f"Invalid table dataset: {exc}") from None

    def preprocessing(self, params: TabularParams, dataset: DatasetVersion, datasets: DatasetManager) -> dict[str, Any]:
        """Nothing is fitted beyond the dataset's schema: the trees take the encoded rows as they are."""
        return {"encoding": "numbers as given, categories as their index, missing as NaN"}

    def input_spec(self, dataset: DatasetVersion, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "tabular",
            "features": dataset.manifest["table"]["features"],
            "accepts": ["json features", "json rows", "text/csv"],
        }

    def architecture(
        self, params: TabularParams, dataset: DatasetVersion, preprocessing: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "type": XGBOOST_ARCHITECTURE,
            "num_features": len(dataset.manifest["table"]["features"]),
            "num_classes": len(dataset.labels),
            "objective": "multi:softprob",
        }

    def train_loop(self) -> Callable[[dict[str, Any]], Any]:
        return boosting_loop

    def default_model_name(self, params: TabularParams) -> str:
        return f"{self.dataset_spec(params).dataset_name}-xgboost"[:63]

    def booster_params(self, params: TabularParams, num_classes: int, threads: int) -> dict[str, Any]:
        """XGBoost's parameters for a run (each worker boosts with ``threads`` threads)."""
        return {
            "objective": "multi:softprob",
            "num_class": num_classes,
            "eval_metric": ["mlogloss", "merror"],
            "tree_method": "hist",
            "max_depth": params.max_depth,
            "eta": params.learning_rate,
            "subsample": params.subsample,
            "colsample_bytree": params.colsample_bytree,
            "min_child_weight": params.min_child_weight,
            "lambda": params.reg_lambda,
            "seed": params.seed,
            "nthread": threads,
        }

    def fit(
        self,
        params: TabularParams,
        *,
        settings: Settings,
        storage: Storage,
        datasets: DatasetManager,
        run_name: str,
        callbacks: list[Any] | None,
    ) -> TrainingOutcome:
        """Build the table's version, boost on Ray Train's XGBoost trainer, evaluate on the test split."""
        from ray.train.xgboost import XGBoostTrainer

        timings: dict[str, float] = {}
        started = time.perf_counter()
        dataset = datasets.build(self.dataset_spec(params))
        timings["dataset_seconds"] = time.perf_counter() - started
        if dataset.rows("val") == 0 or dataset.rows("test") == 0:
            raise InvalidArgument(
                f"Dataset {dataset.ref} has no validation or test rows; raise val_fraction/test_fraction"
            )
        preprocessing = self.preprocessing(params, dataset, datasets)
        architecture = self.architecture(params, dataset, preprocessing)
        # Materialized before the workers start: read lazily, the splits' read tasks would wait for
        # CPUs the worker group (and, on a small node, Serve's replicas) already hold.
        splits = {split: datasets.materialized_split(dataset, split) for split in ("train", "val")}
        config = {
            "num_features": architecture["num_features"],
            "num_boost_round": params.num_boost_round,
            "early_stopping_rounds": params.early_stopping_rounds,
            "report_every": max(1, params.num_boost_round // MAX_REPORTS),
            "report_spacing_s": REPORT_SPACING_POLLS * settings.train_poll_interval_s,
            "xgboost": self.booster_params(params, architecture["num_classes"], threads=worker_threads(params.workers)),
        }
        scaling, run = ray_train_configs(
            settings, storage, run_name=run_name, workers=params.workers, callbacks=callbacks
        )
        trainer = XGBoostTrainer(
            boosting_loop, train_loop_config=config, scaling_config=scaling, run_config=run, datasets=splits
        )
        fit_started = time.perf_counter()
        result = trainer.fit()
        timings["fit_seconds"] = time.perf_counter() - fit_started
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise Unavailable(f"Training run {run_name!r} finished without a checkpoint")
        with result.checkpoint.as_directory() as directory:
            with open(os.path.join(directory, BOOSTER_FILE), "rb") as handle:
                model_file = handle.read()
            with open(os.path.join(directory, STATE_FILE)) as handle:
                history = json.load(handle)["history"]
        eval_started = time.perf_counter()
        model = BoosterModule(booster_from_json(model_file, architecture))
        test = datasets.read_split_table(dataset, "test")
        test_metrics = evaluate_model(
            model,
            table_batches(test),
            {"input": self.input_spec(dataset, preprocessing), "preprocessing": preprocessing},
            architecture["num_classes"],
            dataset.labels,
        )
        timings["test_seconds"] = time.perf_counter() - eval_started
        return TrainingOutcome(
            template=self.name,
            params=params.model_dump(mode="json"),
            dataset=dataset,
            architecture=architecture,
            preprocessing=preprocessing,
            state_dict=None,
            model_file=model_file,
            history=history,
            test_metrics=test_metrics,
            run_name=run_name,
            checkpoint_uri=str(result.checkpoint.path),
            used_gpu=False,
            timings=timings,
        )


def shard_matrix(shard: Any, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """A worker's dataset shard as (features (N, F) float32, labels (N,))."""
    features, labels = [], []
    for batch in shard.iter_batches(batch_size=8192, batch_format="numpy"):
        features.append(decode_features(list(batch["features"]), num_features))
        labels.append(np.asarray(batch["label"], dtype=np.float32))
    if not features:
        return np.zeros((0, num_features), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return np.concatenate(features), np.concatenate(labels)


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
    train_x, train_y = shard_matrix(ray.train.get_dataset_shard("train"), config["num_features"])
    val_x, val_y = shard_matrix(ray.train.get_dataset_shard("val"), config["num_features"])
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
