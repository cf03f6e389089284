"""The training engine: dataset version -> Ray Train ``TorchTrainer`` run -> evaluated weights."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Optional

import ray
import torch
from ray.train.torch import TorchTrainer

from aiplatform.datasets import DatasetManager
from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.evaluation import evaluate
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.training.loop import CHECKPOINT_FILE
from aiplatform.training.outcome import TrainingOutcome
from aiplatform.training.template import TrainingTemplate, ray_train_configs, worker_threads

logger = logging.getLogger(__name__)


def resolve_gpu(mode: str, workers: int) -> bool:
    """``auto`` uses GPUs when the cluster has one per worker; ``on`` insists."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if mode == "off":
        return False
    if mode == "on" and gpus < workers:
        raise Unavailable(f"gpu=on needs {workers} GPU(s) but the cluster has {gpus:g}")
    return gpus >= workers


def run_training(
    template: TrainingTemplate,
    params: Any,
    *,
    settings: Settings,
    storage: Storage,
    datasets: DatasetManager,
    run_name: str,
    callbacks: Optional[list[Any]] = None,
) -> TrainingOutcome:
    """Build (or reuse) the dataset, fit on Ray Train, and evaluate on the test split (a template
    with its own trainer, such as XGBoost's, runs its own ``fit``)."""
    own = template.fit(params, settings=settings, storage=storage, datasets=datasets, run_name=run_name,
                       callbacks=callbacks)
    if own is not None:
        return own
    timings: dict[str, float] = {}
    workers = int(params.workers)
    use_gpu = resolve_gpu(params.gpu, workers)  # before any data is read: a refusal costs nothing
    started = time.perf_counter()
    dataset = datasets.build(template.dataset_spec(params))
    timings["dataset_seconds"] = time.perf_counter() - started
    if dataset.rows("val") == 0:
        raise InvalidArgument(f"Dataset {dataset.ref} has no validation rows; raise val_fraction")
    # Materialized once: epochs then stream blocks from the object store instead of re-reading
    # and re-decoding parquet, which competes with training for the same cores.
    train_ds = datasets.read_split(dataset, "train").materialize().randomize_block_order()
    val_ds = datasets.read_split(dataset, "val").materialize()
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
    }
    scaling, run = ray_train_configs(settings, storage, run_name=run_name, workers=workers, use_gpu=use_gpu,
                                     callbacks=callbacks)
    trainer = TorchTrainer(template.train_loop(), train_loop_config=config, scaling_config=scaling, run_config=run,
                           datasets={"train": train_ds, "val": val_ds})
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
    test_metrics = evaluate(architecture, state["model"], datasets.read_split(dataset, "test"), config, dataset.labels)
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
