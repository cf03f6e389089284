"""Analyses as stored reports: JSON plus the charts (SVG, PNG) the UI shows.

Reports live in storage next to the artifacts they describe::

    [projects/<p>/]reports/analysis/datasets/<name>/<version>/profile.json
                                                  + class_balance.svg and the kind's charts
                                                    (``DatasetKind.profile_charts``:
                                                    mean_image_<split>.png, column_<column>.svg, ...)
    reports/analysis/drift/<model>/<report id>/drift.json        + <feature>.svg

A dataset's profile sits under its project's prefix (``aiplatform.storage.projects.project_prefix``:
none for ``default``, where profiles were before projects), as its dataset does: two projects may
each have a dataset ``x@1``, and each its own profile. A drift report sits under its model (names
are unique across projects). A chart's key so says whose it is (:func:`chart_owner`).

A dataset version never changes, so its profile is computed once and read back after that.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import numpy as np

from aiplatform.analysis.charts import bar_chart_svg, grayscale_png
from aiplatform.analysis.drift import REFERENCE_SPLIT, categorical_psi, drift_summary, numeric_psi
from aiplatform.analysis.profile import profile_version
from aiplatform.datasets import DatasetManager, DatasetVersion
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.kinds import kind_class, kind_for
from aiplatform.kinds.base import BarChart, Chart
from aiplatform.packaging import MODEL_FILE, read_package_files
from aiplatform.packaging.config import ModelConfig
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.results import PredictionRecord
from aiplatform.storage import Storage, validate_key
from aiplatform.storage.projects import DEFAULT_PROJECT, PROJECT_NAME, project_prefix

CHART_TYPES = {".svg": "image/svg+xml", ".png": "image/png"}
MAX_DRIFT_SAMPLES = 1000
REPORTS = "reports/analysis/"


def dataset_report_prefix(version: DatasetVersion, project: str = DEFAULT_PROJECT) -> str:
    """Where the profile of ``project``'s dataset version is kept."""
    return f"{project_prefix(project)}{REPORTS}datasets/{version.name}/{version.version}"


def analyze_dataset(datasets: DatasetManager, storage: Storage, ref: str, *, refresh: bool = False) -> dict[str, Any]:
    """The profile of dataset version ``ref`` (``name@version``) of the manager's project with
    its charts, stored once."""
    version = datasets.get_ref(ref)
    prefix = dataset_report_prefix(version, datasets.project)
    if not refresh and storage.exists(f"{prefix}/profile.json"):
        return json.loads(storage.get_bytes(f"{prefix}/profile.json"))
    profile = profile_version(datasets, version)
    return _store_report(storage, f"{prefix}/profile.json", profile, _dataset_charts(profile))


def analyze_drift(
    *,
    datasets: DatasetManager,
    storage: Storage,
    registry: RegistryAPI,
    recent: list[PredictionRecord],
    model: str,
    version: int | None = None,
    dataset_ref: str | None = None,
    split: str = REFERENCE_SPLIT,
) -> dict[str, Any]:
    """PSI per input feature and for the predicted classes: ``recent`` predictions of ``model``
    against a split (by default the held-out validation split) of the dataset its version was
    trained on (or ``dataset_ref``)."""
    target = registry.resolve(model, version if version is not None else _default_ref(registry, model))
    reference_version = datasets.get_ref(dataset_ref or _lineage_dataset(target))
    live = [r for r in recent if r.features][:MAX_DRIFT_SAMPLES]
    kind = kind_for(_model_config(storage, target))
    if reference_version.kind != kind.name:
        raise InvalidArgument(
            f"Dataset {reference_version.ref} holds {reference_version.kind} rows; model {model} "
            f"takes {kind.name} inputs"
        )
    table = datasets.read_split_table(reference_version, split)
    reference = kind.reference_features(table, reference_version.manifest)
    # A feature missing from some inputs (a table's empty cell) is compared over the inputs that have it.
    features = {
        name: numeric_psi(reference[name], np.array([r.features.get(name, np.nan) for r in live]))
        for name in kind.feature_names
        if any(name in r.features for r in live) and not np.isnan(reference[name]).all()
    }
    labels = reference_version.labels
    counts = np.bincount(table.column("label").to_numpy(), minlength=len(labels))
    features["predicted_class"] = categorical_psi(
        {label: float(n) for label, n in zip(labels, counts)}, [str(r.output.get("label")) for r in live], labels
    )
    report_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    prefix = f"{REPORTS}drift/{validate_key(model)}/{report_id}"
    report: dict[str, Any] = {
        "id": report_id,
        "model": model,
        "version": target.version,
        "versions_seen": sorted({r.version for r in live}),
        "dataset": reference_version.ref,
        "split": split,
        "reference_samples": table.num_rows,
        "live_samples": len(live),
        "live_window": _window(live),
        **drift_summary(features, len(live)),
        "features": features,
    }
    charts = {f"{chart_name(name)}.svg": _drift_chart(name, f).encode() for name, f in features.items()}
    return _store_report(storage, f"{prefix}/drift.json", report, charts)


