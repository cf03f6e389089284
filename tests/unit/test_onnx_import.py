"""Importing ONNX models trained elsewhere: checked, described, packaged, served by ONNX Runtime with
the PyTorch model's answers; every bad file refused with nothing stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.kinds import kind_for
from aiplatform.model_import import ImportSlots, import_onnx, onnx_model_config
from aiplatform.packaging import load_package
from aiplatform.registry import RegistryStore
from aiplatform.serving.runner import ModelRunner
from aiplatform.storage import LocalStorage
from tests.factories import onnx_classifier
from tests.onnx_graphs import (
    branching_graph,
    contrib_graph,
    external_in_function_default,
    external_in_training_info,
    only_at_batch_two,
    package_of,
    spinning_graph,
)

LABELS = ["cat", "dog", "owl"]


@pytest.fixture()
def registry(tmp_path: Path) -> RegistryStore:
    return RegistryStore(tmp_path / "registry.sqlite", LocalStorage(tmp_path / "artifacts"))


def imported(registry: RegistryStore, graph: bytes, **options):  # type: ignore[no-untyped-def]
    """In this process (isolate=False): the checks themselves; the sandbox has a test of its own."""
    return import_onnx(
        graph,
        name=options.pop("name", "elsewhere"),
        kind=options.pop("kind", "image"),
        labels=options.pop("labels", LABELS),
        storage=registry.storage,
        registry=registry,
        isolate=options.pop("isolate", False),
        **options,
    )


@pytest.mark.parametrize("layout, softmax", [("NCHW", False), ("NHWC", False), ("NCHW", True)])
def test_an_imported_graph_serves_the_pytorch_models_answers(
    registry: RegistryStore, layout: str, softmax: bool
) -> None:
    module, graph = onnx_classifier(layout=layout, softmax=softmax, channels=3 if layout == "NHWC" else 1)
    version = imported(
        registry,
        graph,
        scores="probabilities" if softmax else "logits",
        filename="net.onnx",
        preprocessing={
            "scale": 1 / 255,
            "mean": [0.5] * (3 if layout == "NHWC" else 1),
            "std": [0.25] * (3 if layout == "NHWC" else 1),
        },
    )
    assert version.version == 1 and version.template == "imported-onnx"
    assert version.lineage["imported"]["filename"] == "net.onnx" and len(version.lineage["imported"]["sha256"]) == 64

    runner = ModelRunner(load_package(registry.storage.get_bytes(version.package_key)))
    config = runner.config
    assert config.architecture["layout"] == layout and config.input["height"] == 8
    assert config.architecture["signature"]["inputs"][0]["name"] == "pixels"
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8, config.input["channels"]), dtype=np.uint8)
    tensor = kind_for(config).to_tensor(images)
    with torch.inference_mode():
        expected = module(tensor.permute(0, 2, 3, 1) if layout == "NHWC" else tensor)
        expected = expected if softmax else torch.softmax(expected, dim=1)
    np.testing.assert_allclose(runner.predict_proba(images), expected.numpy(), atol=1e-4)
    assert [a["label"] for a in runner.predict(images)] == [LABELS[int(i)] for i in expected.argmax(dim=1)]

    again = imported(
        registry,
        graph,
        scores="probabilities" if softmax else "logits",
        filename="net.onnx",
        preprocessing=config.preprocessing,
    )
    assert again.version == 1  # the same file imported again is the same version


def _external_data_graph(graph: bytes, folder: Path) -> bytes:
    model = onnx.load_model_from_string(graph)
    onnx.save_model(
        model,
        str(folder / "external.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return onnx.load_model(str(folder / "external.onnx"), load_external_data=False).SerializeToString()


def _exported(module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        module.eval(),
        (torch.rand(shape),),
        buffer,
        dynamo=False,
        input_names=["pixels"],
        output_names=["scores"],
        dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}},
    )
    return buffer.getvalue()


def _with_input_shape(graph: bytes, shape: list[int]) -> bytes:
    model = onnx.load_model_from_string(graph)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape):
        dim.Clear()
        if size > 0:
            dim.dim_value = size
        else:
            dim.dim_param = "n"
    return model.SerializeToString()


def _external_data_in_a_function(graph: bytes) -> bytes:
    """A tensor pointing at a server-side file, hidden in a node attribute of a local function."""
    from onnx import TensorProto, helper

    model = onnx.load_model_from_string(graph)
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    node = helper.make_node("Constant", [], ["c"], value=tensor)
    model.functions.append(helper.make_function("local", "Hidden", [], ["c"], [node], [helper.make_opsetid("", 17)]))
    return model.SerializeToString()


def _unknown_operator_graph() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Frobnicate", ["pixels"], ["scores"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    ).SerializeToString()


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("corrupt", "not an ONNX model"),
        ("too large", "over the limit"),
        ("external data", "external data files"),
        ("unknown operator", "outside the standard ONNX domains"),
        ("labels", "3 classes but 2 labels"),
        ("text kind", "cannot be imported"),
        ("preprocessing", "mean and positive std"),
        ("scores", "scores must be one of"),
        ("bad name", "name"),
        ("fixed batch", "batch"),
        ("not square", "square"),
        ("subgraph external data", "external data files"),
    ],
)
def test_bad_imports_are_refused_and_store_nothing(
    registry: RegistryStore, tmp_path: Path, case: str, fragment: str
) -> None:
    _, graph = onnx_classifier()
    options: dict = {}  # type: ignore[type-arg]
    if case == "corrupt":
        graph = graph[: len(graph) // 3] + b"\xff" * 64
    elif case == "too large":
        options["max_bytes"] = len(graph) - 1
    elif case == "external data":
        graph = _external_data_graph(graph, tmp_path)
    elif case == "unknown operator":
        graph = _unknown_operator_graph()
    elif case == "labels":
        options["labels"] = ["a", "b"]
    elif case == "text kind":
        options["kind"] = "text"
    elif case == "preprocessing":
        options["preprocessing"] = {"mean": [0.1, 0.2], "std": [1.0, 1.0]}
    elif case == "scores":
        options["scores"] = "odds"
    elif case == "bad name":
        options["name"] = "../Nope"
    elif case == "fixed batch":
        graph = _with_input_shape(graph, [2, 1, 8, 8])
    elif case == "not square":
        graph = _exported(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)), (2, 1, 8, 6))
    elif case == "subgraph external data":
        graph = _external_data_in_a_function(graph)
    with pytest.raises(InvalidArgument, match=fragment):
        imported(registry, graph, **options)
    assert registry.list_models() == [] and registry.storage.list("packages") == []


def _memory_bomb() -> bytes:
    """A valid image classifier whose forward pass multiplies by a 64 x 2**31 matrix (512 GiB)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"]),
        helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [2], [64, 2**31])),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        helper.make_node("MatMul", ["flat", "big"], ["wide"]),
        helper.make_node("ReduceMean", ["wide"], ["mean"], keepdims=1, axes=[1]),
        helper.make_node("Concat", ["mean", "mean", "mean"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_the_sandbox_refuses_a_graph_that_allocates_without_bound_and_imports_a_good_one(
    registry: RegistryStore,
) -> None:
    with pytest.raises(InvalidArgument, match="memory|ONNX Runtime|smoke"):
        imported(registry, _memory_bomb(), isolate=True)
    assert registry.list_models() == []
    _, graph = onnx_classifier()
    version = imported(registry, graph, isolate=True, filename="net.onnx")
    assert version.version == 1 and version.lineage["imported"]["filename"] == "net.onnx"


# -- hostile graphs (issue 29): control flow, contrib domains, hidden external data, batch tricks --


@pytest.mark.parametrize(
    "graph, fragment",
    [
        (spinning_graph, "control flow (Loop)"),
        (branching_graph, "control flow (If)"),
        (contrib_graph, "outside the standard ONNX domains (com.microsoft.Gelu)"),
        (external_in_function_default, "external data files"),
        (external_in_training_info, "external data files"),
        (only_at_batch_two, "smoke prediction on 1 input(s)"),
    ],
)
def test_hostile_graphs_are_refused_at_import(registry: RegistryStore, graph, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        imported(registry, graph())
    assert registry.list_models() == [] and registry.storage.list("packages") == []


def test_a_smoke_prediction_runs_several_batch_sizes(registry: RegistryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiplatform import model_import

    _, graph = onnx_classifier()
    sizes: list = []  # type: ignore[type-arg]
    original = model_import.kind_for

    class Counting:
        def __init__(self, kind) -> None:  # type: ignore[no-untyped-def]
            self.kind = kind

        def to_tensor(self, examples):  # type: ignore[no-untyped-def]
            sizes.append(len(examples))
            return self.kind.to_tensor(examples)

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.kind, name)

    monkeypatch.setattr(model_import, "kind_for", lambda config: Counting(original(config)))
    imported(registry, graph)
    assert sizes == [1, 2, 3, 32]


def _signature(shape: list, datatype: str = "FP32") -> dict:  # type: ignore[type-arg]
    return {
        "inputs": [{"name": "x", "datatype": datatype, "shape": shape}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
        "opset": 17,
    }


@pytest.mark.parametrize(
    "side, channels, fits", [(224, 3, True), (512, 3, True), (1024, 1, True), (1024, 3, False), (4096, 3, False)]
)
def test_an_imported_models_input_must_fit_a_replica(side: int, channels: int, fits: bool) -> None:
    def config(rows: int) -> object:
        return onnx_model_config(
            name="big", kind="image", labels=LABELS, max_rows=rows, signature=_signature([-1, channels, side, side])
        )

    if fits:
        assert config(256).input["height"] == side
        return
    with pytest.raises(
        InvalidArgument, match=r"request of 256 rows \(AIP_MAX_REQUEST_ROWS\).* over the 1 GiB"
    ) as refused:
        config(256)
    assert f"{side}x{side}x{channels}" in str(refused.value) and "at most 4.0 MiB" in str(refused.value)
    if side == 1024:
        assert config(64).input["height"] == side  # fewer rows a request: a larger row fits


def test_an_imported_table_model_takes_at_most_the_datasets_features() -> None:
    from aiplatform.datasets.tabular_sources import MAX_FEATURES

    assert (
        len(
            onnx_model_config(name="t", kind="tabular", labels=LABELS, signature=_signature([-1, MAX_FEATURES])).input[
                "features"
            ]
        )
        == MAX_FEATURES
    )
    with pytest.raises(InvalidArgument, match="has 200,000 features; a table model takes at most 512"):
        onnx_model_config(name="t", kind="tabular", labels=LABELS, signature=_signature([-1, 200_000]))


def test_imports_past_the_limit_are_refused_at_once() -> None:
    slots = ImportSlots(2)
    with slots.held(), slots.held(), pytest.raises(Unavailable, match="2 model import.*AIP_MAX_CONCURRENT_IMPORTS"):
        with slots.held():
            pass
    with slots.held(), slots.held():  # each one released its slot, refused ones too
        pass


def test_a_slow_onnx_call_is_stopped_and_only_it_fails() -> None:
    """The deadline a model server sets (AIP_SERVE_ONNX_RUN_TIMEOUT_S): a batch of two spins
    until it is stopped and fails alone; the same runner answers one image next."""
    import time

    runner = ModelRunner(load_package(package_of(spinning_graph(), "spin", LABELS)))
    runner.limit_run_time(0.2)
    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"did not answer 2 input\(s\) within 0.2 s \(AIP_SERVE_ONNX_RUN_TIMEOUT_S\)"):
        runner.predict(images)
    assert time.monotonic() - started >= 0.2
    assert [len(a["probabilities"]) for a in runner.predict(images[:1])] == [3]
    with pytest.raises(Unavailable):  # stopped again, not left spinning in the background
        runner.predict(images)
