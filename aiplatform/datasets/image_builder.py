"""Image dataset versions on Ray Data: rows of raw pixels, a seeded split by content, augmented
copies of training images, per-split pixel statistics.

Sources (``mnist``, ``idx:``, ``folder:``, ``parquet:``; ``sources.py``) become rows
``{id, image, label, source_split}`` whose id is the content hash of the image; each row's split
is a seeded hash of its id (a source's own test split is kept), train rows gain ``augment.copies``
random affine variants, and a source up to the manager's streaming size is shuffled globally
before it is written.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray.data

from aiplatform.datasets.augment import hash_uniform, random_affine
from aiplatform.datasets.execution import bounded_data
from aiplatform.datasets.source_policy import HttpGet
from aiplatform.datasets.sources import SourceData, read_source
from aiplatform.datasets.spec import SPLITS, AugmentSpec, ImageDatasetSpec, split_file_entries
from aiplatform.kinds import ImageKind
from aiplatform.storage import ObjectInfo, Storage

IMAGE_MANIFEST_FORMAT = 1
HISTOGRAM_BINS = 16
SPLIT_STREAM = 7
LOCAL_STATISTICS_BYTES = 64 << 20
"""A version's files up to this size are profiled in the building process, not by Ray Data."""
STATISTICS_BATCH_ROWS = 4096
"""Rows profiled at once (each becomes floats: 4096 28x28 images are ~25 MB of them)."""


@dataclass(frozen=True)
class ImageRows:
    """An image build's rows, split and augmented (lazy until written)."""

    dataset: ray.data.Dataset


class ImageBuilder:
    """Builds :class:`ImageDatasetSpec` versions; the dataset manager runs it (``builders.py``)."""

    spec_type = ImageDatasetSpec
    kind = ImageKind.name
    manifest_format = IMAGE_MANIFEST_FORMAT

    def limits(self) -> AbstractContextManager[None]:
        """Image rows are large: blocks and the bytes in flight are bounded for the whole build."""
        return bounded_data()

    def read(self, spec: ImageDatasetSpec, storage_options: dict[str, Any], http_get: HttpGet) -> SourceData:
        return read_source(spec, storage_options, http_get)

    def rows(self, spec: ImageDatasetSpec, source: SourceData, streaming_bytes: int) -> ImageRows:
        rows = source.dataset.map_batches(assign_splits, fn_kwargs={"spec": spec}, batch_size=1024)
        if source.stored_bytes is None or source.stored_bytes <= streaming_bytes:
            # Files hold rows in random order (class-sorted sources would otherwise give training
            # one class per block). A larger source streams from read to write instead: a global
            # shuffle holds every row in the object store at once; its rows were mixed where they
            # were read (an image folder's files are read in a seeded random order).
            rows = rows.random_shuffle(seed=spec.seed)
        return ImageRows(rows)

    def describe(
        self, spec: ImageDatasetSpec, source: SourceData, rows: ImageRows, files: list[ObjectInfo], storage: Storage
    ) -> dict[str, Any]:
        stats = statistics(storage, files, len(source.labels))
        splits: dict[str, Any] = {}
        for split in SPLITS:
            s = stats.get(split)
            splits[split] = {
                "rows": s["count"] if s else 0,
                "per_class": ({label: int(n) for label, n in zip(source.labels, s["classes"])} if s else {}),
                "files": split_file_entries(files, split),
            }
        return {
            "schema": {
                "id": "int64 (content hash of the image bytes)",
                "image": "binary: raw uint8, height x width x channels, row-major",
                "label": "int64 index into labels",
                "variant": "int32 (0 original, k>0 the k-th augmented copy)",
                "split": "hive partition: train | val | test",
            },
            "image": {"height": spec.image_size, "width": spec.image_size, "channels": spec.channels},
            "labels": source.labels,
            "splits": splits,
            "content_hash": content_hash(stats),
            "profile": {
                split: {
                    "mean_intensity": s["mean"],
                    "std_intensity": s["std"],
                    "intensity_histogram": s["hist"],
                }
                for split, s in stats.items()
            },
        }

    def refusal(self, spec: ImageDatasetSpec, manifest: dict[str, Any]) -> str | None:
        if manifest["splits"]["train"]["rows"] == 0:
            return f"Dataset source {spec.source!r} produced no training rows"
        return None


