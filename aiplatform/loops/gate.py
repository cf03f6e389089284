"""The gate's figures: production and the candidate scored on the same two slices.

``original``: production's dataset version's test split, its rows as the dataset stores them and
decoded as evaluation does (``aiplatform.batch.scoring.RowScorer``: a version's accuracy on its
own test split is the one training measured). ``fresh``: the held-out labeled predictions, each
sent through the model's own request decoding, as serving would. Both models are loaded from
their verified packages (``aiplatform.serving.runner.ModelRunner``). Whether the candidate passes
is the engine's to say (``aiplatform.loops.engine.gate_refusals``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from aiplatform.batch.scoring import RowScorer
from aiplatform.limits import RequestLimits
from aiplatform.serving.runner import ModelRunner

SCORE_BATCH = 512


def accuracy_on_split(runner: ModelRunner, table: pa.Table, labels: list[str]) -> float:
    scored = RowScorer(runner, SCORE_BATCH).score_dataset_rows(table, labels)
    if not scored.ids:
        return 0.0
    return float(np.mean([p == t for p, t in zip(scored.labels, scored.true_labels)]))


def accuracy_on_rows(runner: ModelRunner, rows: list[dict[str, Any]], labels: list[str]) -> float:
    """Accuracy over table rows sent as serving receives them (``{"features": row}``)."""
    if not rows:
        return 0.0
    limits = RequestLimits()
    right = 0
    for start in range(0, len(rows), SCORE_BATCH):
        chunk = rows[start : start + SCORE_BATCH]
        inputs = np.stack([runner.kind.from_json({"features": row}, limits) for row in chunk])
        best = runner.predict_proba(inputs).argmax(axis=1)
        right += sum(runner.labels[int(b)] == t for b, t in zip(best, labels[start : start + SCORE_BATCH]))
    return right / len(rows)


def gate_figures(
    production: ModelRunner,
    candidate: ModelRunner,
    test_table: pa.Table,
    test_labels: list[str],
    fresh_rows: list[dict[str, Any]],
    fresh_labels: list[str],
) -> dict[str, Any]:
    """Both models' accuracy on each slice, with the slice's size."""
    return {
        "original": {
            "rows": test_table.num_rows,
            "production_accuracy": accuracy_on_split(production, test_table, test_labels),
            "candidate_accuracy": accuracy_on_split(candidate, test_table, test_labels),
        },
        "fresh": {
            "rows": len(fresh_rows),
            "production_accuracy": accuracy_on_rows(production, fresh_rows, fresh_labels),
            "candidate_accuracy": accuracy_on_rows(candidate, fresh_rows, fresh_labels),
        },
    }
