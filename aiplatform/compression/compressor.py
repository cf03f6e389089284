"""Compress a registered version: measure it, compress it, measure again, gate, register.

The report compares parent and compressed model in the same process on the same inputs: package
size, CPU latency at batch 1 and batch 32 (median of the repeats that fit a time budget), and
accuracy and macro-F1 on the test split of the dataset the parent was trained on. The compressed
model is measured as it is loaded back from its package bytes, so the figures are those of what
the servers will run.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from aiplatform.compression.methods import apply, check_applies, parse_method
from aiplatform.datasets import DatasetManager
from aiplatform.errors import IntegrityError, InvalidArgument, NotFound
from aiplatform.evaluation import evaluate_model, scalar_metrics, table_batches
from aiplatform.kinds import kind_for
from aiplatform.packaging import build_package, load_package
from aiplatform.packaging.format import serialized_file
from aiplatform.packaging.weights import decode_model, encode_weights
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.registry.publish import publish_package
from aiplatform.storage import Storage, sha256_bytes

LATENCY_BATCH_SIZES = (1, 32)
LATENCY_BUDGET_S = 1.0
"""Seconds of timing per batch size, both models together: repeats stop once it is spent, after
at least one, so a compression's latency runs take seconds whatever the model's speed."""
LATENCY_SAMPLE_S = 0.1
"""One timed sample: back-to-back calls of one model until this long has passed (at least one)."""


@dataclass
class CompressionReport:
    """Before/after figures and what became of the compressed version."""

    name: str
    parent_version: int
    method: str
    registered: bool
    version: int | None
    refused: str | None
    max_accuracy_drop: float
    size_bytes: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    metrics: dict[str, dict[str, float]]
    accuracy_drop: float
    dataset: str
    seconds: float
    package_uri: str | None = None
    derived: dict[str, float] = field(default_factory=dict)
    latency_repeats: dict[str, int] = field(default_factory=dict)
    """Timed samples of each model behind each ``latency_ms`` median, by batch size."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        size, lat, m = self.size_bytes, self.latency_ms, self.metrics
        lines = [
            f"{self.name} v{self.parent_version} --{self.method}--> "
            + (f"v{self.version}" if self.registered else f"refused: {self.refused}"),
            f"  package: {size['before']:,} -> {size['after']:,} bytes ({self.derived['size_ratio']:.1%})",
        ]
        for batch in LATENCY_BATCH_SIZES:
            key = f"batch_{batch}"
            timed = f", median of {self.latency_repeats[key]} runs" if key in self.latency_repeats else ""
            lines.append(
                f"  latency at batch {batch}: {lat[key]['before']:.3f} -> {lat[key]['after']:.3f} ms "
                f"({self.derived[f'speedup_{key}']:.2f}x{timed})"
            )
        lines.append(
            f"  test accuracy: {m['before']['test_accuracy']:.4f} -> {m['after']['test_accuracy']:.4f}; "
            f"macro-F1 {m['before']['test_macro_f1']:.4f} -> {m['after']['test_macro_f1']:.4f} "
            f"(on {int(m['after']['test_samples'])} test samples of {self.dataset})"
        )
        return lines


