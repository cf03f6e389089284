"""A retraining run's data: production's training table plus the labeled predictions since, capped,
with a seeded share of the fresh rows held out for the gate.

The labeled predictions' inputs are read back from where serving kept them (``results/inputs/``,
the request as it was sent) and each becomes a row with its label. Their split is a seeded hash
of the result id, so the same labels and seed always hold out the same rows. The training table
is written as a parquet file under the data root (the only place a task's source may be read
from), the held-out slice beside it; a table model's task then builds its dataset version from
it as from any parquet source (``aiplatform.datasets.tabular_builder``: equal rows keep their
split, so production's test rows stay test rows).

Table models only for now: another kind's run fails at this step, saying so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from aiplatform.datasets.tabular_sources import LABEL_NAME, TabularDatasetSpec, read_table_source
from aiplatform.errors import Conflict
from aiplatform.results.feedback import LabeledPrediction
from aiplatform.storage import Storage

TABLE_KIND = "tabular"
HOLDOUT_FILE, TRAIN_FILE = "holdout.parquet", "train.parquet"


@dataclass(frozen=True)
class FreshRows:
    """Labeled predictions as table rows: those trained on and those held out for the gate."""

    train: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    unreadable: int
    """Labeled predictions whose input was not kept (or is not a table row): left out."""


def held_out(result_id: str, seed: int, fraction: float) -> bool:
    """Whether a labeled prediction is in the gate's slice: a seeded hash of its id, below ``fraction``."""
    digest = hashlib.blake2b(f"{seed}:{result_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def newest(labeled: Iterable[LabeledPrediction], cap: int) -> list[LabeledPrediction]:
    """The newest ``cap`` of the labeled predictions (read oldest first)."""
    kept: list[LabeledPrediction] = []
    for prediction in labeled:
        kept.append(prediction)
        if len(kept) > 2 * cap:
            kept = kept[-cap:]
    return kept[-cap:]


def table_row(raw: bytes, result_id: str, features: list[str]) -> dict[str, Any] | None:
    """The features a table model was sent for the result ``result_id`` (``<request id>-<n>`` is
    the n-th row of a request that held many): from a JSON ``features`` object, a JSON ``rows``
    list or a CSV upload; None for anything else (a v2 tensor holds encoded values)."""
    _, _, suffix = result_id.rpartition("-")
    index = int(suffix) if suffix.isdigit() else 0
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("features"), dict):
            row = payload["features"]
        elif isinstance(payload.get("rows"), list) and index < len(payload["rows"]):
            row = payload["rows"][index]
        else:
            return None
    elif payload is None:
        try:
            rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
        except (UnicodeDecodeError, csv.Error):
            return None
        if index >= len(rows):
            return None
        row = {k: (None if v is None or v.strip() == "" else v) for k, v in rows[index].items()}
    else:
        return None
    if not isinstance(row, dict) or any(f not in row for f in features):
        return None
    return {f: row[f] for f in features}


def fresh_rows(
    labeled: list[LabeledPrediction], storage: Storage, features: list[str], seed: int, fraction: float
) -> FreshRows:
    train, holdout, unreadable = [], [], 0
    inputs: dict[str, bytes | None] = {}
    for prediction in labeled:
        uri = prediction.input_uri
        if uri and uri not in inputs:
            inputs[uri] = storage.get_bytes(uri) if storage.exists(uri) else None
        raw = inputs.get(uri) if uri else None
        row = table_row(raw, prediction.result_id, features) if raw is not None else None
        if row is None:
            unreadable += 1
            continue
        row[LABEL_NAME] = prediction.label
        (holdout if held_out(prediction.result_id, seed, fraction) else train).append(row)
    return FreshRows(train, holdout, unreadable)


def original_table(spec: TabularDatasetSpec, storage_options: dict[str, Any]) -> tuple[pa.Table, list[str]]:
    """Production's training table as its task read it (features and ``label_name``)."""
    source, features = read_table_source(spec, storage_options)
    tables = [t for t in ray.get(source.dataset.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({}), features


def as_table(rows: list[dict[str, Any]], like: pa.Schema, features: list[str]) -> pa.Table:
    """Rows (JSON values) in ``like``'s columns: numbers as float64, the rest as text."""
    columns: dict[str, pa.Array] = {}
    for name in [*features, LABEL_NAME]:
        numeric = name != LABEL_NAME and _numeric(like.field(name).type)
        values = [row.get(name) for row in rows]
        if numeric:
            columns[name] = pa.array([None if v is None or v == "" else float(v) for v in values], pa.float64())
        else:
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def widen(table: pa.Table, features: list[str]) -> pa.Table:
    """``table`` with numeric features as float64 and the rest as text (the fresh rows' types)."""
    columns = {}
    for name in [*features, LABEL_NAME]:
        column = table.column(name)
        if name != LABEL_NAME and _numeric(column.type):
            columns[name] = column.cast(pa.float64())
        else:
            columns[name] = column.cast(pa.string())
    return pa.table(columns)


def _numeric(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_decimal(arrow_type)
    )


def write_run_tables(folder: Path, original: pa.Table, features: list[str], fresh: FreshRows) -> tuple[Path, Path]:
    """The training table (original + fresh training rows) and the held-out slice, as parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    base = widen(original, features)
    train = pa.concat_tables([base, as_table(fresh.train, base.schema, features)])
    holdout = as_table(fresh.holdout, base.schema, features)
    train_path, holdout_path = folder / TRAIN_FILE, folder / HOLDOUT_FILE
    for table, path in ((train, train_path), (holdout, holdout_path)):
        partial = path.with_suffix(".tmp")
        pq.write_table(table, partial)
        partial.replace(path)  # whole or absent: a restarted step writes it again
    return train_path, holdout_path


def holdout_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The held-out slice: feature rows and their labels."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    labels = [str(row.pop(LABEL_NAME)) for row in rows]
    return rows, labels


def require_table_kind(kind: str, model: str) -> None:
    if kind != TABLE_KIND:
        raise Conflict(
            f"Retraining data for {model!r} (a {kind} model) is not built yet: loops build data for table models"
        )
