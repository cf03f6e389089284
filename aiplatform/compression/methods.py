"""Compression methods and how each changes a module.

- ``int8``: weight-only rowwise uint8 for embedding tables (``nn.Embedding``/``nn.EmbeddingBag``)
  and dynamic int8 quantization (per output channel) for linear layers big enough to gain from it.
  Small linear layers stay float: dynamic quantization quantizes the activations on every call,
  and below about ``MIN_INT8_LINEAR_WEIGHTS`` weights that costs more than the matmul it speeds up
  (a 64x64 layer: 5 us float, 20 us int8 at batch 1 on this machine). Quantized modules run on CPU.
- ``prune:AMOUNT``: layer-wise magnitude (L1) pruning of the weights of linear, convolution and
  embedding layers, made permanent (the zeros are the weights; no masks are kept).
- ``fp16``: half-precision weights in the package; loaded back as float32 on CPU, where half
  matmuls are slow.

A package's ``model.json`` says which were applied, in ``compression``:
``{"weights": "float32" | "int8" | "fp16", "steps": ["prune:0.5", "int8"], "quantized": {...}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.utils import prune

from aiplatform.errors import InvalidArgument
from aiplatform.packaging.config import ModelConfig
from aiplatform.packaging.weights import (
    EMBEDDING_ROWWISE_UINT8,
    LINEAR_CHANNEL_INT8,
    architecture_of,
    compression_of,
    quantize,
)

MIN_INT8_LINEAR_WEIGHTS = 16_384
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.EmbeddingBag)
_METHOD = re.compile(r"int8|fp16|prune:(0?\.\d+|[01](\.\d+)?)")


@dataclass(frozen=True)
class CompressionMethod:
    """One parsed ``--method``: ``int8``, ``fp16`` or ``prune`` with the fraction of weights to zero."""

    kind: str
    amount: float | None = None

    @property
    def label(self) -> str:
        return f"prune:{self.amount:g}" if self.kind == "prune" else self.kind


def parse_method(text: str) -> CompressionMethod:
    """``int8`` | ``fp16`` | ``prune:AMOUNT`` with 0 < AMOUNT < 1; anything else is InvalidArgument."""
    raw = str(text).strip().lower()
    if not _METHOD.fullmatch(raw):
        raise InvalidArgument(
            f"Unknown compression method {text!r}; use int8, fp16 or prune:AMOUNT "
            "(AMOUNT the fraction of weights to zero, e.g. prune:0.5)"
        )
    if raw.startswith("prune:"):
        amount = float(raw.split(":", 1)[1])
        if not 0.0 < amount < 1.0:
            raise InvalidArgument(f"prune amount must be between 0 and 1 (exclusive), got {amount:g}")
        return CompressionMethod("prune", amount)
    return CompressionMethod(raw)


def int8_plan(model: nn.Module) -> dict[str, str]:
    """Which modules ``int8`` quantizes, by name, and how."""
    plan: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            plan[name] = EMBEDDING_ROWWISE_UINT8
        elif isinstance(module, nn.Linear) and module.weight.numel() >= MIN_INT8_LINEAR_WEIGHTS:
            plan[name] = LINEAR_CHANNEL_INT8
    return plan


def check_applies(method: CompressionMethod, config: ModelConfig | Mapping[str, Any], model: nn.Module) -> None:
    """Refuse a method that does not apply to this model (InvalidArgument names why)."""
    current = compression_of(config)
    if current["weights"] != "float32":
        raise InvalidArgument(
            f"{method.label} does not apply: this version's weights are already {current['weights']} "
            f"(steps {current['steps']}); compress its float parent instead"
        )
    if method.kind == "int8" and not int8_plan(model):
        raise InvalidArgument(
            f"int8 does not apply to architecture {architecture_of(config).get('type')!r}: it has no "
            f"embedding table and no linear layer with at least {MIN_INT8_LINEAR_WEIGHTS} weights"
        )
    if method.kind == "prune" and not any(isinstance(m, PRUNABLE) for m in model.modules()):
        raise InvalidArgument(
            f"prune does not apply to architecture {architecture_of(config).get('type')!r}: "
            "it has no linear, convolution or embedding layer"
        )


def apply(
    method: CompressionMethod, model: nn.Module, config: ModelConfig | Mapping[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """Compress a float model; returns the new module and the new ``compression`` block."""
    check_applies(method, config, model)
    block = compression_of(config)
    block["steps"].append(method.label)
    if method.kind == "int8":
        plan = int8_plan(model)
        block.update(weights="int8", quantized=plan)
        return quantize(model, plan), block
    if method.kind == "fp16":
        block["weights"] = "fp16"
        return model, block
    pruned = _prune(model, float(method.amount or 0.0))
    return pruned, block


def _prune(model: nn.Module, amount: float) -> nn.Module:
    import copy

    pruned = copy.deepcopy(model)
    for module in pruned.modules():
        if isinstance(module, PRUNABLE):
            prune.l1_unstructured(module, name="weight", amount=amount)
            prune.remove(module, "weight")  # permanent: the zeros become the weight itself
    return pruned
