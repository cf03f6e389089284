"""ONNX graphs in packages: checked before they are trusted, run by ONNX Runtime.

A package whose architecture is ``{"type": "onnx", ...}`` holds ``model.onnx`` in place of
``weights.safetensors``: a graph of standard operators with its weights inside it. Loading one
runs none of its producer's code (no pickle, no Python), so a model trained anywhere (or a custom
``nn.Module`` whose source the servers never see) serves like the platform's own.

The graph is checked when it enters the platform (:func:`inspect_graph`): it parses, passes ONNX's
checker, keeps no weights in external files, has one input and a (batch, classes) output, and
ONNX Runtime can build a session for it (an operator it lacks fails here, not at the first request).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from aiplatform.errors import IntegrityError, InvalidArgument

ONNX_FILE = "model.onnx"
ONNX_ARCHITECTURE = "onnx"
MIN_OPSET = 7
LAYOUTS = ("NCHW", "NHWC", "NF")
"""Image graphs take (batch, channels, height, width) or (batch, height, width, channels); other
graphs a (batch, features) matrix."""
SCORES = ("logits", "probabilities")
_DATATYPES = {  # ONNX TensorProto element type -> Open Inference Protocol datatype
    1: "FP32", 2: "UINT8", 3: "INT8", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "FP64",
}
_NUMPY = {"FP32": np.float32, "UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP64": np.float64}


def inspect_graph(data: bytes, *, max_bytes: int) -> dict[str, Any]:
    """The graph's signature (``inputs``/``outputs``: name, datatype, shape with -1 for any
    size; ``opset``), once it is known to be a self-contained graph ONNX Runtime can run;
    :class:`InvalidArgument` names what is wrong otherwise."""
    import onnx
    from google.protobuf.message import DecodeError

    if len(data) > max_bytes:
        raise InvalidArgument(f"The ONNX file is {len(data):,} bytes, over the limit of {max_bytes:,}")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidArgument(f"The file is not an ONNX model (it does not parse: {exc})") from None
    if not model.graph.node:
        raise InvalidArgument("The file is not an ONNX model (its graph has no nodes)")
    external = [t.name or "(unnamed)" for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise InvalidArgument(f"The ONNX model keeps weights in external data files ({', '.join(external[:3])}"
                              f"{'...' if len(external) > 3 else ''}); save it with every tensor inside the file")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise InvalidArgument(f"The ONNX model's opset is {opset}; at least {MIN_OPSET} is needed")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise InvalidArgument(f"The ONNX model fails ONNX's checker: {str(exc).splitlines()[0][:300]}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_spec(value) for value in model.graph.input if value.name not in initializers]
    outputs = [_spec(value) for value in model.graph.output]
    if not outputs or outputs[0]["datatype"] not in _NUMPY:
        raise InvalidArgument("The ONNX model's first output must be a numeric (batch, classes) tensor, got "
                              f"{outputs[0]['datatype'] if outputs else 'no output'}")
    if len(inputs) != 1:
        raise InvalidArgument(f"The ONNX model takes {len(inputs)} inputs ({[i['name'] for i in inputs]}); "
                              "a classifier here takes one tensor")
    if inputs[0]["datatype"] not in _NUMPY:
        raise InvalidArgument(f"The ONNX model's input {inputs[0]['name']!r} is {inputs[0]['datatype']}; "
                              f"supported: {sorted(_NUMPY)}")
    if not inputs[0]["shape"] or inputs[0]["shape"][0] != -1:
        raise InvalidArgument(f"The ONNX model's input {inputs[0]['name']!r} has shape {inputs[0]['shape']}: its first "
                              "(batch) dimension must be free, as the servers batch requests (export with a "
                              "dynamic batch axis)")
    if len(outputs[0]["shape"]) != 2:
        raise InvalidArgument(f"The ONNX model's first output {outputs[0]['name']!r} has shape {outputs[0]['shape']}; "
                              "a classifier's is (batch, classes)")
    new_session(data)  # an operator ONNX Runtime lacks fails here
    return {"inputs": inputs, "outputs": outputs, "opset": int(opset)}


def new_session(data: bytes, threads: Optional[int] = None) -> Any:
    """An ONNX Runtime session on the CPU, with ``threads`` (default: torch's, which the model
    server sets) intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own classes; the message says what
        message = str(exc).replace("\n", " ")[:400]
        if "NOT_IMPLEMENTED" in message or "Could not find an implementation" in message:
            raise InvalidArgument(f"The ONNX model uses an operator ONNX Runtime lacks: {message}") from None
        raise InvalidArgument(f"ONNX Runtime cannot load the model: {message}") from None


