"""The Ray Train per-worker loop for classification (images, or text through the tokenizer).

Reads its shard of the train/val splits from Ray Data (a small split's once, then from memory:
``kept_shard``), reports per-epoch metrics, and writes a checkpoint every epoch (rank 0); after a
worker failure Ray Train restarts the group and the loop resumes from the latest checkpoint,
history included.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from aiplatform.kinds import kind_for
from aiplatform.networks.architectures import EncoderClassifier, build_model, load_pretrained
from aiplatform.training.collectives import all_reduce
from aiplatform.training.kept_shard import KeptShard, keep_where_all_kept

CHECKPOINT_FILE = "state.pt"
SHUFFLE_CHUNK_ROWS = 4096
VAL_BATCH_ROWS = 1024


def make_optimizer(name: str, params: Any, learning_rate: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=0.9, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate)
    return torch.optim.Adam(params, lr=learning_rate)


def make_scheduler(config: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """One-cycle schedule over the whole run (warm-up, then annealing), or none."""
    if config.get("lr_schedule", "onecycle") != "onecycle":
        return None
    total_steps = max(2, int(config["epochs"]) * int(config["steps_per_epoch"]))
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=float(config["learning_rate"]), total_steps=total_steps, pct_start=0.2
    )


def _collate(config: dict[str, Any], device: torch.device):  # type: ignore[no-untyped-def]
    to_tensors = kind_for(config).batch_converter()

    def collate(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = to_tensors(batch)
        return inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    return collate


def _shuffled_batches(
    shard: KeptShard, collate: Any, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches drawn from large chunks shuffled in memory.

    Rows are shuffled once when the dataset is built and blocks arrive in a new random order
    every epoch; permuting each chunk here finishes the job at a fraction of the cost of Ray
    Data's row-wise local shuffle buffer (~15% of an epoch on 2 cores). A kept shard's chunks
    come from a permutation of all its rows.
    """
    generator = torch.Generator().manual_seed(seed)
    chunk_rows = max(batch_size * 16, SHUFFLE_CHUNK_ROWS)
    # Collated in this, the training thread: on a thread of its own (as Ray Data's prefetching had
    # it) it ran a second team of OpenMP threads beside the step's, and on two cores Ray Train fell
    # to 2,129-2,219 samples/s against 2,636-2,874 here (bench/train_mnist.py).
    for inputs, labels in map(collate, shard.chunks(chunk_rows, seed=seed)):
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield inputs.index_select(0, index), labels.index_select(0, index)


def classification_loop(config: dict[str, Any]) -> list[dict[str, float]]:
    """Train, validate and checkpoint; returns the per-epoch metrics history (rank 0's)."""
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(int(config["seed"]))
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    network = load_pretrained(build_model(config["architecture"]), config["architecture"])
    if isinstance(network, EncoderClassifier):  # a frozen encoder's embeddings, computed once a row
        network.remember_embeddings()
    model = ray.train.torch.prepare_model(network)
    trainable = [p for p in model.parameters() if p.requires_grad]  # a frozen encoder stays as it is
    optimizer = make_optimizer(config["optimizer"], trainable, config["learning_rate"])
    scheduler = make_scheduler(config, optimizer)
    history: list[dict[str, float]] = []
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1

    collate = _collate(config, device)
    keep_bytes = int(config.get("keep_shard_bytes", 0))
    train_shard = KeptShard(ray.train.get_dataset_shard("train"), keep_bytes)
    val_shard = KeptShard(ray.train.get_dataset_shard("val"), keep_bytes)
    batch_size = int(config["batch_size"])
    for epoch in range(start_epoch, int(config["epochs"])):
        model.train()
        started = time.perf_counter()
        seen, loss_sum = 0, 0.0
        from_memory = train_shard.kept
        for images, labels in _shuffled_batches(
            train_shard, collate, batch_size, seed=int(config["seed"]) * 1000 + epoch
        ):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None and scheduler.last_epoch < scheduler.total_steps - 1:
                scheduler.step()
            seen += len(labels)
            loss_sum += float(loss.detach()) * len(labels)
        train_seconds = time.perf_counter() - started

        model.eval()
        val_seen, val_loss, val_correct = 0, 0.0, 0
        with torch.no_grad():
            for images, labels in map(collate, val_shard.chunks(VAL_BATCH_ROWS)):
                logits = model(images)
                val_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
                val_correct += int((logits.argmax(dim=1) == labels).sum())
                val_seen += len(labels)
        seen_all, loss_all, val_seen_all, val_loss_all, val_correct_all = all_reduce(
            [seen, loss_sum, val_seen, val_loss, val_correct], device
        )
        (max_seconds,) = all_reduce([train_seconds], device, op=dist.ReduceOp.MAX)
        keep_where_all_kept([train_shard, val_shard], device)
        metrics = {
            "epoch": epoch + 1,
            "epochs": int(config["epochs"]),
            "train_loss": loss_all / max(1.0, seen_all),
            "val_loss": val_loss_all / max(1.0, val_seen_all),
            "val_accuracy": val_correct_all / max(1.0, val_seen_all),
            "samples_per_second": seen_all / max(1e-9, max_seconds),
            "train_samples": seen_all,
            "epoch_seconds": max_seconds,
            # > 0 when this worker group restarted from a checkpoint after a failure.
            "resumed_from_epoch": start_epoch,
            # 1 when this epoch's rows came from the workers' memory, not Ray Data (``kept_shard``).
            "read_from_memory": float(from_memory),
        }
        history.append(metrics)
        if rank == 0:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(
                    {
                        "model": _unwrap(model).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else {},
                        "epoch": epoch,
                        "history": history,
                    },
                    os.path.join(directory, CHECKPOINT_FILE),
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
    return history


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
