"""What users' own training code imports: its task's data, reports, checkpoints and publishing.

Inside a ``user-code`` task (``aip tasks submit --entry pkg.module:function``, or
``ray job submit --working-dir . -- python -m jobs.train --entry ...``) the function runs on every
Ray Train worker and uses:

    from aiplatform import sdk
    def train_loop(config):
        state = sdk.load_checkpoint()            # after a worker failure: the last one reported
        for epoch in range(...):
            for images, labels in sdk.batches("train", batch_size=128):   # this worker's shard
                ...
            sdk.report({"val_accuracy": ...}, checkpoint={"model": model.state_dict(), ...})
        sdk.publish(model, kind="image", labels=sdk.context().labels, example_input=images[:8])

``report`` gives the task its per-epoch curves; ``publish`` (rank 0 publishes, other ranks
return None) makes the model a registry version whose lineage names the task, its code archive
and dataset.

``publish`` exports a ``torch.nn.Module`` to ONNX with torch's exporter, checks that ONNX Runtime
gives the PyTorch model's outputs on ``example_input`` (within ``tolerance``), and registers it as
the next version of ``name`` through the same path as an import (``aiplatform.model_import``):
a verified package the model servers run on ONNX Runtime, without the module's source and
without pickle. Its lineage says it came from user code (``method: sdk``) and, inside a platform
task, which task. Outside one (a script of one's own, ``ray job submit -- python train.py``) it
registers into the project of the platform key the job carries (``AIP_API_TOKEN``), as the head
decides (``aiplatform.tasks.queue.submitters``); without one it registers nothing.

    from aiplatform import sdk
    version = sdk.publish(model, name="digits", kind="image", labels=[str(d) for d in range(10)],
                          example_input=torch.rand(8, 1, 28, 28),
                          preprocessing={"scale": 1 / 255, "mean": [0.13], "std": [0.31]})
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from aiplatform.datasets.spec import SPLITS
from aiplatform.errors import InvalidArgument
from aiplatform.kinds import kind_class
from aiplatform.model_import import onnx_model_config, smoke_prediction
from aiplatform.packaging import build_package
from aiplatform.packaging.onnx_graph import inspect_graph, new_session
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.registry.publish import publish_package
from aiplatform.settings import Settings
from aiplatform.storage import Storage, sha256_bytes, storage_from_settings
from aiplatform.training.publish import ModelPackage, save_candidate
from aiplatform.training.user_code import USER_CODE, RunContext, current_context

TASK_ID_VARIABLE = "AIP_TASK_ID"
"""Set in a platform task's job: the version's lineage names the task."""
DEFAULT_TOLERANCE = 1e-4
SDK_TEMPLATE = USER_CODE
"""The template name a version published from user code carries."""
MAX_GRAPH_BYTES = 1024**3
CHECKPOINT_FILE = "user_state.pt"


def context() -> RunContext:
    """The running task: its dataset's labels and kind, this worker's rank, the model name, ...;
    :class:`InvalidArgument` outside a task's training function."""
    found = current_context()
    if found is None:
        raise InvalidArgument(
            "aiplatform.sdk's task calls work inside a user-code task's training function "
            "(aip tasks submit --entry ..., or python -m jobs.train --entry ...)"
        )
    return found


def dataset_shard(split: str = "train") -> Any:
    """This worker's shard of a split (``train``, ``val``, ``test``) as Ray Data's iterator."""
    import ray.train

    context()
    if split not in SPLITS:
        raise InvalidArgument(f"Unknown split {split!r}; use train, val or test")
    shard = ray.train.get_dataset_shard(split)
    if shard is None:
        raise InvalidArgument(f"The task's dataset has no {split!r} rows")
    return shard


def batches(
    split: str = "train", batch_size: int = 128, *, preprocessing: Mapping[str, Any] | None = None
) -> Iterator[tuple[Any, torch.Tensor]]:
    """This worker's shard as ``(inputs, labels)`` batches, the inputs as the dataset's kind gives
    them (``DatasetKind.user_batch_converter``): images as float (N, C, H, W) after
    ``value * scale``, then ``(value - mean) / std`` (default: 0..255 -> 0..1; the steps and their
    checks are ``publish``'s, so give it the same ``preprocessing``); texts as a list of strings;
    table rows as float32 (N, F), categories as their index and missing values as NaN. Labels are
    int64 class indices."""
    run = context()
    to_inputs = kind_class(run.kind).user_batch_converter(run.inputs, dict(preprocessing or {}))
    for batch in dataset_shard(split).iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield to_inputs(batch), torch.from_numpy(np.asarray(batch["label"], dtype=np.int64))


