"""The gate's figures: production and the candidate scored on the same two slices.

``original``: production's dataset version's test split, its rows as the dataset stores them and
decoded as evaluation does (``aiplatform.batch.scoring.RowScorer``: a version's accuracy on its
own test split is the one training measured). ``fresh``: the held-out labeled predictions, each
sent through the model's own request decoding, as serving would: a table row as
``{"features": row}`` (:class:`TableSlice`), a kept request (an upload, JSON, a v2 request)
decoded by each model's own kind, its framing included, and classified as serving classifies it
(``ModelKind.classify``: a long text cut into windows whose answers are combined)
(:class:`KeptSlice`). Both models are loaded from
their verified packages (``aiplatform.serving.runner.ModelRunner``). Whether the candidate passes
is the engine's to say (``aiplatform.loops.engine.gate_refusals``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from aiplatform.batch.scoring import RowScorer
from aiplatform.errors import AIPError
from aiplatform.limits import RequestLimits
from aiplatform.loops.data import decode_kept
from aiplatform.serving.batcher import AdaptiveBatcher
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


def accuracy_on_kept(runner: ModelRunner, result_ids: list[str], inputs: list[bytes], labels: list[str]) -> float:
    """Accuracy over kept requests, each decoded by the model's own kind and classified as serving
    would; one it cannot decode or classify counts as wrong."""
    if not inputs:
        return 0.0
    limits, right = RequestLimits(), 0
    for start in range(0, len(inputs), SCORE_BATCH):
        decoded = [
            decode_kept(raw, result_id, runner.kind, limits)
            for raw, result_id in zip(inputs[start : start + SCORE_BATCH], result_ids[start : start + SCORE_BATCH])
        ]
        readable = [i for i, item in enumerate(decoded) if item is not None]
        if not readable:
            continue
        answers = asyncio.run(classify_all(runner, [decoded[i] for i in readable], limits.max_chunks))
        chunk_labels = labels[start : start + SCORE_BATCH]
        right += sum(answer == chunk_labels[i] for answer, i in zip(answers, readable))
    return right / len(inputs)


async def classify_all(runner: ModelRunner, items: list[Any], max_chunks: int) -> list[str | None]:
    """Each decoded input's label through ``ModelKind.classify``, the model inputs batched as the
    model server batches them; None for one the kind refuses (a document over ``max_chunks``)."""

    async def call(key: str, batch: list[np.ndarray]) -> list[dict[str, Any]]:
        return runner.predict(np.stack(batch))

    batcher: AdaptiveBatcher[np.ndarray, dict[str, Any]] = AdaptiveBatcher(
        call, max_batch_size=SCORE_BATCH, max_in_flight=1, max_waiting=1 << 30, name="loop-gate"
    )

    async def submit(model_input: np.ndarray) -> dict[str, Any]:
        return await batcher.submit("model", model_input)

    async def one(item: Any) -> str | None:
        try:
            answer, _features = await runner.kind.classify(item, submit, runner.labels, max_chunks)
        except AIPError:
            return None
        return str(answer["label"])

    return list(await asyncio.gather(*(one(item) for item in items)))


class FreshSlice(Protocol):
    """The held-out labeled predictions, scored by one model at a time."""

    @property
    def rows(self) -> int: ...

    def accuracy(self, runner: ModelRunner) -> float: ...


@dataclass(frozen=True)
class TableSlice:
    """A table model's held-out rows (``aiplatform.loops.data.holdout_rows``)."""

    table_rows: list[dict[str, Any]]
    labels: list[str]

    @property
    def rows(self) -> int:
        return len(self.table_rows)

    def accuracy(self, runner: ModelRunner) -> float:
        return accuracy_on_rows(runner, self.table_rows, self.labels)


@dataclass(frozen=True)
class KeptSlice:
    """Held-out kept requests of an image or text model (``aiplatform.loops.data.holdout_inputs``)."""

    result_ids: list[str]
    inputs: list[bytes]
    labels: list[str]

    @property
    def rows(self) -> int:
        return len(self.inputs)

    def accuracy(self, runner: ModelRunner) -> float:
        return accuracy_on_kept(runner, self.result_ids, self.inputs, self.labels)


def gate_figures(
    production: ModelRunner,
    candidate: ModelRunner,
    test_table: pa.Table,
    test_labels: list[str],
    fresh: FreshSlice,
) -> dict[str, Any]:
    """Both models' accuracy on each slice, with the slice's size."""
    return {
        "original": {
            "rows": test_table.num_rows,
            "production_accuracy": accuracy_on_split(production, test_table, test_labels),
            "candidate_accuracy": accuracy_on_split(candidate, test_table, test_labels),
        },
        "fresh": {
            "rows": fresh.rows,
            "production_accuracy": fresh.accuracy(production),
            "candidate_accuracy": fresh.accuracy(candidate),
        },
    }