def assign_splits(batch: dict[str, np.ndarray], spec: ImageDatasetSpec) -> dict[str, np.ndarray]:
    """Seeded split by row id; train rows gain augmented copies when the spec asks."""
    ids = np.asarray(batch["id"], dtype=np.int64)
    source_split = np.asarray(batch["source_split"]).astype(str)
    u = hash_uniform(spec.seed, ids, SPLIT_STREAM)
    split = np.where(source_split == "test", "test", "train").astype(object)
    if not (source_split == "test").any() and not (source_split == "train").any():
        split[u < spec.test_fraction] = "test"
        split[(u >= spec.test_fraction) & (u < spec.test_fraction + spec.val_fraction)] = "val"
    else:
        split[(source_split != "test") & (u < spec.val_fraction)] = "val"
    out = {
        "id": ids,
        "image": np.asarray(batch["image"], dtype=object),
        "label": np.asarray(batch["label"], dtype=np.int64),
        "split": split,
        "variant": np.zeros(len(ids), dtype=np.int32),
    }
    if spec.augment is not None:
        out = _with_augmented_copies(out, spec.augment, spec)
    return out


def _with_augmented_copies(
    rows: dict[str, np.ndarray], augment: AugmentSpec, spec: ImageDatasetSpec
) -> dict[str, np.ndarray]:
    train = rows["split"] == "train"
    if not train.any():
        return rows
    shape = (spec.image_size, spec.image_size, spec.channels)
    images = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(shape) for b in rows["image"][train]])
    parts = [rows]
    for copy_index in range(augment.copies):
        warped = random_affine(images, rows["id"][train], copy_index, augment, spec.seed)
        parts.append(
            {
                "id": rows["id"][train],
                "image": np.array([w.tobytes() for w in warped], dtype=object),
                "label": rows["label"][train],
                "split": rows["split"][train],
                "variant": np.full(int(train.sum()), copy_index + 1, dtype=np.int32),
            }
        )
    return {key: np.concatenate([p[key] for p in parts]) for key in rows}


def split_statistics(batch: dict[str, np.ndarray], num_classes: int) -> dict[str, np.ndarray]:
    """Per-split partial sums for one batch (combined in the driver)."""
    out: dict[str, list[Any]] = {
        "split": [],
        "count": [],
        "sum": [],
        "sumsq": [],
        "hist": [],
        "classes": [],
        "digest": [],
    }
    splits = np.asarray(batch["split"]).astype(str)
    for split in np.unique(splits):
        mask = splits == split
        out["digest"].append(_rows_digest(split, batch, mask))
        pixels = np.frombuffer(b"".join(batch["image"][mask]), dtype=np.uint8).astype(np.float64)
        out["split"].append(split)
        out["count"].append(int(mask.sum()))
        out["sum"].append(pixels.sum() / 255.0)
        out["sumsq"].append(np.square(pixels / 255.0).sum())
        out["hist"].append(np.histogram(pixels, bins=HISTOGRAM_BINS, range=(0, 256))[0])
        out["classes"].append(np.bincount(batch["label"][mask], minlength=num_classes)[:num_classes])
    return {
        "split": np.array(out["split"], dtype=object),
        "count": np.array(out["count"], dtype=np.int64),
        "sum": np.array(out["sum"]),
        "sumsq": np.array(out["sumsq"]),
        "hist": np.stack(out["hist"]) if out["hist"] else np.zeros((0, HISTOGRAM_BINS)),
        "classes": np.stack(out["classes"]) if out["classes"] else np.zeros((0, num_classes)),
        "digest": np.array(out["digest"], dtype=np.uint64),
    }


