"""What users' own training code imports: publish a model of their own making to the platform.

``publish`` exports a ``torch.nn.Module`` to ONNX with torch's exporter, checks that ONNX Runtime
gives the PyTorch model's outputs on ``example_input`` (within ``tolerance``), and registers it as
the next version of ``name`` through the same path as an import (``aiplatform.model_import``):
a verified package the model servers run on ONNX Runtime, without the module's source and
without pickle. Its lineage says it came from user code (``method: sdk``) and, inside a platform
task, which task.

    from aiplatform import sdk
    version = sdk.publish(model, name="digits", kind="image", labels=[str(d) for d in range(10)],
                          example_input=torch.rand(8, 1, 28, 28),
                          preprocessing={"scale": 1 / 255, "mean": [0.13], "std": [0.31]})
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from typing import Any, Mapping, Optional

import numpy as np
import torch

from aiplatform.errors import InvalidArgument
from aiplatform.model_import import onnx_model_config, smoke_prediction
from aiplatform.packaging import build_package
from aiplatform.packaging.onnx_graph import inspect_graph, new_session
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.registry.publish import publish_package
from aiplatform.settings import Settings
from aiplatform.storage import Storage, sha256_bytes, storage_from_settings

TASK_ID_VARIABLE = "AIP_TASK_ID"
"""Set in a platform task's job: the version's lineage names the task."""
DEFAULT_TOLERANCE = 1e-4
SDK_TEMPLATE = "user-code"
"""The template name a version published from user code carries."""
MAX_GRAPH_BYTES = 1024**3


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
    except Exception as exc:  # noqa: BLE001 - the user's code: its error, named
        raise InvalidArgument(f"The model fails on example_input of shape {list(example.shape)}: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from None
    if not isinstance(expected, torch.Tensor) or expected.dim() != 2:
        raise InvalidArgument("The model must return one (batch, classes) tensor of scores")
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["input"],
                              output_names=["scores"], dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 - the exporter's own errors name the operator or construct
        raise InvalidArgument(f"The model does not export to ONNX: {type(exc).__name__}: {str(exc)[:500]}") from None
    graph = buffer.getvalue()
    session = new_session(graph)
    if len(session.get_inputs()) != 1:
        raise InvalidArgument("The model does not export to ONNX as a function of its input (the graph takes "
                              f"{len(session.get_inputs())} inputs): compute forward with torch operations, "
                              "not numpy or Python arithmetic on values")
    (got,) = session.run(None, {session.get_inputs()[0].name: example.numpy().astype(np.float32)})
    worst = float(np.max(np.abs(np.asarray(got) - expected.float().numpy()))) if got.shape == tuple(expected.shape) else float("inf")
    if not worst <= tolerance:
        raise InvalidArgument(f"The ONNX export does not reproduce the model: outputs differ by up to {worst:.3g} "
                              f"on example_input (tolerance {tolerance:g})")
    return graph


def publish(model: torch.nn.Module, *, name: str, kind: str, labels: list[str], example_input: torch.Tensor,
            preprocessing: Optional[Mapping[str, Any]] = None, scores: str = "logits",
            metrics: Optional[dict[str, Any]] = None, lineage: Optional[dict[str, Any]] = None,
            settings: Optional[Settings] = None, storage: Optional[Storage] = None,
            registry: Optional[RegistryAPI] = None, tolerance: float = DEFAULT_TOLERANCE) -> ModelVersion:
    """Export, check, package and register ``model``; returns the new version. ``storage`` and
    ``registry`` default to the platform's (``settings``: ``Settings()``, read from ``AIP_*``)."""
    graph = export_onnx(model, example_input, tolerance=tolerance)
    config = onnx_model_config(name=name, kind=kind, labels=labels, preprocessing=preprocessing, scores=scores,
                               signature=inspect_graph(graph, max_bytes=MAX_GRAPH_BYTES), template=SDK_TEMPLATE)
    source = {"method": "sdk", "onnx_sha256": sha256_bytes(graph), "model_class": type(model).__qualname__}
    if os.environ.get(TASK_ID_VARIABLE):
        source["task_id"] = os.environ[TASK_ID_VARIABLE]
    full_lineage = {**source, **(lineage or {})}
    package = build_package(model_config=config, metrics=dict(metrics or {}), lineage=full_lineage, onnx_graph=graph)
    smoke_prediction(package)
    if storage is None or registry is None:
        from aiplatform.registry import RegistryClient

        settings = settings or Settings()
        storage = storage or storage_from_settings(settings)
        registry = registry or RegistryClient.connect(settings)
    return publish_package(package, name=name, template=config.template, storage=storage, registry=registry,
                           metrics=dict(metrics or {}), lineage=full_lineage)
