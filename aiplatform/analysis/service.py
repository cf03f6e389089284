"""Analyses with the platform's storage, registry, datasets and result store: in this process (the
analysis job) or as a Ray task (the API)."""

from __future__ import annotations

from typing import Any

from aiplatform.analysis.drift import REFERENCE_SPLIT
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings
from aiplatform.storage.projects import DEFAULT_PROJECT


def profile(
    settings: Settings, dataset_ref: str, refresh: bool = False, project: str = DEFAULT_PROJECT
) -> dict[str, Any]:
    """The profile of ``project``'s dataset version ``dataset_ref`` (another project's is not found)."""
    from aiplatform.analysis.report import analyze_dataset
    from aiplatform.datasets import DatasetManager
    from aiplatform.storage import storage_from_settings

    if "@" not in dataset_ref:
        raise InvalidArgument(f"Dataset reference {dataset_ref!r} must look like NAME@VERSION")
    storage = storage_from_settings(settings)
    datasets = DatasetManager.from_settings(storage, settings, project=project)
    return analyze_dataset(datasets, storage, dataset_ref, refresh=refresh)


def drift(
    settings: Settings,
    model: str,
    version: int | None = None,
    dataset_ref: str | None = None,
    split: str = REFERENCE_SPLIT,
    limit: int = 1000,
    since: float | None = None,
    project: str = DEFAULT_PROJECT,
) -> dict[str, Any]:
    """Drift of ``model``'s recent inputs against a reference dataset of ``project``."""
    from aiplatform.alerting.actor import AlertClient
    from aiplatform.analysis.report import analyze_drift
    from aiplatform.datasets import DatasetManager
    from aiplatform.registry import RegistryClient
    from aiplatform.results import ResultClient
    from aiplatform.results.export import recent_records
    from aiplatform.storage import storage_from_settings

    storage = storage_from_settings(settings)
    recent = recent_records(
        ResultClient.connect(settings), storage, model=model, version=version, since=since, limit=limit
    )
    report = analyze_drift(
        datasets=DatasetManager.from_settings(storage, settings, project=project),
        storage=storage,
        registry=RegistryClient.connect(settings),
        recent=recent,
        model=model,
        version=version,
        dataset_ref=dataset_ref,
        split=split,
    )
    # The alert engine raises drift alerts from the latest scores (and exports them as a metric).
    AlertClient.connect(settings).record_drift(model, {name: f["psi"] for name, f in report["features"].items()})
    return report


async def profile_on_cluster(
    settings: Settings, dataset_ref: str, refresh: bool = False, project: str = DEFAULT_PROJECT
) -> dict[str, Any]:
    from aiplatform.runtime import run_as_task

    return await run_as_task(profile, settings, dataset_ref, refresh, project, num_cpus=settings.background_task_cpus)


async def drift_on_cluster(
    settings: Settings,
    model: str,
    version: int | None = None,
    dataset_ref: str | None = None,
    split: str = REFERENCE_SPLIT,
    limit: int = 1000,
    since: float | None = None,
    project: str = DEFAULT_PROJECT,
) -> dict[str, Any]:
    from aiplatform.runtime import run_as_task

    return await run_as_task(
        drift,
        settings,
        model,
        version,
        dataset_ref,
        split,
        limit,
        since,
        project,
        num_cpus=settings.background_task_cpus,
    )
