"""Table dataset versions on Ray Data: a feature schema from the whole table, encoded rows, seeded
split, parquet, manifest.

Two passes over the source, both streamed in batches: the first gathers each column's statistics
(range, mean, spread, missing values; the categories of text columns) and the labels; the second
encodes every row with the resulting schema (``aiplatform.kinds.rows``, the same encoding the
model servers apply to requests) and assigns its split by a seeded hash of its content, so equal
rows share a split (no leakage) and the same table and seed always give the same version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

from aiplatform.datasets.augment import hash_uniform
from aiplatform.datasets.source_policy import HttpGet
from aiplatform.datasets.sources import SourceData
from aiplatform.datasets.spec import SPLITS, split_file_entries, splits_content_hash
from aiplatform.datasets.tabular_sources import LABEL_NAME, TabularDatasetSpec, read_table_source
from aiplatform.errors import InvalidArgument
from aiplatform.kinds import TabularKind
from aiplatform.kinds.rows import CATEGORY, NUMBER, FeatureSchema
from aiplatform.storage import ObjectInfo, Storage

TABLE_MANIFEST_FORMAT = 1
SPLIT_STREAM = 17
BATCH_ROWS = 4096


def column_types(schema: pa.Schema, features: list[str], source: str) -> dict[str, str]:
    """``number`` for numeric and boolean columns, ``category`` for text; others are refused."""
    types = {}
    for name in features:
        arrow_type = schema.field(name).type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if (
            pa.types.is_integer(arrow_type)
            or pa.types.is_floating(arrow_type)
            or pa.types.is_boolean(arrow_type)
            or pa.types.is_decimal(arrow_type)
        ):
            types[name] = NUMBER
        elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            types[name] = CATEGORY
        elif pa.types.is_null(arrow_type):
            raise InvalidArgument(f"Table source {source!r}: column {name!r} is empty")
        else:
            raise InvalidArgument(
                f"Table source {source!r}: column {name!r} has type {arrow_type}; features are "
                "numbers or text categories (drop it with feature_columns)"
            )
    return types


def column_statistics(batch: pa.Table, types: dict[str, str], max_categories: int) -> dict[str, list[str]]:
    """One batch's partial statistics, as one JSON row (combined on the driver)."""
    import pyarrow.compute as pc

    columns: dict[str, Any] = {}
    for name, type_ in types.items():
        column = batch.column(name)
        missing = column.null_count
        if type_ == NUMBER:
            values = np.asarray(pc.cast(column.drop_null(), pa.float64(), safe=False).to_numpy(zero_copy_only=False))
            values = values[~np.isnan(values)]
            missing += int(len(column) - column.null_count - values.size)
            columns[name] = {
                "missing": missing,
                "count": int(values.size),
                "sum": float(values.sum()),
                "sumsq": float(np.square(values).sum()),
                "min": float(values.min()) if values.size else None,
                "max": float(values.max()) if values.size else None,
            }
        else:  # categories as the servers name them: stripped; an empty text is a missing value
            texts = pc.utf8_trim_whitespace(column.drop_null().cast(pa.string()))
            texts = texts.filter(pc.not_equal(texts, ""))
            missing += len(column) - column.null_count - len(texts)
            counts = pc.value_counts(texts).to_pylist()
            columns[name] = {
                "missing": missing,
                "categories": {str(c["values"]): int(c["counts"]) for c in counts[: max_categories + 1]},
            }
    labels = batch.column(LABEL_NAME)
    label_counts = pc.value_counts(labels.drop_null().cast(pa.string())).to_pylist()
    partial = {
        "rows": batch.num_rows,
        "columns": columns,
        "labels": {str(c["values"]).strip(): int(c["counts"]) for c in label_counts},
    }
    return {"partial": [json.dumps(partial)]}


