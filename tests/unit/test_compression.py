"""Compression methods on real modules, and compressed packages through build/load: a package
computes exactly what the compression produced, and a method that does not fit is refused."""

from __future__ import annotations

import pytest
import torch

from aiplatform.compression.compressor import _latencies
from aiplatform.compression.methods import apply, parse_method
from aiplatform.errors import IntegrityError, InvalidArgument
from aiplatform.networks.architectures import build_model
from aiplatform.packaging import build_package, decode_model, encode_weights, load_package

pytestmark = pytest.mark.unit

TEXT_ARCH = {"type": "embedding-bag", "vocab_size": 500, "embedding_dim": 16, "hidden_units": 16, "num_classes": 3}
CNN_ARCH = {
    "type": "cnn",
    "in_channels": 1,
    "image_size": 28,
    "num_classes": 10,
    "conv_channels": [8, 16],
    "hidden_units": 32,
}  # its first linear layer has 16*7*7*32 = 25,088 weights: int8 applies


def _config(architecture: dict) -> dict:  # type: ignore[type-arg]
    if architecture["type"] == "embedding-bag":
        return {
            "name": "m",
            "template": "text-classification",
            "architecture": architecture,
            "labels": ["a", "b", "c"],
            "input": {"type": "text"},
            "preprocessing": {"type": "text"},
        }
    return {
        "name": "m",
        "template": "cnn-classification",
        "architecture": architecture,
        "labels": [str(i) for i in range(10)],
        "input": {"type": "image", "height": 28, "width": 28, "channels": 1},
        "preprocessing": {"type": "image"},
    }


def _inputs(architecture: dict) -> torch.Tensor:  # type: ignore[type-arg]
    generator = torch.Generator().manual_seed(1)
    if architecture["type"] == "embedding-bag":
        return torch.randint(0, architecture["vocab_size"], (8, 12), generator=generator)
    return torch.randn(8, 1, 28, 28, generator=generator)


def _trained_like(architecture: dict) -> torch.nn.Module:  # type: ignore[type-arg]
    torch.manual_seed(0)
    return build_model(architecture).eval()


@pytest.mark.parametrize(
    "text,expected", [("int8", "int8"), ("FP16", "fp16"), (" prune:0.5 ", "prune:0.5"), ("prune:.25", "prune:0.25")]
)
def test_methods_parse(text: str, expected: str) -> None:
    assert parse_method(text).label == expected


@pytest.mark.parametrize("text", ["int4", "prune", "prune:0", "prune:1", "prune:1.5", "prune:-0.1", "", "fp16x"])
def test_unknown_methods_are_refused_with_the_choices(text: str) -> None:
    with pytest.raises(InvalidArgument, match="int8|prune amount"):
        parse_method(text)


@pytest.mark.parametrize("architecture", [TEXT_ARCH, CNN_ARCH], ids=["embedding-bag", "cnn"])
@pytest.mark.parametrize("method", ["int8", "fp16", "prune:0.5"])
def test_a_compressed_package_computes_what_the_compression_made(architecture: dict, method: str) -> None:  # type: ignore[type-arg]
    model, config = _trained_like(architecture), _config(architecture)
    compressed, block = apply(parse_method(method), model, config)
    new_config = {**config, "compression": block}
    data = build_package(
        model_config=new_config,
        state_dict=encode_weights(compressed, block),
        metrics={},
        lineage={"method": "compress", "parent": 1},
    )
    package = load_package(data)
    x = _inputs(architecture)
    with torch.inference_mode():
        expected, served, original = compressed(x), package.model(x), model(x)
    if method == "fp16":  # float16 weights, computed in float32 on CPU
        assert torch.allclose(served, original, atol=1e-2) and not torch.equal(served, original)
    else:
        assert torch.equal(served, expected)
    assert package.config.compression["steps"] == [method]
    assert package.cpu_only is (method == "int8")


def test_int8_quantizes_embeddings_and_large_linear_layers_only() -> None:
    text, _ = apply(parse_method("int8"), _trained_like(TEXT_ARCH), _config(TEXT_ARCH))
    assert type(text.embedding).__name__ == "EmbeddingBag" and "quantized" in type(text.embedding).__module__
    assert isinstance(text.head[1], torch.nn.Linear)  # 16x16: dynamic quantization would only slow it
    cnn, block = apply(parse_method("int8"), _trained_like(CNN_ARCH), _config(CNN_ARCH))
    assert block["quantized"] == {"head.2": "linear-channel-int8"}
    weights = encode_weights(cnn, block)
    assert weights["head.2.weight"].dtype == torch.int8 and weights["head.5.weight"].dtype == torch.float32


