"""Hostile ONNX graphs, built with ``onnx.helper``: what an import must refuse (control flow,
contrib operators, hidden external data, graphs that only behave at the smoke test's batch size,
inputs too large to serve) and a spinning graph for the model servers' deadline."""

from __future__ import annotations

from typing import Any


def graph_of(
    nodes: list,
    initializers: tuple = (),
    input_shape: tuple = (None, 1, 8, 8),
    opsets: tuple = (("", 17),),
    functions: tuple = (),
    training: tuple = (),
) -> bytes:  # type: ignore[type-arg]
    """An image classifier's graph around ``nodes``, which turn ``pixels`` into ``scores`` (N, 3)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
        list(initializers),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], functions=list(functions)
    )
    model.training_info.extend(training)
    return model.SerializeToString()


def first_three(source: str = "pixels", out: str = "three") -> tuple[list, list]:  # type: ignore[type-arg]
    """Nodes (and initializers) taking the first 3 pixels of each image: (N, 3)."""
    from onnx import TensorProto, helper

    return (
        [helper.make_node("Flatten", [source], ["flat"]), helper.make_node("Slice", ["flat", "s0", "s3", "s1"], [out])],
        [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s0", 0), ("s3", 3), ("s1", 1))],
    )


def spinning_graph(trips: str = "batch") -> bytes:
    """A Loop whose trip count is (batch - 1) x 10**12 (``trips="batch"``: one image answers at
    once, two spin for hours: what a one-batch smoke test lets through), or that of
    :func:`spinning_on_bright_pixels`."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    nodes, initializers = first_three()
    if trips == "batch":
        nodes += [
            helper.make_node("Shape", ["pixels"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
            helper.make_node("Sub", ["n", "one_row"], ["extra"]),
        ]
    else:
        nodes += [
            helper.make_node("ReduceMax", ["pixels"], ["brightest"], keepdims=0),
            helper.make_node("Cast", ["brightest"], ["extra"], to=TensorProto.INT64),
        ]
    nodes += [
        helper.make_node("Mul", ["extra", "per_row"], ["trips"]),
        helper.make_node("Loop", ["trips", "", "acc0"], ["acc"], body=body),
        helper.make_node("Mul", ["acc", "zero_f"], ["nothing"]),
        helper.make_node("Add", ["three", "nothing"], ["scores"]),
    ]
    initializers += [
        helper.make_tensor("zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("one_row", TensorProto.INT64, [], [1]),
        helper.make_tensor("per_row", TensorProto.INT64, [], [10**12]),
        helper.make_tensor("acc0", TensorProto.FLOAT, [1], [0.0]),
        helper.make_tensor("zero_f", TensorProto.FLOAT, [1], [0.0]),
    ]
    return graph_of(nodes, initializers)


def branching_graph() -> bytes:
    """An If whose branches are subgraphs (either could be anything)."""
    from onnx import TensorProto, helper

    def branch(name: str) -> object:
        return helper.make_graph(
            [helper.make_node("Identity", ["three"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [None, 3])],
        )

    nodes, initializers = first_three()
    nodes += [helper.make_node("If", ["flag"], ["scores"], then_branch=branch("then"), else_branch=branch("else"))]
    return graph_of(nodes, [*initializers, helper.make_tensor("flag", TensorProto.BOOL, [], [True])])


def contrib_graph() -> bytes:
    """ONNX Runtime's own com.microsoft.Gelu: it runs, but is no standard operator."""
    from onnx import helper

    nodes, initializers = first_three(out="three")
    nodes.append(helper.make_node("Gelu", ["three"], ["scores"], domain="com.microsoft"))
    return graph_of(nodes, initializers, opsets=(("", 17), ("com.microsoft", 1)))


def external_tensor(name: str = "w") -> object:
    from onnx import TensorProto, helper

    tensor = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")
    return tensor


def external_in_function_default() -> bytes:
    """A server-side file named by the default value of a local function's attribute."""
    from onnx import AttributeProto, helper

    nodes, initializers = first_three(out="scores")
    default = AttributeProto(name="value", type=AttributeProto.TENSOR, t=external_tensor())
    function = helper.make_function(
        "local",
        "Hidden",
        [],
        ["c"],
        [helper.make_node("Constant", [], ["c"])],
        [helper.make_opsetid("", 17)],
        attributes=[],
    )
    function.attribute_proto.append(default)
    return graph_of(nodes, initializers, functions=(function,))


def external_in_training_info() -> bytes:
    """A server-side file named by an initializer of the training graphs (ONNX Runtime ignores them)."""
    from onnx import TrainingInfoProto, helper

    nodes, initializers = first_three(out="scores")
    algorithm = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["w_out"])],
        "train",
        [],
        [helper.make_tensor_value_info("w_out", 1, [1])],
        [external_tensor()],
    )
    return graph_of(nodes, initializers, training=(TrainingInfoProto(algorithm=algorithm),))


def only_at_batch_two() -> bytes:
    """Scores reshaped to a fixed (2, 3): right for a smoke test of two images, wrong for any other."""
    from onnx import TensorProto, helper

    nodes, initializers = first_three()
    nodes.append(helper.make_node("Reshape", ["three", "two_by_three"], ["scores"]))
    return graph_of(nodes, [*initializers, helper.make_tensor("two_by_three", TensorProto.INT64, [2], [2, 3])])


def spinning_on_bright_pixels() -> bytes:
    """A Loop of (brightest pixel, 0..1) x 10**12 trips: a black image answers at once (the model
    server's warm-up sends one), a white one spins for hours."""
    return spinning_graph(trips="pixels")


def allocating_off_batch_two() -> bytes:
    """Behaves at a batch of two; at any other size it allocates (batch - 2)^2 x 8 GiB."""
    from onnx import TensorProto, helper

    nodes, initializers = first_three()
    nodes += [
        helper.make_node("Shape", ["pixels"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Sub", ["n", "two"], ["off"]),
        helper.make_node("Mul", ["off", "off"], ["off2"]),
        helper.make_node("Mul", ["off2", "giga"], ["size"]),
        helper.make_node("Unsqueeze", ["size", "axis0"], ["dims"]),
        helper.make_node(
            "ConstantOfShape", ["dims"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero_f"], ["nothing"]),
        helper.make_node("Add", ["three", "nothing"], ["scores"]),
    ]
    initializers += [
        helper.make_tensor("zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("two", TensorProto.INT64, [], [2]),
        helper.make_tensor("giga", TensorProto.INT64, [], [2**31]),
        helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("zero_f", TensorProto.FLOAT, [1], [0.0]),
    ]
    return graph_of(nodes, initializers)


def sized_input_graph(shape: tuple, datatype: int = 1) -> bytes:  # type: ignore[type-arg]
    """A graph taking ``shape`` (batch free) and answering the first 3 values of each row."""
    from onnx import TensorProto, helper

    nodes, initializers = first_three()
    nodes.append(helper.make_node("Cast", ["three"], ["scores"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "sized",
        [helper.make_tensor_value_info("pixels", datatype, [None, *shape])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def package_of(graph: bytes, name: str, labels: list[str]) -> bytes:
    """``graph`` packaged as an 8x8 grey image model without the import's checks (a graph that got
    past them), as the model servers load it."""
    from aiplatform.model_import import onnx_model_config
    from aiplatform.packaging import build_package

    signature: dict[str, Any] = {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
        "opset": 17,
    }
    config = onnx_model_config(name=name, kind="image", labels=labels, signature=signature)
    return build_package(model_config=config, metrics={}, lineage={}, model_file=graph)
