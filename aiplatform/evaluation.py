"""Test-split evaluation of a classifier: accuracy, macro-F1 and loss, the figures that training,
compression and the deploy gate compare, and where it errs: the confusion matrix, each class's
precision, recall and F1, and the examples it got wrong most confidently."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
import torch

from aiplatform.kinds import kind_for
from aiplatform.networks.architectures import build_model

EVAL_BATCH_SIZE = 2048
WORST_EXAMPLES = 12
"""Confidently wrong test examples kept per evaluation (their ids in the dataset version)."""
EVALUATION_KEY = "test_evaluation"
"""The metrics key of the nested evaluation (the other keys are plain numbers)."""


def evaluate(
    architecture: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    test_ds: ray.data.Dataset,
    config: dict[str, Any],
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of float weights for ``architecture`` on a split (in this process, on CPU)."""
    model = build_model(architecture)
    model.load_state_dict(state_dict)
    batches = test_ds.iter_batches(batch_size=EVAL_BATCH_SIZE, batch_format="numpy")
    return evaluate_model(model, batches, config, int(architecture["num_classes"]), labels)


def evaluate_model(
    model: torch.nn.Module,
    batches: Iterable[dict[str, np.ndarray]],
    config: dict[str, Any],
    num_classes: int,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of a built model (float, pruned or quantized) over a split's numpy batches;
    ``config`` names its input and preprocessing as ``model.json`` does; ``labels`` name the
    classes in the evaluation (their indices otherwise)."""
    model.eval()
    to_tensors = kind_for(config).batch_converter()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum = 0.0
    worst: list[tuple[float, int, str, int, int]] = []  # a min-heap of the most confident mistakes
    order = 0
    with torch.inference_mode():
        for batch in batches:
            inputs, truth = to_tensors(batch)
            logits = model(inputs).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, truth, reduction="sum"))
            probabilities, predicted = torch.softmax(logits, dim=1).max(1)
            confusion += torch.bincount(truth * num_classes + predicted, minlength=num_classes**2).view(
                num_classes, num_classes
            )
            ids = batch.get("id")
            for row in torch.nonzero(predicted != truth).flatten().tolist():
                order += 1  # ties keep the first seen, so the choice is deterministic
                entry = (
                    float(probabilities[row]),
                    -order,
                    str(ids[row]) if ids is not None else str(order),
                    int(truth[row]),
                    int(predicted[row]),
                )
                if len(worst) < WORST_EXAMPLES:
                    heapq.heappush(worst, entry)
                elif entry > worst[0]:
                    heapq.heapreplace(worst, entry)
    seen = int(confusion.sum())
    names = list(labels) if labels is not None and len(labels) == num_classes else [str(i) for i in range(num_classes)]
    return {
        "test_accuracy": int(confusion.diag().sum()) / max(1, seen),
        "test_loss": loss_sum / max(1, seen),
        "test_macro_f1": macro_f1(confusion),
        "test_samples": seen,
        EVALUATION_KEY: {
            "labels": names,
            "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted
            "per_class": per_class_scores(confusion, names),
            "worst": [
                {"id": example_id, "label": names[true], "predicted": names[guess], "probability": p}
                for p, _, example_id, true, guess in sorted(worst, reverse=True)
            ],
        },
    }


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The plain numbers of an evaluation's metrics (what a task's result and summary carry)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def per_class_scores(confusion: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
    """Each class's precision, recall, F1 and support (rows: true class, columns: predicted)."""
    true_positive = confusion.diag().double()
    predicted, actual = confusion.sum(0).double(), confusion.sum(1).double()
    precision = (true_positive / predicted.clamp(min=1)).tolist()
    recall = (true_positive / actual.clamp(min=1)).tolist()
    f1 = (2 * true_positive / (predicted + actual).clamp(min=1)).tolist()
    return [
        {"label": name, "precision": precision[i], "recall": recall[i], "f1": f1[i], "support": int(actual[i])}
        for i, name in enumerate(names)
    ]


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
