"""Population stability index (PSI) between a reference sample and live inputs.

PSI = sum over bins of (live% - ref%) * ln(live% / ref%). Numeric features are binned at the
reference's deciles (so each bin holds a tenth of the reference), categories by value. Reading,
as commonly used in model monitoring: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25
a significant one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument

BINS = 10
EPSILON = 1e-4
MODERATE_PSI = 0.1
SIGNIFICANT_PSI = 0.25
MIN_LIVE_SAMPLES = 30
REFERENCE_SPLIT = "val"
"""The default reference for live inputs: a held-out split. The training split is biased for
features that depend on what was fitted on it (a text's out-of-vocabulary share is lower on the
very texts the vocabulary came from), so it would report drift where there is none."""


def verdict(score: float) -> str:
    if score >= SIGNIFICANT_PSI:
        return "significant"
    return "moderate" if score >= MODERATE_PSI else "stable"


def numeric_psi(reference: np.ndarray, live: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """PSI of one numeric feature, with the bin edges and both distributions (for charts).
    Missing values (NaN) are left out of both."""
    reference, live = np.asarray(reference, dtype=np.float64), np.asarray(live, dtype=np.float64)
    reference, live = reference[~np.isnan(reference)], live[~np.isnan(live)]
    if not reference.size or not live.size:
        raise InvalidArgument("A feature's drift needs values in both the reference and the live inputs")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = _shares(np.searchsorted(edges, reference, side="right"), len(edges) + 1)
    actual = _shares(np.searchsorted(edges, live, side="right"), len(edges) + 1)
    score = _psi(expected, actual)
    return {
        "psi": score,
        "verdict": verdict(score),
        "edges": [round(float(e), 6) for e in edges],
        "reference": [round(float(x), 6) for x in expected],
        "live": [round(float(x), 6) for x in actual],
        "reference_mean": float(reference.mean()),
        "live_mean": float(live.mean()),
    }


def categorical_psi(reference: dict[str, float], live: Sequence[str], categories: Sequence[str]) -> dict[str, Any]:
    """PSI of a categorical distribution (e.g. predicted classes against the class balance)."""
    total = sum(reference.get(c, 0.0) for c in categories) or 1.0
    expected = np.array([reference.get(c, 0.0) / total for c in categories])
    counts = np.array([sum(1 for x in live if x == c) for c in categories], dtype=np.float64)
    actual = counts / max(1.0, counts.sum())
    score = _psi(expected, actual)
    return {
        "psi": score,
        "verdict": verdict(score),
        "categories": list(categories),
        "reference": [round(float(x), 6) for x in expected],
        "live": [round(float(x), 6) for x in actual],
    }


def drift_summary(features: dict[str, dict[str, Any]], live_samples: int) -> dict[str, Any]:
    """Overall score (the largest feature PSI) and verdict, and the features that drifted."""
    if live_samples < MIN_LIVE_SAMPLES:
        raise InvalidArgument(
            f"Drift needs at least {MIN_LIVE_SAMPLES} recent predictions with input features; found {live_samples}"
        )
    worst = max(features.items(), key=lambda item: item[1]["psi"])
    return {
        "score": worst[1]["psi"],
        "verdict": verdict(worst[1]["psi"]),
        "worst_feature": worst[0],
        "drifted": sorted(name for name, f in features.items() if f["verdict"] != "stable"),
    }


def _shares(bin_index: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount(bin_index, minlength=bins).astype(np.float64)
    return counts / max(1.0, counts.sum())


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.clip(expected, EPSILON, None), np.clip(actual, EPSILON, None)
    return round(float(np.sum((a - e) * np.log(a / e))), 6)
