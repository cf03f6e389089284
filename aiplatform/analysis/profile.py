"""The profile of a dataset version: what is in it and what is wrong with it.

Every split is read (files verified against the manifest) and summarised: rows and class balance,
what the dataset's kind adds (``aiplatform.kinds``: for images the mean image and intensity
histograms, for text the lengths, vocabulary coverage and top tokens per class), and for every
kind exact duplicates within a split and leakage (the same input in more than one split).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any

import numpy as np

from aiplatform.datasets import DatasetManager, DatasetVersion
from aiplatform.datasets.spec import SPLITS
from aiplatform.kinds import kind_class


def profile_version(datasets: DatasetManager, version: DatasetVersion) -> dict[str, Any]:
    """The profile as JSON-ready data; charts are made from it (see ``analysis.report``)."""
    labels = version.labels
    kind = kind_class(version.kind)
    splits: dict[str, Any] = {}
    digests: dict[str, collections.Counter[str]] = {}
    for split in SPLITS:
        if not version.files(split):
            continue
        table = datasets.read_split_table(version, split)
        classes = np.bincount(table.column("label").to_numpy(), minlength=len(labels))
        summary: dict[str, Any] = {
            "rows": table.num_rows,
            "per_class": {label: int(n) for label, n in zip(labels, classes)},
        }
        kind_summary, keys = kind.profile_split(table, version.manifest)
        summary.update(kind_summary)
        digests[split] = collections.Counter(hashlib.blake2b(_as_bytes(k), digest_size=12).hexdigest() for k in keys)
        summary["duplicates"] = sum(n - 1 for n in digests[split].values() if n > 1)
        splits[split] = summary
    leakage = {
        f"{a}-{b}": len(digests[a].keys() & digests[b].keys())
        for i, a in enumerate(digests)
        for b in list(digests)[i + 1 :]
    }
    profile: dict[str, Any] = {
        "dataset": version.ref,
        "kind": version.kind,
        "labels": labels,
        "splits": splits,
        "class_balance": _class_balance(splits, labels),
        "duplicates": {split: s["duplicates"] for split, s in splits.items()},
        "leakage": {"pairs": leakage, "inputs_in_several_splits": sum(leakage.values())},
    }
    profile.update(kind.profile_extra(version.manifest, list(splits)))
    return profile


def _class_balance(splits: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Shares per class over the whole version, and the ratio of the largest class to the smallest."""
    totals = collections.Counter[str]()
    for summary in splits.values():
        totals.update(summary["per_class"])
    rows = max(1, sum(totals.values()))
    present = [totals[label] for label in labels if totals[label] > 0]
    return {
        "shares": {label: round(totals[label] / rows, 6) for label in labels},
        "imbalance_ratio": round(max(present) / min(present), 3) if present else None,
    }


def _as_bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode("utf-8")
