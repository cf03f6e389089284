"""A finished training run as a model version: its ``model.json``, metrics and lineage, packaged and
published through the registry (which knows nothing of training)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiplatform.packaging import build_package
from aiplatform.registry import ModelVersion, RegistryAPI, validate_model_name
from aiplatform.registry.publish import publish_package
from aiplatform.storage import Storage
from aiplatform.training.catalog import get_template
from aiplatform.training.outcome import TrainingOutcome


def model_config_for(outcome: TrainingOutcome, name: str) -> dict[str, Any]:
    """The ``model.json`` of a classifier trained by the engine (its template says the task and
    what inputs it takes)."""
    template = get_template(outcome.template)
    return {
        "name": name,
        "template": outcome.template,
        "task": template.task,
        "architecture": outcome.architecture,
        "hyperparameters": outcome.params,
        "input": template.input_spec(outcome.dataset, outcome.preprocessing),
        "labels": outcome.dataset.labels,
        "preprocessing": outcome.preprocessing,
        "output": {"type": "class_probabilities", "num_classes": len(outcome.dataset.labels)},
    }


@dataclass(frozen=True)
class ModelPackage:
    """A built package not yet registered, with what its registry entry records."""

    data: bytes
    template: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    run_name: str


def package_model(outcome: TrainingOutcome, *, name: str, lineage: dict[str, Any] | None = None) -> ModelPackage:
    """The run's weights (or model file), ``model.json``, metrics and lineage as a package."""
    validate_model_name(name)
    final_epoch = outcome.history[-1] if outcome.history else {}
    metrics = {
        **outcome.test_metrics,
        "val_accuracy": final_epoch.get("val_accuracy"),
        "val_loss": final_epoch.get("val_loss"),
        "train_loss": final_epoch.get("train_loss"),
        "samples_per_second": final_epoch.get("samples_per_second"),
        "epochs": len(outcome.history),
        "history": outcome.history,
    }
    full_lineage = {
        "method": "train",
        "template": outcome.template,
        "run_name": outcome.run_name,
        "dataset": outcome.dataset.ref,
        "dataset_content_hash": outcome.dataset.manifest["content_hash"],
        "checkpoint": outcome.checkpoint_uri,
        "parent": None,
        "used_gpu": outcome.used_gpu,
        **(lineage or {}),
    }
    data = build_package(
        model_config=model_config_for(outcome, name),
        state_dict=outcome.state_dict,
        model_file=outcome.model_file,
        metrics=metrics,
        lineage=full_lineage,
    )
    return ModelPackage(data, outcome.template, metrics, full_lineage, outcome.run_name)


def save_candidate(storage: Storage, key: str, package: ModelPackage) -> None:
    """Keep a built package unregistered (a sweep's trial: only the best one becomes a version):
    the package first, then its record, so a record found always has its package."""
    record = {
        "template": package.template,
        "metrics": package.metrics,
        "lineage": package.lineage,
        "run_name": package.run_name,
    }
    storage.put_bytes(key, package.data)
    storage.put_bytes(f"{key}.json", json.dumps(record).encode())


def load_candidate(storage: Storage, key: str) -> ModelPackage:
    """A package kept by :func:`save_candidate` (its bytes checked against their recorded digest)."""
    record = json.loads(storage.get_bytes(f"{key}.json"))
    return ModelPackage(
        storage.get_bytes(key), record["template"], record["metrics"], record["lineage"], record["run_name"]
    )


def register_package(package: ModelPackage, *, name: str, storage: Storage, registry: RegistryAPI) -> ModelVersion:
    """Store a built package by content and register it as the next version of ``name`` (once per run)."""
    return publish_package(
        package.data,
        name=name,
        template=package.template,
        storage=storage,
        registry=registry,
        metrics=package.metrics,
        lineage=package.lineage,
        idempotency_key=package.run_name,
    )


def publish_model(
    outcome: TrainingOutcome,
    *,
    name: str,
    storage: Storage,
    registry: RegistryAPI,
    lineage: dict[str, Any] | None = None,
) -> ModelVersion:
    """Package the weights and publish them as the next version of ``name``."""
    return register_package(
        package_model(outcome, name=name, lineage=lineage), name=name, storage=storage, registry=registry
    )
