"""Importing a model trained elsewhere: an ONNX graph checked, described, tried and published.

The graph's signature goes into the typed model config (``architecture.signature``), its input
becomes a kind's input spec (an image model's height, width and channels from the graph's input
shape), a smoke prediction runs through the package as the model servers will load it, and only
then is the package stored and registered, with ``imported`` lineage (the source file's sha256).
Nothing is stored when any step fails.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from aiplatform.errors import InvalidArgument
from aiplatform.kinds import kind_for
from aiplatform.packaging import build_package, load_package
from aiplatform.packaging.config import ModelConfig
from aiplatform.packaging.onnx_graph import ONNX_ARCHITECTURE, SCORES, inspect_graph
from aiplatform.registry.publish import publish_package
from aiplatform.registry.store import ModelVersion, RegistryAPI, validate_model_name
from aiplatform.storage import Storage, sha256_bytes

IMPORTED_TEMPLATE = "imported-onnx"
IMPORTABLE_KINDS = ("image",)
"""Kinds whose inputs a graph can take as they are decoded (a text model needs its tokenizer,
which an ONNX file does not carry)."""
MAX_LABELS = 10_000
DEFAULT_MAX_ONNX_BYTES = 512 * 1024**2


def onnx_model_config(*, name: str, kind: str, labels: list[str], signature: dict[str, Any],
                      preprocessing: Optional[Mapping[str, Any]] = None, scores: str = "logits",
                      template: str = IMPORTED_TEMPLATE) -> ModelConfig:
    """The model config of an imported graph: its kind's input spec read off the graph's input."""
    if kind not in IMPORTABLE_KINDS:
        raise InvalidArgument(f"Models of kind {kind!r} cannot be imported from ONNX; importable: {list(IMPORTABLE_KINDS)}")
    if scores not in SCORES:
        raise InvalidArgument(f"scores must be one of {list(SCORES)}, got {scores!r}")
    labels = [str(label).strip() for label in labels]
    if not labels or len(labels) > MAX_LABELS or any(not label for label in labels) or len(set(labels)) != len(labels):
        raise InvalidArgument(f"labels must be 1 to {MAX_LABELS} distinct non-empty names, got {labels[:20]}")
    classes = signature["outputs"][0]["shape"][1]
    if classes > 0 and classes != len(labels):
        raise InvalidArgument(f"The ONNX model's output {signature['outputs'][0]['name']!r} has {classes} classes "
                              f"but {len(labels)} labels were given")
    height, width, channels, layout = _image_geometry(signature["inputs"][0])
    spec = {"type": "image", "height": height, "width": width, "channels": channels}
    steps = _image_preprocessing(dict(preprocessing or {}), channels)
    return ModelConfig.parse({
        "name": name, "template": template, "input": spec, "labels": labels, "preprocessing": steps,
        "architecture": {"type": ONNX_ARCHITECTURE, "signature": signature, "layout": layout, "scores": scores},
    }, stored=False)


def import_onnx(data: bytes, *, name: str, kind: str, labels: list[str], storage: Storage, registry: RegistryAPI,
                preprocessing: Optional[Mapping[str, Any]] = None, scores: str = "logits",
                filename: Optional[str] = None, max_bytes: int = DEFAULT_MAX_ONNX_BYTES) -> ModelVersion:
    """Check, package, try and register an ONNX graph as the next version of ``name``."""
    validate_model_name(name)
    signature = inspect_graph(data, max_bytes=max_bytes)
    config = onnx_model_config(name=name, kind=kind, labels=labels, signature=signature,
                               preprocessing=preprocessing, scores=scores)
    source = {"format": "onnx", "sha256": sha256_bytes(data), "bytes": len(data), "opset": signature["opset"]}
    if filename:
        source["filename"] = filename[:200]
    lineage = {"imported": source}
    package = build_package(model_config=config, metrics={}, lineage=lineage, onnx_graph=data)
    smoke_prediction(package)
    return publish_package(package, name=name, template=IMPORTED_TEMPLATE, storage=storage, registry=registry,
                           metrics={}, lineage=lineage, idempotency_key=f"import-{source['sha256']}")


def smoke_prediction(package: bytes) -> None:
    """Load the package as a model server does and classify two inputs of its kind: the scores
    must be finite, one per label."""
    loaded = load_package(package)
    kind = kind_for(loaded.config)
    height, width, channels = (int(loaded.config.input[k]) for k in ("height", "width", "channels"))
    examples = np.random.default_rng(0).integers(0, 256, (2, height, width, channels), dtype=np.uint8)
    scores = loaded.model(kind.to_tensor(examples))
    if tuple(scores.shape) != (2, len(loaded.labels)) or not bool(np.isfinite(scores.numpy()).all()):
        raise InvalidArgument(f"The ONNX model's smoke prediction gave scores of shape {tuple(scores.shape)} "
                              f"(expected (2, {len(loaded.labels)}), all finite)")


def _image_geometry(spec: dict[str, Any]) -> tuple[int, int, int, str]:
    """(height, width, channels, layout) of an image graph's input: (N, C, H, W) or (N, H, W, C)."""
    shape = spec["shape"]
    if len(shape) == 4 and shape[1] in (1, 3) and shape[2] > 0 and shape[3] > 0:
        return shape[2], shape[3], shape[1], "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] > 0 and shape[2] > 0:
        return shape[1], shape[2], shape[3], "NHWC"
    raise InvalidArgument(f"The ONNX model's input {spec['name']!r} has shape {shape}; an image model takes "
                          "(batch, channels, height, width) or (batch, height, width, channels) with 1 or 3 "
                          "channels and a fixed height and width")


def _image_preprocessing(given: dict[str, Any], channels: int) -> dict[str, Any]:
    """How pixels become the graph's input: ``value * scale``, then ``(value - mean) / std`` per
    channel (default: 0..255 -> 0..1)."""
    unknown = sorted(set(given) - {"scale", "mean", "std"})
    if unknown:
        raise InvalidArgument(f"Unknown image preprocessing keys {unknown}; known: mean, scale, std")
    steps = {"scale": 1 / 255, "mean": [0.0] * channels, "std": [1.0] * channels, **given}
    try:
        scale = float(steps["scale"])
        mean = [float(v) for v in steps["mean"]]
        std = [float(v) for v in steps["std"]]
    except (TypeError, ValueError):
        raise InvalidArgument("preprocessing scale must be a number and mean, std lists of numbers") from None
    if len(mean) != channels or len(std) != channels or not all(np.isfinite([scale, *mean, *std])) \
            or any(s <= 0 for s in std) or scale <= 0:
        raise InvalidArgument(f"preprocessing needs a positive scale and {channels} mean and positive std values "
                              f"(one per channel), got {given}")
    return {**steps, "scale": scale, "mean": mean, "std": std}