def compress_version(
    *,
    name: str,
    ref: str | int,
    method: str,
    storage: Storage,
    registry: RegistryAPI,
    datasets: DatasetManager,
    max_accuracy_drop: float,
    latency_repeats: int = 7,
    latency_budget_s: float = LATENCY_BUDGET_S,
    created_by: str | None = None,
) -> CompressionReport:
    """Compress version (or alias) ``ref`` of ``name``; register the result unless it loses more
    than ``max_accuracy_drop`` of test accuracy (a fraction: 0.01 is one point).

    Raises InvalidArgument for a method that does not apply, NotFound for an unknown model or a
    parent whose dataset is gone. A refused version is reported, not registered; nothing stored
    changes. Repeating a compression returns the version the first one registered. Latency is the
    median of at most ``latency_repeats`` samples per model and batch size, fewer once
    ``latency_budget_s`` of timing is spent (at least one).
    """
    started = time.perf_counter()
    chosen = parse_method(method)
    if not 0.0 <= max_accuracy_drop <= 1.0:
        raise InvalidArgument(f"max_accuracy_drop must be between 0 and 1 (0.01 = one point), got {max_accuracy_drop}")
    parent = registry.resolve(name, ref)
    earlier = _earlier_report(storage, registry, parent, chosen.label)
    if earlier is not None:
        return earlier
    parent_bytes = _verified_package(storage, parent)
    package = load_package(parent_bytes)
    if serialized_file(package.config) is not None:
        raise InvalidArgument(
            f"Version {parent.version} of {name!r} is a {package.config.architecture['type']} model; "
            "compression works on the platform's PyTorch packages (quantize an ONNX graph with "
            "ONNX Runtime's tools, then import it)"
        )
    check_applies(chosen, package.config, package.model)
    dataset_ref = parent.lineage.get("dataset")
    if not dataset_ref:
        raise NotFound(
            f"Model version (name={name}, version={parent.version}) has no dataset in its lineage; "
            "compression needs its test split"
        )
    dataset = datasets.get_ref(str(dataset_ref))
    test = datasets.read_split_table(dataset, "test")
    num_classes = len(package.labels)

    compressed, block = apply(chosen, package.model, package.config)
    config = package.config.model_copy(update={"compression": block})
    tensors = encode_weights(compressed, block)
    served = decode_model(config, tensors).eval()  # what a server loads from the package

    before = evaluate_model(package.model, table_batches(test), package.config, num_classes, package.labels)
    after = evaluate_model(served, table_batches(test), config, num_classes, package.labels)
    inputs, _ = kind_for(package.config).batch_converter()(next(table_batches(test, max(LATENCY_BATCH_SIZES))))
    latency, repeats = _latencies(package.model, served, inputs, latency_repeats, latency_budget_s)
    drop = before["test_accuracy"] - after["test_accuracy"]
    refused = None
    if drop > max_accuracy_drop:
        refused = (
            f"{chosen.label} loses {drop * 100:.2f} points of test accuracy "
            f"({before['test_accuracy']:.4f} -> {after['test_accuracy']:.4f}), more than the allowed "
            f"{max_accuracy_drop * 100:.2f}"
        )

    report_fields = {
        "name": name,
        "parent_version": parent.version,
        "method": chosen.label,
        "max_accuracy_drop": max_accuracy_drop,
        "latency_ms": latency,
        "latency_repeats": repeats,
        "metrics": {"before": scalar_metrics(before), "after": scalar_metrics(after)},
        "accuracy_drop": drop,
        "dataset": dataset.ref,
    }
    lineage = {
        "method": "compress",
        "compression": chosen.label,
        "parent": parent.version,
        "parent_sha256": parent.sha256,
        "template": parent.template,
        "dataset": dataset.ref,
        "dataset_content_hash": dataset.manifest["content_hash"],
    }
    metrics = {
        **after,
        "compression": {"method": chosen.label, "parent": parent.version, "accuracy_drop": drop, "latency_ms": latency},
    }
    data = build_package(model_config=config, state_dict=tensors, metrics=metrics, lineage=lineage)
    size = {"before": len(parent_bytes), "after": len(data)}
    derived = {
        "size_ratio": size["after"] / size["before"],
        **{f"speedup_{key}": value["before"] / value["after"] for key, value in latency.items()},
    }
    if refused is not None:
        report = CompressionReport(
            **report_fields,
            registered=False,
            version=None,
            refused=refused,
            size_bytes=size,
            derived=derived,
            seconds=time.perf_counter() - started,
        )
        _store_report(storage, report)
        return report
    version = publish_package(
        data,
        name=name,
        template=parent.template,
        storage=storage,
        registry=registry,
        metrics={**metrics, "compression": {**metrics["compression"], "size_bytes": size}},
        lineage=lineage,
        idempotency_key=f"compress:{parent.version}:{chosen.label}",
        created_by=created_by,
    )
    report = CompressionReport(
        **report_fields,
        registered=True,
        version=version.version,
        refused=None,
        size_bytes=size,
        derived=derived,
        package_uri=version.package_uri,
        seconds=time.perf_counter() - started,
    )
    _store_report(storage, report)
    return report


def report_key(name: str, parent_version: int, method: str) -> str:
    return f"reports/compression/{name}/v{parent_version}-{method.replace(':', '-')}.json"


def _store_report(storage: Storage, report: CompressionReport) -> None:
    storage.put_bytes(
        report_key(report.name, report.parent_version, report.method),
        json.dumps(report.to_dict(), indent=2, sort_keys=True).encode(),
    )


def _earlier_report(
    storage: Storage, registry: RegistryAPI, parent: ModelVersion, method: str
) -> CompressionReport | None:
    """The report of this compression when it already registered a version (a retried job)."""
    registered = any(
        v.lineage.get("parent") == parent.version and v.lineage.get("compression") == method
        for v in registry.list_versions(parent.name)
    )
    key = report_key(parent.name, parent.version, method)
    if not registered or not storage.exists(key):
        return None
    report = CompressionReport(**json.loads(storage.get_bytes(key)))
    return report if report.registered else None


def _verified_package(storage: Storage, version: ModelVersion) -> bytes:
    data = storage.get_bytes(version.package_key)
    if sha256_bytes(data) != version.sha256:
        raise IntegrityError(
            f"Package of model version (name={version.name}, version={version.version}) does "
            "not match its registered sha256"
        )
    return data


def _latencies(
    before: torch.nn.Module, after: torch.nn.Module, inputs: torch.Tensor, repeats: int, budget_s: float
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Median milliseconds per forward pass on the first 1 and 32 ``inputs``, and how many samples
    of each model it is the median of: up to ``repeats``, fewer once ``budget_s`` of timing is
    spent at a batch size (at least one). The two models alternate within each repeat so that
    machine noise falls on both alike."""
    figures: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    with torch.inference_mode():
        for size in LATENCY_BATCH_SIZES:
            x = inputs[:size]
            models = (("before", before), ("after", after))
            for _, model in models:
                model(x)  # warm: the first call at a batch size allocates
            samples: dict[str, list[float]] = {"before": [], "after": []}
            started = time.perf_counter()
            for _ in range(max(1, repeats)):
                for label, model in models:
                    samples[label].append(_mean_call_ms(model, x, LATENCY_SAMPLE_S))
                if time.perf_counter() - started >= budget_s:
                    break
            key = f"batch_{size}"
            figures[key] = {label: statistics.median(values) for label, values in samples.items()}
            counts[key] = len(samples["before"])
    return figures, counts


def _mean_call_ms(model: torch.nn.Module, x: torch.Tensor, min_s: float) -> float:
    """Mean milliseconds of back-to-back calls, as many as fit in ``min_s`` (at least one): many
    for a fast model, so that timer noise stays small."""
    calls = 0
    started = now = time.perf_counter()
    while calls == 0 or now - started < min_s:
        model(x)
        calls += 1
        now = time.perf_counter()
    return (now - started) / calls * 1000
