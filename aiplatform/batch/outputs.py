"""What a batch job writes: its predictions as Parquet parts and a summary, under ``batch/<task id>/``.

    batch/<task id>/part-00000.parquet   rows [0, R) of the input, scored
    batch/<task id>/part-00001.parquet   rows [R, 2R) ...
    batch/<task id>/summary.json         rows, rows/s, seconds, model, evaluation (when labelled)

Part ``i`` always holds the same input rows (the job fixes the part size before its first part),
and each is one storage object written whole (``Storage.put_bytes``: the bytes, then their
sha256; a part without it is not listed), so a job killed half-way and run again skips the
parts it finds, rescores none of them, and the output never holds a row twice or half a file.
Each row: ``id`` (the input's id or row number, or a file's path), ``label``, ``probability``,
``probabilities`` (in the order of the summary's ``labels``), ``model_version`` and
``true_label`` (null when the input has none).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from aiplatform.errors import NotFound
from aiplatform.storage import Storage

OUTPUTS_PREFIX = "batch"
SUMMARY_FILE = "summary.json"
PLAN_FILE = "plan.json"
PART_PATTERN = re.compile(r"part-(\d{5})\.parquet$")
OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.string()),
        ("probability", pa.float32()),
        ("probabilities", pa.list_(pa.float32())),
        ("model_version", pa.int32()),
        ("true_label", pa.string()),
    ]
)


def task_prefix(task_id: str) -> str:
    return f"{OUTPUTS_PREFIX}/{task_id}"


def part_key(task_id: str, index: int) -> str:
    return f"{task_prefix(task_id)}/part-{index:05d}.parquet"


class BatchOutputs:
    """The outputs of batch jobs in ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # -- the job's writes -------------------------------------------------------------------------
    def write_part(self, task_id: str, index: int, table: pa.Table) -> None:
        """Store part ``index`` whole (one object: a reader sees all of it or none)."""
        sink = io.BytesIO()
        pq.write_table(table.cast(OUTPUT_SCHEMA), sink)
        self.storage.put_bytes(part_key(task_id, index), sink.getvalue())

    def write_summary(self, task_id: str, summary: dict[str, Any]) -> None:
        self.storage.put_bytes(f"{task_prefix(task_id)}/{SUMMARY_FILE}", json.dumps(summary).encode())

    def write_plan(self, task_id: str, plan: dict[str, Any]) -> None:
        """What every attempt of the job must agree on (the input, its rows, the part size)."""
        self.storage.put_bytes(f"{task_prefix(task_id)}/{PLAN_FILE}", json.dumps(plan).encode())

    def plan(self, task_id: str) -> dict[str, Any] | None:
        key = f"{task_prefix(task_id)}/{PLAN_FILE}"
        return json.loads(self.storage.get_bytes(key)) if self.storage.exists(key) else None

    # -- reads --------------------------------------------------------------------------------------
    def parts(self, task_id: str) -> list[str]:
        """The keys of the parts written so far, in input order."""
        return [key for key in self.storage.list(task_prefix(task_id)) if PART_PATTERN.search(key)]

    def part_indices(self, task_id: str) -> set[int]:
        return {int(match.group(1)) for key in self.parts(task_id) if (match := PART_PATTERN.search(key))}

    def read_part(self, key: str, columns: list[str] | None = None) -> pa.Table:
        """One part, checked against its sha256."""
        return pq.read_table(pa.BufferReader(self.storage.get_bytes(key)), columns=columns)

    def summary(self, task_id: str) -> dict[str, Any] | None:
        """The job's summary once it finished; None before."""
        key = f"{task_prefix(task_id)}/{SUMMARY_FILE}"
        return json.loads(self.storage.get_bytes(key)) if self.storage.exists(key) else None

    def write_download(self, task_id: str, out: BinaryIO) -> int:
        """Every part as ONE Parquet file written to ``out``, a part at a time (memory holds one
        part, whatever the output's size); returns the rows written.

        Raises:
            NotFound: the task has written no part.
        """
        keys = self.parts(task_id)
        if not keys:
            raise NotFound(f"Batch job {task_id} has no results (yet)")
        rows = 0
        with pq.ParquetWriter(out, OUTPUT_SCHEMA) as writer:
            for key in keys:
                part = self.read_part(key).cast(OUTPUT_SCHEMA)
                writer.write_table(part)
                rows += part.num_rows
        return rows

    def delete(self, task_id: str) -> int:
        """Remove everything a task wrote; returns how many objects."""
        return self.storage.delete_prefix(task_prefix(task_id))
