"""How (compressed) weights are written to and read from a package's safetensors file.

safetensors holds plain tensors only, so an int8 layer is stored as its integer values with their
per-row (embedding) or per-output-channel (linear) scales and zero points::

    <module>.weight               uint8 (embedding) or int8 (linear) values
    <module>.weight_scales        float scales, one per row / output channel
    <module>.weight_zero_points   zero points, one per row / output channel
    <module>.bias                 float32 (linear)

Loading rebuilds the float architecture, quantizes the named modules and sets their weights from
these tensors, so the served module computes exactly what the compression job measured.

The weight forms live beside the package format (compression writes them, every model server reads
them), so reading a package never needs the compression service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from aiplatform.errors import IntegrityError
from aiplatform.networks.architectures import build_model
from aiplatform.packaging.config import ModelConfig

EMBEDDING_ROWWISE_UINT8 = "embedding-rowwise-uint8"
LINEAR_CHANNEL_INT8 = "linear-channel-int8"


def encode_weights(model: nn.Module, compression: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors to store for a model whose weights are in ``compression['weights']`` form."""
    weights = compression["weights"]
    if weights == "int8":
        return _encode_int8(model, compression["quantized"])
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    if weights == "fp16":
        return {name: t.half() if t.is_floating_point() else t for name, t in state.items()}
    return state


def decode_model(config: ModelConfig | Mapping[str, Any], tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Build the module of a ``model.json`` and load the stored tensors into it (strictly)."""
    compression = compression_of(config)
    model = build_model(architecture_of(config))
    try:
        if compression["weights"] == "int8":
            return _decode_int8(model, compression["quantized"], tensors)
        if compression["weights"] == "fp16":
            tensors = {name: t.float() if t.is_floating_point() else t for name, t in tensors.items()}
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise IntegrityError(f"Package weights do not fit its architecture: {exc}") from exc
    return model


def _encode_int8(model: nn.Module, plan: dict[str, str]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    tensors = {
        name: t.detach().cpu().contiguous()
        for name, t in model.state_dict().items()
        if isinstance(t, torch.Tensor) and not _belongs_to(name, plan)
    }
    for name in plan:
        module = modules[name]
        weight = module.weight()
        tensors[f"{name}.weight"] = weight.int_repr().contiguous()
        tensors[f"{name}.weight_scales"] = weight.q_per_channel_scales().contiguous()
        tensors[f"{name}.weight_zero_points"] = weight.q_per_channel_zero_points().contiguous()
        bias = module.bias() if callable(getattr(module, "bias", None)) else None
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().contiguous()
    return tensors


def _decode_int8(model: nn.Module, plan: dict[str, str], tensors: dict[str, torch.Tensor]) -> nn.Module:
    float_part = {name: t for name, t in tensors.items() if not _belongs_to(name, plan)}
    expected = {name for name in model.state_dict() if not _belongs_to(name, plan)}
    if set(float_part) != expected:
        raise IntegrityError(
            f"Package weights do not fit its architecture: float tensors "
            f"{sorted(set(float_part) ^ expected)} missing or unexpected"
        )
    model.load_state_dict(float_part, strict=False)
    quantized = quantize(model, plan)
    modules = dict(quantized.named_modules())
    known = set(float_part)
    for name, how in plan.items():
        if name not in modules:
            raise IntegrityError(f"Package names quantized module {name!r}, which the architecture lacks")
        values = tensors[f"{name}.weight"]
        expected_shape = tuple(modules[name].weight().shape)
        if tuple(values.shape) != expected_shape:
            raise IntegrityError(
                f"Package weight {name!r} has shape {tuple(values.shape)}, the architecture needs {expected_shape}"
            )
        known |= {f"{name}.weight", f"{name}.weight_scales", f"{name}.weight_zero_points", f"{name}.bias"}
        scales, zero_points = tensors[f"{name}.weight_scales"], tensors[f"{name}.weight_zero_points"]
        weight = torch._make_per_channel_quantized_tensor(values, scales, zero_points, 0)
        if how == EMBEDDING_ROWWISE_UINT8:
            modules[name].set_weight(weight)
        else:
            modules[name].set_weight_bias(weight, tensors.get(f"{name}.bias"))
    unexpected = set(tensors) - known
    if unexpected:
        raise IntegrityError(f"Package weights have tensors the architecture lacks: {sorted(unexpected)}")
    return quantized


def _belongs_to(tensor_name: str, plan: dict[str, str]) -> bool:
    return any(tensor_name.startswith(f"{module}.") for module in plan)


def architecture_of(config: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The ``architecture`` block of a ``model.json`` (typed or as plain data)."""
    return dict(config.architecture if isinstance(config, ModelConfig) else config.get("architecture") or {})


def compression_of(config: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The ``compression`` block of a ``model.json`` (float32 weights, no steps when absent)."""
    block = (config.compression if isinstance(config, ModelConfig) else config.get("compression")) or {}
    return {
        "weights": block.get("weights", "float32"),
        "steps": list(block.get("steps", [])),
        "quantized": dict(block.get("quantized", {})),
    }


def quantization_spec(plan: dict[str, str]) -> dict[str, Any]:
    """``quantize_dynamic``'s per-module qconfig for an ``int8_plan``."""
    from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig

    return {
        name: float_qparams_weight_only_qconfig if how == EMBEDDING_ROWWISE_UINT8 else per_channel_dynamic_qconfig
        for name, how in plan.items()
    }


def quantize(model: nn.Module, plan: dict[str, str]) -> nn.Module:
    """The int8 module for a float one (a copy; quantized modules run on CPU only)."""
    import copy
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that eager quantization moves to torchao
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), quantization_spec(plan), dtype=torch.qint8)
