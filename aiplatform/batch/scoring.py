"""Rows of a batch input -> the model's answers, through the same code serving runs.

Two inputs, two paths, both the kind's own (nothing here switches on the kind):

- a dataset version's split goes through ``ModelKind.batch_converter`` (the rows as the dataset
  stores them, decoded exactly as evaluation does: the accuracy of a batch job over a test split
  is the one training measured), then the model;
- an uploaded file goes through serving's decoding (``ModelKind.from_upload`` for a CSV's rows or
  a ZIP's files, ``from_json`` for a JSON line's text), then ``ModelKind.classify`` with the
  model runner behind serving's ``AdaptiveBatcher``: a long text is cut into windows and their
  answers combined as the gateway does, so a row scores as it would when served.

Either way the forward pass is the model server's (``ModelRunner``, loaded from the verified
package).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from aiplatform.batch.inputs import CSV, ID_COLUMN, JSONL, LABEL_COLUMN, ZIP
from aiplatform.errors import AIPError, InvalidArgument
from aiplatform.kinds import ManyInputs, ModelKind
from aiplatform.limits import RequestLimits
from aiplatform.serving.batcher import AdaptiveBatcher
from aiplatform.serving.runner import ModelRunner

TARGET_BATCH_S = 0.05
"""A forward pass this long over one batch: long enough that per-batch costs vanish, short
enough that a part's memory stays small. The batch size follows from the model's own speed."""
MIN_BATCH, MAX_BATCH = 16, 4096
MAX_CHUNKS_PER_TEXT = 256
"""Windows one text may become (the gateway's ``max_chunks``)."""


def choose_batch_size(runner: ModelRunner, asked: int | None) -> int:
    """``asked``, or the rows whose forward pass takes about ``TARGET_BATCH_S`` (timed on the
    kind's sample input when the runner chose its threads)."""
    if asked is not None:
        return asked
    forward_s = runner.forward_s or 0.0
    if forward_s <= 0:
        return 256
    return int(min(MAX_BATCH, max(MIN_BATCH, TARGET_BATCH_S / forward_s)))


@dataclass
class ScoredRows:
    """A range of rows, scored: what one output part holds."""

    ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    probability: list[float] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    true_labels: list[str | None] = field(default_factory=list)

    def table(self, model_version: int) -> pa.Table:
        return pa.table(
            {
                "id": pa.array(self.ids, pa.string()),
                "label": pa.array(self.labels, pa.string()),
                "probability": pa.array(self.probability, pa.float32()),
                "probabilities": pa.array([p.astype(np.float32) for p in self.probabilities], pa.list_(pa.float32())),
                "model_version": pa.array([model_version] * len(self.ids), pa.int32()),
                "true_label": pa.array(self.true_labels, pa.string()),
            }
        )

    def add(self, ids: list[str], probabilities: np.ndarray, labels: list[str], truth: list[str | None]) -> None:
        best = probabilities.argmax(axis=1)
        self.ids += ids
        self.labels += [labels[int(i)] for i in best]
        self.probability += [float(probabilities[row, int(i)]) for row, i in enumerate(best)]
        self.probabilities += list(probabilities)
        self.true_labels += truth


class RowScorer:
    """Scores tables of rows with one loaded model (one per Ray actor: the package is loaded once)."""

    def __init__(self, runner: ModelRunner, batch_size: int, limits: RequestLimits | None = None) -> None:
        self.runner = runner
        self.kind = runner.kind
        self.labels = list(runner.labels)
        self.batch_size = batch_size
        self.limits = limits or RequestLimits()
        self._converter = self.kind.batch_converter()

    # -- dataset splits ------------------------------------------------------------------------------
    def score_dataset_rows(self, table: pa.Table, dataset_labels: list[str]) -> ScoredRows:
        """Rows of a dataset split (``id``, the kind's columns, ``label`` as the class index)."""
        scored = ScoredRows()
        for batch in table.to_batches(max_chunksize=self.batch_size):
            columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
            inputs, truth = self._converter(columns)
            probabilities = self.forward(inputs)
            true = [dataset_labels[int(t)] for t in truth.tolist()]
            scored.add([str(i) for i in columns[ID_COLUMN]], probabilities, self.labels, true)
        return scored

    def forward(self, inputs: torch.Tensor) -> np.ndarray:
        """Class probabilities of a batch already made a tensor by the kind (the model server's
        forward pass, ``ModelRunner.predict_proba``, after its ``to_tensor``)."""
        runner = self.runner
        if runner.threads is not None and torch.get_num_threads() != runner.threads:
            torch.set_num_threads(runner.threads)
        with torch.inference_mode():
            logits = runner.model(inputs.to(runner.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    # -- uploaded files --------------------------------------------------------------------------------
    def score_uploaded_rows(self, table: pa.Table, fmt: str, filename: str) -> ScoredRows:
        """Rows of an uploaded input (``BatchInputs``), decoded and classified as serving does."""
        scored = ScoredRows()
        for start in range(0, table.num_rows, self.batch_size):
            chunk = table.slice(start, self.batch_size)
            ids = [str(i) for i in chunk.column(ID_COLUMN).to_pylist()]
            items = self.decode(chunk, fmt, filename)
            answers = asyncio.run(self._classify(items))
            probabilities = np.array(
                [[float(a["probabilities"][label]) for label in self.labels] for a in answers], dtype=np.float32
            ).reshape(len(answers), len(self.labels))
            truth = chunk.column(LABEL_COLUMN).to_pylist() if LABEL_COLUMN in chunk.column_names else [None] * len(ids)
            scored.add(ids, probabilities, self.labels, [None if t is None else str(t) for t in truth])
        return scored

    def decode(self, chunk: pa.Table, fmt: str, filename: str) -> list[Any]:
        return decode_uploaded(self.kind, chunk, fmt, filename, self.limits)

    async def _classify(self, items: list[Any]) -> list[dict[str, Any]]:
        async def call(key: str, inputs: list[np.ndarray]) -> list[dict[str, Any]]:
            return self.runner.predict(np.stack(inputs))

        batcher: AdaptiveBatcher[np.ndarray, dict[str, Any]] = AdaptiveBatcher(
            call, max_batch_size=self.batch_size, max_in_flight=1, max_waiting=1 << 30, name="batch-job"
        )

        async def submit(model_input: np.ndarray) -> dict[str, Any]:
            return await batcher.submit("model", model_input)

        share = max(1, MAX_CHUNKS_PER_TEXT)
        classified = await asyncio.gather(*(self.kind.classify(item, submit, self.labels, share) for item in items))
        return [answer for answer, _features in classified]


def decode_uploaded(kind: ModelKind, chunk: pa.Table, fmt: str, filename: str, limits: RequestLimits) -> list[Any]:
    """Rows of an uploaded input -> the model's inputs, by serving's decoding (a CSV's rows as one
    served CSV upload, a ZIP's files as served uploads, a JSON line's text as a served JSON body);
    an error names the row (its id) it was found in."""
    if fmt == CSV:
        first = str(chunk.column(ID_COLUMN)[0].as_py()) if chunk.num_rows else "?"
        chunk_limits = RequestLimits(
            max_rows=max(chunk.num_rows, 1),
            max_text_chars=limits.max_text_chars,
            max_image_pixels=limits.max_image_pixels,
        )
        try:
            found = kind.from_upload(filename, csv_bytes(chunk), chunk_limits)
        except AIPError as exc:
            raise InvalidArgument(
                f"Input {filename!r}, rows from id {first} (line 2 is that row): {exc.message}"
            ) from None
        items = list(found) if isinstance(found, ManyInputs) else [found]
        if len(items) != chunk.num_rows:
            raise InvalidArgument(
                f"Input {filename!r}: a {kind.name} model made {len(items)} inputs of {chunk.num_rows} CSV rows "
                f"(from id {first}); a CSV is scored by table models"
            )
        return items
    ids = chunk.column(ID_COLUMN).to_pylist()
    if fmt == JSONL:
        values = chunk.column("text").to_pylist()
        decode = lambda row_id, text: kind.from_json({"text": text}, limits)
    elif fmt == ZIP:
        values = chunk.column("data").to_pylist()
        decode = lambda row_id, data: kind.from_upload(row_id, data, limits)
    else:
        raise InvalidArgument(f"Unknown batch input format {fmt!r}")
    items = []
    for row_id, value in zip(ids, values):
        try:
            item = decode(row_id, value)
        except AIPError as exc:
            raise InvalidArgument(f"Input {filename!r} row {row_id!r}: {exc.message}") from None
        if isinstance(item, ManyInputs):
            raise InvalidArgument(f"Input {filename!r} row {row_id!r} holds many inputs; send one per row")
        items.append(item)
    return items


def csv_bytes(chunk: pa.Table) -> bytes:
    """Rows kept as text cells back into a CSV (header first), as a served upload would carry them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = chunk.column_names
    writer.writerow(names)
    columns = [chunk.column(n).to_pylist() for n in names]
    for row in zip(*columns):
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue().encode()


def row_ranges(total: int, part_rows: int) -> Iterator[tuple[int, int, int]]:
    """(part index, first row, end row) of each part of ``total`` rows."""
    for index, start in enumerate(range(0, total, part_rows)):
        yield index, start, min(total, start + part_rows)