def feature_schema(
    partials: list[dict[str, Any]], types: dict[str, str], spec: TabularDatasetSpec
) -> tuple[list[dict[str, Any]], list[str], int]:
    """Combine the partial statistics: the features (in order), the labels (sorted) and the rows."""
    features = []
    for name, type_ in types.items():
        parts = [p["columns"][name] for p in partials]
        missing = sum(p["missing"] for p in parts)
        if type_ == NUMBER:
            count = sum(p["count"] for p in parts)
            if count == 0:
                raise InvalidArgument(f"Table source {spec.source!r}: column {name!r} has no values")
            mean = sum(p["sum"] for p in parts) / count
            variance = max(0.0, sum(p["sumsq"] for p in parts) / count - mean**2)
            features.append(
                {
                    "name": name,
                    "type": NUMBER,
                    "missing": missing,
                    "min": min(p["min"] for p in parts if p["min"] is not None),
                    "max": max(p["max"] for p in parts if p["max"] is not None),
                    "mean": round(mean, 6),
                    "std": round(math.sqrt(variance), 6),
                }
            )
        else:
            counts: dict[str, int] = {}
            for p in parts:
                for category, n in p["categories"].items():
                    counts[category] = counts.get(category, 0) + n
            if len(counts) > spec.max_categories:
                raise InvalidArgument(
                    f"Table source {spec.source!r}: text column {name!r} has more than "
                    f"{spec.max_categories} distinct values; it is not a category (drop it with "
                    "feature_columns or raise max_categories)"
                )
            if not counts:
                raise InvalidArgument(f"Table source {spec.source!r}: column {name!r} has no values")
            features.append({"name": name, "type": CATEGORY, "missing": missing, "categories": sorted(counts)})
    label_counts: dict[str, int] = {}
    for p in partials:
        for label, n in p["labels"].items():
            if label:
                label_counts[label] = label_counts.get(label, 0) + n
    labels = sorted(label_counts)
    if len(labels) < 2:
        raise InvalidArgument(
            f"Table source {spec.source!r} has {len(labels)} label(s) in column {spec.label!r}; "
            "a classifier needs 2 or more"
        )
    if len(labels) > spec.max_categories:
        raise InvalidArgument(
            f"Table source {spec.source!r}: label column {spec.label!r} has {len(labels)} distinct "
            f"values, more than {spec.max_categories}; is it a class?"
        )
    return features, labels, sum(p["rows"] for p in partials)


def encode_rows(
    batch: pa.Table, features: list[dict[str, Any]], labels: list[str], spec_json: str
) -> dict[str, np.ndarray]:
    """Rows -> ``{id, features (float32 bytes), label, split}``; unlabelled rows are dropped."""
    spec = TabularDatasetSpec.model_validate_json(spec_json)
    label_index = {label: i for i, label in enumerate(labels)}
    as_text = batch.column(LABEL_NAME).cast(pa.string())  # as the statistics pass named the labels
    raw_labels = [None if v is None else v.strip() for v in as_text.to_pylist()]
    keep = np.array([v in label_index for v in raw_labels], dtype=bool)
    matrix = FeatureSchema(features).encode_arrow({f["name"]: batch.column(f["name"]) for f in features})[keep]
    rows = [row.tobytes() for row in matrix]
    ids = np.array(
        [int.from_bytes(hashlib.blake2b(r, digest_size=8).digest(), "little") >> 1 for r in rows], dtype=np.int64
    )
    u = hash_uniform(spec.seed, ids, SPLIT_STREAM)
    split = np.full(len(ids), "train", dtype=object)
    split[u < spec.test_fraction] = "test"
    split[(u >= spec.test_fraction) & (u < spec.test_fraction + spec.val_fraction)] = "val"
    return {
        "id": ids,
        "features": np.array(rows, dtype=object),
        "label": np.array([label_index[v] for v, k in zip(raw_labels, keep) if k], dtype=np.int64),
        "split": split,
    }


def build_table_rows(
    source: ray.data.Dataset, spec: TabularDatasetSpec, feature_names: list[str]
) -> tuple[ray.data.Dataset, list[dict[str, Any]], list[str], dict[str, int]]:
    """The encoded rows (lazy), the feature schema, the labels and what cleaning dropped."""
    types = column_types(source.schema().base_schema, feature_names, spec.source)
    partials = [
        json.loads(row["partial"])
        for row in source.map_batches(
            column_statistics,
            fn_kwargs={"types": types, "max_categories": spec.max_categories},
            batch_size=BATCH_ROWS,
            batch_format="pyarrow",
        ).take_all()
    ]
    features, labels, source_rows = feature_schema(partials, types, spec)
    rows = source.map_batches(
        encode_rows,
        fn_kwargs={"features": features, "labels": labels, "spec_json": spec.model_dump_json()},
        batch_size=BATCH_ROWS,
        batch_format="pyarrow",
    )
    return rows, features, labels, {"source_rows": source_rows}