def _store_report(storage: Storage, key: str, report: dict[str, Any], charts: dict[str, bytes]) -> dict[str, Any]:
    """Store the charts beside ``key``, then the report naming them (the report last: a report
    never names a chart that is not there)."""
    prefix = key.rsplit("/", 1)[0]
    for name, data in charts.items():
        storage.put_bytes(f"{prefix}/{name}", data)
    report["charts"] = {name.rsplit(".", 1)[0]: f"{prefix}/{name}" for name in sorted(charts)}
    report["created_at"] = time.time()
    storage.put_bytes(key, json.dumps(report, sort_keys=True).encode())
    return report


def chart_owner(key: str) -> tuple[str, str | None]:
    """Whose chart ``key`` is: ``(project, model)``, a dataset profile's project (``default``
    at the storage root) and no model, or a drift report's model (its project is the model's)
    and ``default``. Only keys under ``[projects/<p>/]reports/analysis/`` are charts.

    Raises:
        InvalidArgument: the key is not an analysis chart's.
    """
    validate_key(key)
    suffix = key[key.rfind(".") :] if "." in key else ""
    project, rest = DEFAULT_PROJECT, key
    parts = key.split("/", 2)
    if parts[0] == "projects" and len(parts) == 3 and PROJECT_NAME.fullmatch(parts[1]):
        project, rest = parts[1], parts[2]
    kind, _, after = rest.removeprefix(REPORTS).partition("/")
    if not rest.startswith(REPORTS) or suffix not in CHART_TYPES or not after:
        raise InvalidArgument(f"{key!r} is not an analysis chart")
    if kind == "drift" and project == DEFAULT_PROJECT:
        return project, after.split("/", 1)[0]
    if kind == "datasets" and project_prefix(project) + rest == key:
        return project, None
    raise InvalidArgument(f"{key!r} is not an analysis chart")


def read_chart(storage: Storage, key: str) -> tuple[bytes, str]:
    """A stored chart and its media type; only keys :func:`chart_owner` names an owner of are charts."""
    chart_owner(key)
    suffix = key[key.rfind(".") :]
    if not storage.exists(key):
        raise NotFound(f"Chart {key!r} not found")
    return storage.get_bytes(key), CHART_TYPES[suffix]


def _default_ref(registry: RegistryAPI, model: str) -> str:
    return "production" if "production" in registry.aliases(model) else "latest"


def _lineage_dataset(version: ModelVersion) -> str:
    ref = version.lineage.get("dataset")
    if not ref:
        raise NotFound(
            f"Model version (name={version.name}, version={version.version}) names no dataset in its "
            "lineage; give the dataset to compare with"
        )
    return str(ref)


def _model_config(storage: Storage, version: ModelVersion) -> ModelConfig:
    files, _ = read_package_files(storage.get_bytes(version.package_key))
    return ModelConfig.parse(json.loads(files[MODEL_FILE]))


def _window(records: list[PredictionRecord]) -> dict[str, float | None]:
    times = [r.created_at for r in records]
    return {"from": min(times) if times else None, "to": max(times) if times else None}


def _dataset_charts(profile: dict[str, Any]) -> dict[str, bytes]:
    """The class balance, then the charts the dataset's kind draws from its part of the profile."""
    labels = profile["labels"]
    shares = profile["class_balance"]["shares"]
    charts: list[Chart] = [
        BarChart("class_balance", "class balance (share of rows)", [shares[label] for label in labels], labels)
    ]
    charts += kind_class(profile["kind"]).profile_charts(profile)
    return dict(_drawn(chart) for chart in charts)


def _drawn(chart: Chart) -> tuple[str, bytes]:
    """A chart's file name and contents: bars as SVG, an image as a PNG."""
    if isinstance(chart, BarChart):
        return f"{chart_name(chart.name)}.svg", bar_chart_svg(chart.title, chart.values, chart.labels).encode()
    return f"{chart_name(chart.name)}.png", grayscale_png(chart.pixels)


def chart_name(name: str) -> str:
    """A feature or column name as a chart's file name (storage keys allow ``[A-Za-z0-9._=+@-]``)."""
    return re.sub(r"[^A-Za-z0-9._=+@-]", "_", name)[:100].lstrip(".") or "_"


def _drift_chart(name: str, feature: dict[str, Any]) -> str:
    title = f"{name}: PSI {feature['psi']:.3f} ({feature['verdict']})"
    if "categories" in feature:
        labels = feature["categories"]
    else:
        edges = feature["edges"]
        labels = [f"<{edges[0]:.3g}"] + [f"{e:.3g}+" for e in edges]
    return bar_chart_svg(title, feature["reference"], labels, compare=feature["live"])
