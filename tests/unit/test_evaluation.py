"""The test-split evaluation: the confusion matrix, each class's precision/recall/F1 and the most
confidently wrong examples, from a model whose answers are known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aiplatform.evaluation import EVALUATION_KEY, WORST_EXAMPLES, evaluate_model, scalar_metrics

CONFIG = {"input": {"type": "tabular", "features": [{"name": "x", "type": "number"}]}, "preprocessing": {}}


class SignOfX(torch.nn.Module):
    """Class 1 when x > 0, more confident the larger |x|."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([-batch, batch], dim=1)


def batches(xs: list[float], truth: list[int], size: int) -> list[dict[str, np.ndarray]]:
    rows = [np.float32([x]).tobytes() for x in xs]
    return [
        {
            "id": np.array([f"row-{i}" for i in range(start, min(start + size, len(xs)))], dtype=object),
            "features": np.array(rows[start : start + size], dtype=object),
            "label": np.array(truth[start : start + size]),
        }
        for start in range(0, len(xs), size)
    ]


def test_the_matrix_per_class_scores_and_worst_examples_are_exact() -> None:
    # 6 predicted 1 (x > 0), 4 predicted 0; truth makes 2 of each prediction wrong.
    xs = [3.0, 2.0, 1.0, 0.5, 0.2, 0.1, -0.1, -1.0, -2.0, -4.0]
    truth = [0, 1, 1, 1, 0, 1, 1, 0, 0, 1]
    metrics = evaluate_model(SignOfX(), batches(xs, truth, size=3), CONFIG, 2, ["neg", "pos"])
    evaluation = metrics.pop(EVALUATION_KEY)
    assert metrics == scalar_metrics({**metrics, EVALUATION_KEY: evaluation})
    assert metrics["test_samples"] == 10 and metrics["test_accuracy"] == pytest.approx(0.6)
    assert evaluation["confusion_matrix"] == [[2, 2], [2, 4]]  # rows: true neg, true pos
    assert sum(map(sum, evaluation["confusion_matrix"])) == metrics["test_samples"]
    neg, pos = evaluation["per_class"]
    assert (neg["label"], neg["support"], pos["support"]) == ("neg", 4, 6)
    assert neg["precision"] == pytest.approx(0.5) and neg["recall"] == pytest.approx(0.5)
    assert pos["precision"] == pytest.approx(4 / 6) and pos["recall"] == pytest.approx(4 / 6)
    assert pos["f1"] == pytest.approx(4 / 6) and metrics["test_macro_f1"] == pytest.approx((0.5 + 4 / 6) / 2)
    # The most confident mistakes first: x=-4 (true pos) and x=3 (true neg), then x=0.2 and x=-0.1.
    assert [(w["id"], w["label"], w["predicted"]) for w in evaluation["worst"]] == [
        ("row-9", "pos", "neg"),
        ("row-0", "neg", "pos"),
        ("row-4", "neg", "pos"),
        ("row-6", "pos", "neg"),
    ]
    assert evaluation["worst"][0]["probability"] == pytest.approx(float(torch.softmax(torch.tensor([4.0, -4.0]), 0)[0]))


def test_only_the_most_confident_mistakes_are_kept_and_classes_without_names_get_indices() -> None:
    xs = [(i + 1) * 0.1 for i in range(40)]  # all predicted 1, each more confident than the last
    metrics = evaluate_model(SignOfX(), batches(xs, [0] * 40, size=7), CONFIG, 2)
    evaluation = metrics[EVALUATION_KEY]
    assert evaluation["labels"] == ["0", "1"] and evaluation["confusion_matrix"] == [[0, 40], [0, 0]]
    assert [w["id"] for w in evaluation["worst"]] == [f"row-{i}" for i in range(39, 39 - WORST_EXAMPLES, -1)]
    assert evaluation["per_class"][1]["support"] == 0 and evaluation["per_class"][1]["recall"] == 0.0