def report(
    metrics: Mapping[str, Any], *, checkpoint: Mapping[str, Any] | None = None, epoch: int | None = None
) -> None:
    """One epoch's metrics (every worker calls it; rank 0's become the task's curves) and,
    from rank 0, a checkpoint: a dict of tensors and plain values that ``load_checkpoint`` gives
    back after a worker failure. ``epoch`` defaults to the number of reports so far."""
    import ray.train

    run = context()
    values = {key: value for key, value in dict(metrics).items() if key != "epoch"}
    if any(not isinstance(v, (int, float, bool, str)) for v in values.values()):
        raise InvalidArgument("report's metrics must be plain numbers or strings (call .item() on tensors)")
    number = int(epoch if epoch is not None else metrics.get("epoch", run.reports + 1))
    run.reports += 1
    run.last_metrics = {**values, "epoch": number}
    if checkpoint is None or run.rank != 0:
        ray.train.report(run.last_metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        torch.save(dict(checkpoint), os.path.join(directory, CHECKPOINT_FILE))
        ray.train.report(run.last_metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def load_checkpoint() -> dict[str, Any] | None:
    """The last checkpoint this run reported (after a worker failure or a restart), or None."""
    import ray.train

    context()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, CHECKPOINT_FILE)
        return torch.load(path, weights_only=True) if os.path.exists(path) else None


def export_onnx(model: torch.nn.Module, example_input: torch.Tensor, *, tolerance: float = DEFAULT_TOLERANCE) -> bytes:
    """The module as a self-contained ONNX graph (batch size free), checked against PyTorch on
    ``example_input``: :class:`InvalidArgument` says what does not export or does not match."""
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2 or len(example_input) < 1:
        raise InvalidArgument("example_input must be a batch: a tensor of shape (batch, ...) with at least one row")
    module = copy.deepcopy(model).eval().cpu()  # the caller's model keeps its device and mode
    example = example_input.detach().cpu()
    try:
        with torch.inference_mode():
            expected = module(example)
    except Exception as exc:
        raise InvalidArgument(
            f"The model fails on example_input of shape {list(example.shape)}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    if not isinstance(expected, torch.Tensor) or expected.dim() != 2:
        raise InvalidArgument("The model must return one (batch, classes) tensor of scores")
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                input_names=["input"],
                output_names=["scores"],
                dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
            )
    except Exception as exc:
        raise InvalidArgument(f"The model does not export to ONNX: {type(exc).__name__}: {str(exc)[:500]}") from None
    graph = buffer.getvalue()
    session = new_session(graph)
    if len(session.get_inputs()) != 1:
        raise InvalidArgument(
            "The model does not export to ONNX as a function of its input (the graph takes "
            f"{len(session.get_inputs())} inputs): compute forward with torch operations, "
            "not numpy or Python arithmetic on values"
        )
    (got,) = session.run(None, {session.get_inputs()[0].name: example.numpy().astype(np.float32)})
    worst = (
        float(np.max(np.abs(np.asarray(got) - expected.float().numpy())))
        if got.shape == tuple(expected.shape)
        else float("inf")
    )
    if not worst <= tolerance:
        raise InvalidArgument(
            f"The ONNX export does not reproduce the model: outputs differ by up to {worst:.3g} "
            f"on example_input (tolerance {tolerance:g})"
        )
    return graph


def _claim_for_key(registry: RegistryAPI, name: str, settings: Settings) -> str:
    """Claim ``name`` in the project the head finds for the platform key these settings carry
    (``AIP_API_TOKEN``; ``AIP_PROJECT`` to name another the key may create in) and return it;
    ``Unauthenticated`` or ``Forbidden`` saying why, before anything is stored."""
    from aiplatform.tasks.queue import TaskClient

    key = settings.api_token.get_secret_value() if settings.api_token is not None else None
    project = TaskClient.connect(settings).submitter_project(key, settings.project)
    if registry.model_project(name) != project:
        registry.claim_model(name, project)
    return project


def publish(
    model: torch.nn.Module,
    *,
    kind: str,
    labels: list[str],
    example_input: torch.Tensor,
    name: str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    scores: str = "logits",
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    settings: Settings | None = None,
    storage: Storage | None = None,
    registry: RegistryAPI | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ModelVersion | None:
    """Export, check, package and register ``model``; returns the new version. ``storage`` and
    ``registry`` default to the platform's (``settings``: ``Settings()``, read from ``AIP_*``).

    Inside a task: ``name`` defaults to the task's model name, ``metrics`` to the last report's,
    the lineage names the task, code archive and dataset, and ranks other than 0 publish nothing
    (they return None)."""
    run = current_context()
    if run is not None:
        if run.rank != 0:
            return None
        name = name or run.model_name
        metrics = metrics if metrics is not None else dict(run.last_metrics)
        lineage = {**run.lineage(), **(lineage or {})}
    if not name:
        raise InvalidArgument("publish needs a model name (name=...)")
    graph = export_onnx(model, example_input, tolerance=tolerance)
    config = onnx_model_config(
        name=name,
        kind=kind,
        labels=labels,
        preprocessing=preprocessing,
        scores=scores,
        signature=inspect_graph(graph, max_bytes=MAX_GRAPH_BYTES),
        template=SDK_TEMPLATE,
    )
    source = {"method": "sdk", "onnx_sha256": sha256_bytes(graph), "model_class": type(model).__qualname__}
    if os.environ.get(TASK_ID_VARIABLE):
        source["task_id"] = os.environ[TASK_ID_VARIABLE]
    full_lineage = {**source, **(lineage or {})}
    package = build_package(model_config=config, metrics=dict(metrics or {}), lineage=full_lineage, model_file=graph)
    smoke_prediction(package)
    if run is not None and run.candidate_key:  # a sweep's trial: kept, and registered only if it is the best
        save_candidate(
            storage or storage_from_settings(settings or Settings()),
            run.candidate_key,
            ModelPackage(package, config.template, dict(metrics or {}), full_lineage, run.run_name),
        )
        run.published.append({"name": name, "candidate": run.candidate_key})
        return None
    if storage is None or registry is None:
        from aiplatform.registry import RegistryClient

        settings = settings or Settings()
        storage = storage or storage_from_settings(settings)
        if registry is None and run is None:  # a script of one's own: its key's project, or nothing
            registry = RegistryClient.connect(settings)
            _claim_for_key(registry, name, settings)
        registry = registry or RegistryClient.connect(settings)
    version = publish_package(
        package,
        name=name,
        template=config.template,
        storage=storage,
        registry=registry,
        metrics=dict(metrics or {}),
        lineage=full_lineage,
    )
    if run is not None:
        run.published.append({"name": version.name, "version": version.version, "sha256": version.sha256})
    return version