def split_totals(batch: dict[str, np.ndarray], num_classes: int) -> dict[str, np.ndarray]:
    """Per-split rows, classes and an order-independent digest of one batch (combined on the driver)."""
    splits = np.asarray(batch["split"]).astype(str)
    out: dict[str, list[Any]] = {"split": [], "count": [], "classes": [], "digest": []}
    for split in np.unique(splits):
        mask = splits == split
        ids = np.asarray(batch["id"], dtype=np.int64)[mask]
        key = ids.astype(np.uint64) + np.asarray(batch["label"], dtype=np.uint64)[mask] * np.uint64(7_919)
        with np.errstate(over="ignore"):
            digest = int(
                (hash_uniform(SPLITS.index(split) + 1, key.view(np.int64), 11) * 2.0**53)
                .astype(np.uint64)
                .sum(dtype=np.uint64)
            )
        out["split"].append(split)
        out["count"].append(int(mask.sum()))
        out["classes"].append(np.bincount(batch["label"][mask], minlength=num_classes)[:num_classes])
        out["digest"].append(digest)
    return {
        "split": np.array(out["split"], dtype=object),
        "count": np.array(out["count"], dtype=np.int64),
        "classes": np.stack(out["classes"]) if out["classes"] else np.zeros((0, num_classes), dtype=np.int64),
        "digest": np.array(out["digest"], dtype=np.uint64),
    }


@dataclass(frozen=True)
class TableRows:
    """A table build's encoded rows (lazy until written), its feature schema, labels and what
    cleaning counted."""

    dataset: ray.data.Dataset
    features: list[dict[str, Any]]
    labels: list[str]
    cleaning: dict[str, int]


@dataclass(frozen=True)
class TableSource:
    """A table source read into Ray Data, and the feature columns' names in order."""

    data: SourceData
    feature_names: list[str]

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint


class TabularBuilder:
    """Builds :class:`TabularDatasetSpec` versions; the dataset manager runs it (``builders.py``)."""

    spec_type = TabularDatasetSpec
    kind = TabularKind.name
    manifest_format = TABLE_MANIFEST_FORMAT

    def limits(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def read(self, spec: TabularDatasetSpec, storage_options: dict[str, Any], http_get: HttpGet) -> TableSource:
        return TableSource(*read_table_source(spec, storage_options, http_get))

    def rows(self, spec: TabularDatasetSpec, source: TableSource, streaming_bytes: int) -> TableRows:
        """The statistics pass runs here; the encoding pass runs as the rows are written."""
        rows, features, labels, cleaning = build_table_rows(source.data.dataset, spec, source.feature_names)
        return TableRows(rows.random_shuffle(seed=spec.seed), features, labels, cleaning)

    def describe(
        self, spec: TabularDatasetSpec, source: TableSource, rows: TableRows, files: list[ObjectInfo], storage: Storage
    ) -> dict[str, Any]:
        written = ray.data.read_parquet(
            [storage.arrow_path(f.key) for f in files], filesystem=storage.arrow_filesystem()
        )
        labels = rows.labels
        totals: dict[str, dict[str, Any]] = {}
        for row in written.map_batches(
            split_totals, fn_kwargs={"num_classes": len(labels)}, batch_size=BATCH_ROWS
        ).take_all():
            t = totals.setdefault(
                str(row["split"]), {"count": 0, "classes": np.zeros(len(labels), np.int64), "digest": 0}
            )
            t["count"] += int(row["count"])
            t["classes"] = t["classes"] + np.asarray(row["classes"])
            t["digest"] = (t["digest"] + int(row["digest"])) % 2**64
        splits = {
            split: {
                "rows": totals[split]["count"] if split in totals else 0,
                "per_class": (
                    {label: int(n) for label, n in zip(labels, totals[split]["classes"])} if split in totals else {}
                ),
                "files": split_file_entries(files, split),
            }
            for split in SPLITS
        }
        kept = sum(t["count"] for t in totals.values())
        return {
            "schema": {
                "id": "int64 (hash of the encoded row; equal rows share it and their split)",
                "features": "binary: float32 per feature in table.features order (categories as their index, "
                "missing as NaN)",
                "label": "int64 index into labels",
                "split": "hive partition: train | val | test",
            },
            "table": {"label_column": spec.label, "features": rows.features},
            "labels": labels,
            "splits": splits,
            "cleaning": {**rows.cleaning, "dropped_unlabelled": rows.cleaning["source_rows"] - kept, "rows": kept},
            "content_hash": splits_content_hash(totals),
        }

    def refusal(self, spec: TabularDatasetSpec, manifest: dict[str, Any]) -> str | None:
        if manifest["splits"]["train"]["rows"] == 0 or manifest["splits"]["val"]["rows"] == 0:
            return (
                f"Table source {spec.source!r} gave {manifest['cleaning']['rows']} labelled rows: "
                "too few for training and validation splits"
            )
        return None