class OnnxModule(nn.Module):
    """An ONNX graph behind ``nn.Module``'s call, so the model server batches, times and answers
    for it as for any network: float (N, C, H, W) or (N, F) tensors in, (N, classes) scores out
    (log-probabilities when the graph gives probabilities, so the runner's softmax returns them)."""

    def __init__(self, data: bytes, architecture: dict[str, Any]) -> None:
        super().__init__()
        self.session = new_session(data)
        self.threads = self.session.get_session_options().intra_op_num_threads
        self._graph = data  # a session's threads are fixed when it is made
        signature = architecture["signature"]
        self.input_name = signature["inputs"][0]["name"]
        self.input_dtype = _NUMPY[signature["inputs"][0]["datatype"]]
        self.output_name = signature["outputs"][0]["name"]
        self.layout = architecture.get("layout", "NCHW")
        self.scores = architecture.get("scores", "logits")

    def use_threads(self, threads: int) -> None:
        """ONNX Runtime's intra-op threads (a new session when they change)."""
        if threads != self.threads:
            self.session, self.threads = new_session(self._graph, threads), threads

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.layout == "NHWC":
            batch = batch.permute(0, 2, 3, 1)
        array = np.ascontiguousarray(batch.detach().cpu().numpy().astype(self.input_dtype, copy=False))
        try:
            (scores,) = self.session.run([self.output_name], {self.input_name: array})
        except Exception as exc:  # noqa: BLE001 - a shape the graph refuses: the caller's input
            raise InvalidArgument(f"The ONNX model refused the input of shape {list(array.shape)}: "
                                  f"{str(exc).splitlines()[0][:300]}") from None
        out = torch.from_numpy(np.asarray(scores, dtype=np.float32))
        return torch.log(out.clamp_min(1e-12)) if self.scores == "probabilities" else out


def load_graph(data: bytes, architecture: dict[str, Any]) -> OnnxModule:
    """The module of a stored graph (its package already verified)."""
    try:
        return OnnxModule(data, architecture)
    except (InvalidArgument, KeyError, TypeError) as exc:
        raise IntegrityError(f"Package model.onnx cannot be loaded: {exc}") from None


def _spec(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
    return {"name": value.name, "datatype": _DATATYPES.get(tensor.elem_type, f"onnx-type-{tensor.elem_type}"),
            "shape": dims}


def _all_tensors(model: Any) -> list[Any]:
    """Every tensor stored in the model: initializers (dense and sparse), node attributes, in the
    main graph, every subgraph (If/Loop bodies) and every local function."""
    found: list[Any] = []

    def sparse(tensor: Any) -> None:
        found.extend((tensor.values, tensor.indices))

    def nodes(node_list: Any) -> None:
        for node in node_list:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    found.append(attribute.t)
                found.extend(attribute.tensors)
                if attribute.HasField("sparse_tensor"):
                    sparse(attribute.sparse_tensor)
                for item in attribute.sparse_tensors:
                    sparse(item)
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    graph(sub)

    def graph(g: Any) -> None:
        found.extend(g.initializer)
        for item in g.sparse_initializer:
            sparse(item)
        nodes(g.node)

    graph(model.graph)
    for function in model.functions:
        nodes(function.node)
    return found
