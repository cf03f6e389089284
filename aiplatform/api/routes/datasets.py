"""Dataset versions with their manifest and profile, of the request's project (``ProjectDep``):
listings show its datasets only, and another project's dataset is a 404 like an unknown one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from aiplatform.api.deps import DatasetsDep, ProjectDep
from aiplatform.api.schemas.datasets import DatasetList, DatasetProfile, Manifest, Samples
from aiplatform.datasets import DatasetVersion
from aiplatform.datasets.manager import MAX_SAMPLES

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def summary(version: DatasetVersion) -> dict[str, Any]:
    manifest = version.manifest
    return {
        "name": version.name,
        "version": version.version,
        "ref": version.ref,
        "created_at": manifest.get("created_at"),
        "labels": manifest.get("labels"),
        "rows": {split: info["rows"] for split, info in manifest.get("splits", {}).items()},
        "content_hash": manifest.get("content_hash"),
        "image": manifest.get("image"),
    }


@router.get("", response_model=DatasetList)
def list_datasets(datasets: DatasetsDep, project: ProjectDep, name: str | None = None) -> dict[str, Any]:
    return {"datasets": [summary(v) for v in datasets.in_project(project).list_versions(name)]}


@router.get("/{name}/{version}", response_model=Manifest)
def get_manifest(name: str, version: str, datasets: DatasetsDep, project: ProjectDep) -> dict[str, Any]:
    return datasets.in_project(project).get(name, version).manifest


@router.get("/{name}/{version}/samples", response_model=Samples)
def get_samples(
    name: str,
    version: str,
    datasets: DatasetsDep,
    project: ProjectDep,
    split: str = "test",
    label: str | None = Query(None, max_length=200),
    ids: str | None = Query(None, max_length=10_000, description="comma-separated row ids"),
    limit: int = Query(24, ge=1, le=MAX_SAMPLES),
) -> dict[str, Any]:
    """Rows to look at: the first ``limit`` of a split (of one class with ``label``), or the rows
    ``ids`` names, each with its class and an image (PNG data URL), a text or its values."""
    datasets = datasets.in_project(project)
    found = datasets.get(name, version)
    wanted = [i for i in ids.split(",") if i] if ids is not None else None
    return {
        "ref": found.ref,
        "split": split,
        "samples": datasets.samples(found, split, label=label, ids=wanted, limit=limit),
    }


@router.get("/{name}/{version}/profile", response_model=DatasetProfile)
def get_profile(name: str, version: str, datasets: DatasetsDep, project: ProjectDep) -> dict[str, Any]:
    manifest = datasets.in_project(project).get(name, version).manifest
    per_class = {split: info.get("per_class") for split, info in manifest.get("splits", {}).items()}
    return {
        "ref": f"{name}@{version}",
        "labels": manifest.get("labels"),
        "per_class": per_class,
        "profile": manifest.get("profile", {}),
    }