def test_pruning_zeroes_the_smallest_weights_of_each_layer_for_good() -> None:
    model = _trained_like(CNN_ARCH)
    pruned, _ = apply(parse_method("prune:0.5"), model, _config(CNN_ARCH))
    for name, module in pruned.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            zero = float((module.weight == 0).float().mean())
            assert zero == pytest.approx(0.5, abs=0.01), name
            assert not hasattr(module, "weight_mask")  # permanent: no masks or hooks left
            kept = module.weight[module.weight != 0].abs().min()
            original = dict(model.named_modules())[name].weight
            assert kept >= original.abs().median() - 1e-6  # the smallest half went
    assert float((model.head[2].weight == 0).float().mean()) == 0.0  # the parent is untouched


def test_methods_that_do_not_apply_are_refused() -> None:
    config = _config(TEXT_ARCH)
    int8, block = apply(parse_method("int8"), _trained_like(TEXT_ARCH), config)
    for method in ("int8", "fp16", "prune:0.5"):
        with pytest.raises(InvalidArgument, match="already int8"):
            apply(parse_method(method), int8, {**config, "compression": block})
    small_cnn = {**CNN_ARCH, "conv_channels": [2], "hidden_units": 4, "image_size": 8}
    with pytest.raises(InvalidArgument, match="int8 does not apply to architecture 'cnn'"):
        apply(parse_method("int8"), _trained_like(small_cnn), _config(small_cnn))


def test_a_pruned_model_can_still_be_quantized() -> None:
    config = _config(TEXT_ARCH)
    pruned, block = apply(parse_method("prune:0.3"), _trained_like(TEXT_ARCH), config)
    _, block = apply(parse_method("int8"), pruned, {**config, "compression": block})
    assert block["steps"] == ["prune:0.3", "int8"] and block["weights"] == "int8"


def test_tampered_int8_weights_are_refused_on_load() -> None:
    config = _config(TEXT_ARCH)
    compressed, block = apply(parse_method("int8"), _trained_like(TEXT_ARCH), config)
    tensors = encode_weights(compressed, block)
    tensors["embedding.weight"] = tensors["embedding.weight"][:-1]
    with pytest.raises(IntegrityError, match="shape"):
        decode_model({**config, "compression": block}, tensors)
    tensors = encode_weights(compressed, block)
    tensors["extra"] = torch.zeros(1)
    with pytest.raises(IntegrityError, match="missing or unexpected"):
        decode_model({**config, "compression": block}, tensors)


class _Repeated(torch.nn.Module):
    """The same network run ``times`` over: a model that takes that much longer."""

    def __init__(self, inner: torch.nn.Module, times: int) -> None:
        super().__init__()
        self.inner, self.times = inner, times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            out = self.inner(x)
        return out


def test_latency_is_the_median_of_each_models_own_runs_up_to_the_repeats() -> None:
    model = _trained_like(TEXT_ARCH)
    inputs = torch.randint(0, TEXT_ARCH["vocab_size"], (32, 12), generator=torch.Generator().manual_seed(1))
    latency, repeats = _latencies(model, _Repeated(model, 20), inputs, repeats=3, budget_s=600.0)
    assert repeats == {"batch_1": 3, "batch_32": 3}  # a budget far from spent: every repeat runs
    for key in ("batch_1", "batch_32"):
        assert latency[key]["after"] > 5 * latency[key]["before"] > 0, latency  # 20 passes against one


def test_latency_stops_repeating_once_its_time_budget_is_spent_but_times_once() -> None:
    model = _trained_like(TEXT_ARCH)
    inputs = torch.randint(0, TEXT_ARCH["vocab_size"], (32, 12), generator=torch.Generator().manual_seed(1))
    latency, repeats = _latencies(model, model, inputs, repeats=7, budget_s=0.0)
    assert repeats == {"batch_1": 1, "batch_32": 1}
    assert all(figures["before"] > 0 and figures["after"] > 0 for figures in latency.values())
