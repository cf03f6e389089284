"""The training engine: dataset version -> Ray Train ``TorchTrainer`` run -> evaluated weights."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from aiplatform.datasets import DatasetManager, DatasetVersion
from aiplatform.datasets.execution import STREAMING_OBJECT_STORE_BYTES
from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.evaluation import evaluate
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.training.loop import CHECKPOINT_FILE
from aiplatform.training.outcome import TrainingOutcome
from aiplatform.training.template import MAX_WORKER_FAILURES, TrainingTemplate, ray_train_configs, worker_threads

logger = logging.getLogger(__name__)


def resolve_gpu(mode: str, workers: int) -> bool:
    """``auto`` uses GPUs when the cluster has one per worker; ``on`` insists."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if mode == "off":
        return False
    if mode == "on" and gpus < workers:
        raise Unavailable(f"gpu=on needs {workers} GPU(s) but the cluster has {gpus:g}")
    return gpus >= workers


@dataclass(frozen=True)
class SharedSplits:
    """A dataset version's splits as training reads them, and the spec they were built from."""

    spec: Any
    dataset: DatasetVersion
    train: Any
    val: Any
    test: Any
    cached: bool
    """Train and val are held in the object store (else every epoch reads them from storage)."""

    @classmethod
    def read(cls, spec: Any, datasets: DatasetManager, seed: int = 0) -> SharedSplits:
        """Build (or reuse) the version. A small one has train and val materialized once: epochs
        then stream blocks from the object store instead of re-reading and re-decoding parquet,
        which competes with training for the same cores. A large one (``datasets.streams``) is
        read from storage every epoch, its files in a new order drawn from ``seed``, so memory
        stays bounded whatever its size. The test split is held as train and val are, or stays
        lazy where they stream (read once, at the end)."""
        dataset = datasets.build(spec)
        if dataset.rows("val") == 0:
            raise InvalidArgument(f"Dataset {dataset.ref} has no validation rows; raise val_fraction")
        splits, cached = datasets.training_splits(dataset, ("train", "val"), seed)
        train = splits["train"].randomize_block_order() if cached else splits["train"]
        test = datasets.materialized_split(dataset, "test") if cached else datasets.read_split(dataset, "test")
        return cls(spec, dataset, train, splits["val"], test, cached=cached)


def ingest_config(splits_cached: bool) -> ray.train.DataConfig | None:
    """Ray Train's data options: its defaults for cached splits; for streamed ones the same with
    the dataset manager's object-store budget (Train sets each dataset's options from its own
    controller's context, so the budget a read was created with would not reach it)."""
    if splits_cached:
        return None
    options = ray.train.DataConfig.default_ingest_options()
    options.resource_limits = options.resource_limits.copy(object_store_memory=STREAMING_OBJECT_STORE_BYTES)
    return ray.train.DataConfig(execution_options=options)


def run_training(
    template: TrainingTemplate,
    params: Any,
    *,
    settings: Settings,
    storage: Storage,
    datasets: DatasetManager,
    run_name: str,
    callbacks: list[Any] | None = None,
    shared: SharedSplits | None = None,
    max_failures: int = MAX_WORKER_FAILURES,
) -> TrainingOutcome:
    """Build (or reuse) the dataset, fit on Ray Train, and evaluate on the test split (a template
    with its own trainer, such as XGBoost's, runs its own ``fit``). ``shared``: the splits already
    read into the object store (a sweep reads them once for all its trials)."""
    own = template.fit(
        params, settings=settings, storage=storage, datasets=datasets, run_name=run_name, callbacks=callbacks
    )
    if own is not None:
        return own
    timings: dict[str, float] = {}
    workers = int(params.workers)
    use_gpu = resolve_gpu(params.gpu, workers)  # before any data is read: a refusal costs nothing
    started = time.perf_counter()
    spec = template.dataset_spec(params)
    splits = shared if shared is not None and shared.spec == spec else SharedSplits.read(spec, datasets, params.seed)
    dataset = splits.dataset
    timings["dataset_seconds"] = time.perf_counter() - started
    train_ds, val_ds = splits.train, splits.val
    preprocessing = template.preprocessing(params, dataset, datasets)
    architecture = template.architecture(params, dataset, preprocessing)
    config = {
        "architecture": architecture,
        "preprocessing": preprocessing,
        "input": template.input_spec(dataset, preprocessing),
        "epochs": params.epochs,
        "batch_size": params.batch_size,
        "learning_rate": params.learning_rate,
        "optimizer": params.optimizer,
        "lr_schedule": params.lr_schedule,
        # Upper bound of one worker's steps per epoch (shards are near-equal); sizes the schedule.
        "steps_per_epoch": math.ceil(dataset.rows("train") / workers / params.batch_size) + 1,
        "seed": params.seed,
        "threads": worker_threads(workers),
        # A cached split is small enough to keep in each worker after its first epoch.
        "keep_shard_bytes": settings.train_keep_shard_bytes if splits.cached else 0,
    }
    scaling, run = ray_train_configs(
        settings,
        storage,
        run_name=run_name,
        workers=workers,
        use_gpu=use_gpu,
        callbacks=callbacks,
        max_failures=max_failures,
    )
    trainer = TorchTrainer(
        template.train_loop(),
        train_loop_config=config,
        scaling_config=scaling,
        run_config=run,
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=ingest_config(splits.cached),
    )
    fit_started = time.perf_counter()
    result = trainer.fit()
    timings["fit_seconds"] = time.perf_counter() - fit_started
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise Unavailable(f"Training run {run_name!r} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
    history = list(result.return_value or state["history"])
    eval_started = time.perf_counter()
    test_metrics = evaluate(architecture, state["model"], splits.test, config, dataset.labels)
    timings["test_seconds"] = time.perf_counter() - eval_started
    return TrainingOutcome(
        template=template.name,
        params=params.model_dump(mode="json"),
        dataset=dataset,
        architecture=architecture,
        preprocessing=preprocessing,
        state_dict=state["model"],
        history=history,
        test_metrics=test_metrics,
        run_name=run_name,
        checkpoint_uri=str(result.checkpoint.path),
        used_gpu=use_gpu,
        timings=timings,
    )
