"""Compression with the platform's storage, registry and datasets: in this process (``aip``'s job)
or as a Ray task, so that the API's process only waits for the report while the work (evaluation
on the test split, latency runs) happens on the cluster's workers."""

from __future__ import annotations

from typing import Any

from aiplatform.settings import Settings


def compress(
    settings: Settings,
    name: str,
    ref: str | int,
    method: str,
    max_accuracy_drop: float | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Run one compression with the platform's storage, registry and datasets (the model's
    project's: the test split its lineage names is there); the report as a dict. The version it
    registers is ``created_by``'s (the caller who asked for it)."""
    from aiplatform.compression.compressor import compress_version
    from aiplatform.datasets import DatasetManager
    from aiplatform.registry import RegistryClient
    from aiplatform.storage import storage_from_settings
    from aiplatform.storage.projects import DEFAULT_PROJECT

    storage = storage_from_settings(settings)
    registry = RegistryClient.connect(settings)
    project = registry.model_project(name) or DEFAULT_PROJECT
    report = compress_version(
        name=name,
        ref=ref,
        method=method,
        storage=storage,
        registry=registry,
        datasets=DatasetManager.from_settings(storage, settings, project=project),
        max_accuracy_drop=settings.compression_max_accuracy_drop if max_accuracy_drop is None else max_accuracy_drop,
        created_by=created_by,
    )
    return report.to_dict()


async def compress_on_cluster(
    settings: Settings,
    name: str,
    ref: str | int,
    method: str,
    max_accuracy_drop: float | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """``compress`` in a Ray task reserving ``background_task_cpus``; awaits its report.
    Platform errors raised by the task come back as themselves."""
    from aiplatform.compression.methods import parse_method
    from aiplatform.runtime import run_as_task

    parse_method(method)  # a bad method is refused before any task starts
    return await run_as_task(
        compress, settings, name, ref, method, max_accuracy_drop, created_by, num_cpus=settings.background_task_cpus
    )
