"""Test-split evaluation of a classifier: accuracy, macro-F1 and loss, the figures that training,
compression and the deploy gate compare."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import ray.data
import torch

from aiplatform.kinds import kind_for
from aiplatform.networks.architectures import build_model

EVAL_BATCH_SIZE = 2048


def evaluate(
    architecture: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    test_ds: "ray.data.Dataset",
    config: dict[str, Any],
) -> dict[str, float]:
    """Metrics of float weights for ``architecture`` on a split (in this process, on CPU)."""
    model = build_model(architecture)
    model.load_state_dict(state_dict)
    batches = test_ds.iter_batches(batch_size=EVAL_BATCH_SIZE, batch_format="numpy")
    return evaluate_model(model, batches, config, int(architecture["num_classes"]))


def evaluate_model(
    model: torch.nn.Module, batches: Iterable[dict[str, np.ndarray]], config: dict[str, Any], num_classes: int
) -> dict[str, float]:
    """Metrics of a built model (float, pruned or quantized) over a split's numpy batches;
    ``config`` names its input and preprocessing as ``model.json`` does."""
    model.eval()
    to_tensors = kind_for(config).batch_converter()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum = 0.0
    with torch.inference_mode():
        for batch in batches:
            inputs, labels = to_tensors(batch)
            logits = model(inputs).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes**2).view(
                num_classes, num_classes)
    seen = int(confusion.sum())
    return {"test_accuracy": int(confusion.diag().sum()) / max(1, seen), "test_loss": loss_sum / max(1, seen),
            "test_macro_f1": macro_f1(confusion), "test_samples": seen}


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean F1 over the classes that occur (rows: true class, columns: predicted)."""
    true_positive = confusion.diag().double()
    predicted, actual = confusion.sum(0).double(), confusion.sum(1).double()
    f1 = 2 * true_positive / (predicted + actual).clamp(min=1)
    present = actual > 0
    return float(f1[present].mean()) if bool(present.any()) else 0.0


def table_batches(table: pa.Table, batch_size: int = EVAL_BATCH_SIZE) -> Iterator[dict[str, np.ndarray]]:
    """An Arrow table as the numpy batches ``evaluate_model`` takes."""
    for batch in table.to_batches(max_chunksize=batch_size):
        yield {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
