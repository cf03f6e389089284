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
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aiplatform.datasets import DatasetManager, DatasetVersion, TabularDatasetSpec
from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.evaluation import evaluate_model, table_batches
from aiplatform.feature_bytes import decode_features
from aiplatform.packaging.xgboost_model import (
    XGBOOST_ARCHITECTURE,
    BoosterModule,
    booster_from_json,
)
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.training.boosting import BOOSTER_FILE, STATE_FILE, boosting_loop
from aiplatform.training.outcome import TrainingOutcome
from aiplatform.training.template import TrainingTemplate, ray_train_configs, worker_threads

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


IN_LOOP_CONFIG_BYTES = 4 * 1024**2
"""A table whose train and val files total at most this goes to the workers in their loop's config
(each takes its rows by rank), not through Ray Data: its split coordinator and dataset-manager
actors started in ~5 s of a 60-row run's ~18 s (2 cores), for rows a config carries at once."""


def in_loop_config(dataset: DatasetVersion) -> bool:
    """Whether ``dataset``'s train and val splits are small enough to send in the loop's config."""
    return (
        sum(int(entry["size"]) for split in ("train", "val") for entry in dataset.files(split)) <= IN_LOOP_CONFIG_BYTES
    )


def table_matrix(table: Any, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """A split's Arrow table as (features (N, F) float32, labels (N,))."""
    features = decode_features(table.column("features").to_pylist(), num_features)
    return features, np.asarray(table.column("label").to_numpy(), dtype=np.float32)


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
        splits, tables = None, None
        if in_loop_config(dataset):
            tables = {
                split: table_matrix(datasets.read_split_table(dataset, split), architecture["num_features"])
                for split in ("train", "val")
            }
        else:
            # Materialized before the workers start: read lazily, the splits' read tasks would wait
            # for CPUs the worker group (and, on a small node, Serve's replicas) already hold.
            splits = {split: datasets.materialized_split(dataset, split) for split in ("train", "val")}
        config = {
            "tables": tables,
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