def _rows_digest(split: str, batch: dict[str, np.ndarray], mask: np.ndarray) -> int:
    """Order-independent digest of rows: the sum (mod 2**64) of a hash of each row's identity.

    ``id`` already hashes the image bytes; variants are fixed by (id, variant, spec).
    """
    split_code = SPLITS.index(split) + 1
    ids = np.asarray(batch["id"], dtype=np.int64)[mask]
    key = (
        ids.astype(np.uint64) * np.uint64(31)
        + np.asarray(batch["variant"], dtype=np.uint64)[mask] * np.uint64(1_000_003)
        + np.asarray(batch["label"], dtype=np.uint64)[mask] * np.uint64(7_919)
    )
    row_hashes = (hash_uniform(split_code, key.view(np.int64), 11) * 2.0**53).astype(np.uint64)
    with np.errstate(over="ignore"):
        return int(row_hashes.sum(dtype=np.uint64))


def statistics(storage: Storage, files: list[ObjectInfo], num_classes: int) -> dict[str, dict[str, Any]]:
    """Per split: rows, rows per class, pixel mean, spread and histogram, and a row digest."""
    if not files:
        return {}
    if sum(f.size for f in files) <= LOCAL_STATISTICS_BYTES:
        partial = _local_partial_statistics(storage, files, num_classes)
    else:
        dataset = ray.data.read_parquet(
            [storage.arrow_path(f.key) for f in files],
            filesystem=storage.arrow_filesystem(),
        )
        partial = dataset.map_batches(
            split_statistics, fn_kwargs={"num_classes": num_classes}, batch_size=STATISTICS_BATCH_ROWS
        ).take_all()
    totals: dict[str, dict[str, Any]] = {}
    for row in partial:
        t = totals.setdefault(
            str(row["split"]),
            {
                "count": 0,
                "sum": 0.0,
                "sumsq": 0.0,
                "digest": 0,
                "hist": np.zeros(HISTOGRAM_BINS),
                "classes": np.zeros(num_classes),
            },
        )
        t["digest"] = (t["digest"] + int(row["digest"])) % 2**64
        t["count"] += int(row["count"])
        t["sum"] += float(row["sum"])
        t["sumsq"] += float(row["sumsq"])
        t["hist"] = t["hist"] + np.asarray(row["hist"])
        t["classes"] = t["classes"] + np.asarray(row["classes"])
    result = {}
    for split, t in totals.items():
        pixels = max(1.0, float(t["hist"].sum()))
        mean = t["sum"] / pixels
        result[split] = {
            "count": t["count"],
            "classes": [int(c) for c in t["classes"]],
            "mean": round(mean, 6),
            "std": round(float(np.sqrt(max(0.0, t["sumsq"] / pixels - mean**2))), 6),
            "hist": [round(float(h) / pixels, 6) for h in t["hist"]],
            "digest": t["digest"],
        }
    return result


def _local_partial_statistics(storage: Storage, files: list[ObjectInfo], num_classes: int) -> list[dict[str, Any]]:
    """The partial sums of a small version, a batch of a file at a time in this process: below
    tens of MB a Ray Data pass spends seconds scheduling work that takes a fraction of one
    here. Batches are as large as the Ray pass's: a whole file at once took 2.5 GB of floats
    for a 38 MB version."""
    partial: list[dict[str, Any]] = []
    filesystem = storage.arrow_filesystem()
    for entry in files:
        split = entry.key.split("/split=", 1)[1].split("/", 1)[0]
        with filesystem.open_input_file(storage.arrow_path(entry.key)) as handle:
            for record_batch in pq.ParquetFile(handle).iter_batches(batch_size=STATISTICS_BATCH_ROWS):
                batch = {
                    name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in record_batch.schema.names
                }
                batch["split"] = np.full(record_batch.num_rows, split, dtype=object)
                sums = split_statistics(batch, num_classes)
                partial += [{key: values[i] for key, values in sums.items()} for i in range(len(sums["split"]))]
    return partial


def content_hash(stats: dict[str, dict[str, Any]]) -> str:
    """sha256 over each split's row count and row digest: equal rows give equal hashes, however
    they were cut into files."""
    text = "\n".join(f"{split}:{stats[split]['count']}:{stats[split]['digest']}" for split in sorted(stats))
    return hashlib.sha256(text.encode()).hexdigest()
