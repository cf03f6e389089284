"""The profile of a dataset version: what is in it and what is wrong with it.

Every split is read (files verified against the manifest) and summarised: rows and class balance;
for images the mean image, the pixel intensity histogram and per-image mean intensity; for text
the length distribution, vocabulary coverage and top tokens per class (from the manifest, where
the build computed them over the whole version); and for both, exact duplicates within a split
and leakage (the same input in more than one split).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from aiplatform.analysis.features import image_feature_columns
from aiplatform.datasets import DatasetManager, DatasetVersion
from aiplatform.datasets.spec import SPLITS
from aiplatform.evaluation import table_batches
from aiplatform.preprocessing import decode_rows
from aiplatform.text import normalize_text

INTENSITY_BINS = 16


def profile_version(datasets: DatasetManager, version: DatasetVersion) -> dict[str, Any]:
    """The profile as JSON-ready data; charts are made from it (see ``analysis.report``)."""
    labels = version.labels
    splits: dict[str, Any] = {}
    digests: dict[str, collections.Counter[str]] = {}
    for split in SPLITS:
        if not version.files(split):
            continue
        table = datasets.read_split_table(version, split)
        classes = np.bincount(table.column("label").to_numpy(), minlength=len(labels))
        summary: dict[str, Any] = {"rows": table.num_rows,
                                   "per_class": {label: int(n) for label, n in zip(labels, classes)}}
        if version.kind == "text":
            texts = [str(t) for t in table.column("text").to_pylist()]
            keys = [normalize_text(t).lower() for t in texts]
        else:
            summary.update(_image_summary(table, version.image_shape))
            keys = [row for row in table.column("image").to_pylist()]
        digests[split] = collections.Counter(hashlib.blake2b(_as_bytes(k), digest_size=12).hexdigest() for k in keys)
        summary["duplicates"] = sum(n - 1 for n in digests[split].values() if n > 1)
        splits[split] = summary
    leakage = {f"{a}-{b}": len(digests[a].keys() & digests[b].keys())
               for i, a in enumerate(digests) for b in list(digests)[i + 1:]}
    profile: dict[str, Any] = {
        "dataset": version.ref, "kind": version.kind, "labels": labels, "splits": splits,
        "class_balance": _class_balance(splits, labels),
        "duplicates": {split: s["duplicates"] for split, s in splits.items()},
        "leakage": {"pairs": leakage, "inputs_in_several_splits": sum(leakage.values())},
    }
    if version.kind == "text":
        text_profile = version.manifest.get("profile", {})
        profile["text"] = {
            "lengths": {split: text_profile.get(split, {}) for split in splits},
            "vocabulary": text_profile.get("vocabulary", {}),
            "top_tokens": text_profile.get("top_tokens", {}),
            "cleaning": version.manifest.get("cleaning", {}),
        }
    return profile


def _image_summary(table: pa.Table, shape: tuple[int, int, int]) -> dict[str, Any]:
    total = np.zeros(shape, dtype=np.float64)
    histogram = np.zeros(INTENSITY_BINS, dtype=np.int64)
    means: list[np.ndarray] = []
    for batch in _image_batches(table, shape):
        total += batch.sum(axis=0, dtype=np.float64) / 255.0
        histogram += np.bincount((batch.reshape(-1).astype(np.int64) * INTENSITY_BINS) // 256, minlength=INTENSITY_BINS)
        means.append(image_feature_columns(batch)["mean_intensity"])
    per_image = np.concatenate(means) if means else np.zeros(0)
    pixels = max(1, int(histogram.sum()))
    return {
        "mean_image": np.round(total / max(1, table.num_rows), 5).tolist(),
        "intensity_histogram": {"bins": INTENSITY_BINS, "shares": [round(int(h) / pixels, 6) for h in histogram]},
        "mean_intensity": round(float(per_image.mean()), 6) if per_image.size else 0.0,
        "image_mean_intensity_histogram": _histogram(per_image, 0.0, 1.0, 20),
    }


def _image_batches(table: pa.Table, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    for batch in table_batches(table, 4096):
        yield decode_rows(batch["image"], shape)


def _histogram(values: np.ndarray, low: float, high: float, bins: int) -> dict[str, Any]:
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def _class_balance(splits: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Shares per class over the whole version, and the ratio of the largest class to the smallest."""
    totals = collections.Counter[str]()
    for summary in splits.values():
        totals.update(summary["per_class"])
    rows = max(1, sum(totals.values()))
    present = [totals[label] for label in labels if totals[label] > 0]
    return {"shares": {label: round(totals[label] / rows, 6) for label in labels},
            "imbalance_ratio": round(max(present) / min(present), 3) if present else None}


def _as_bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode("utf-8")
