"""ONNX graphs in packages: checked before they are trusted, run by ONNX Runtime.

A package whose architecture is ``{"type": "onnx", ...}`` holds ``model.onnx`` in place of
``weights.safetensors``: a graph of standard operators with its weights inside it. Loading one
runs none of its producer's code (no pickle, no Python), so a model trained anywhere (or a custom
``nn.Module`` whose source the servers never see) serves like the platform's own.

The graph is checked when it enters the platform (:func:`inspect_graph`): it parses, passes ONNX's
checker, keeps no tensor in external files (anywhere: subgraphs, local functions, their attribute
defaults, training graphs), uses only the standard operator domains and no control flow (``If``,
``Loop``, ``Scan``: a loop's trip count can come from the batch size), has one input and a
(batch, classes) output, and ONNX Runtime can build a session for it (an operator it lacks fails
here, not at the first request). Every run has a deadline (:class:`OnnxModule`): a call still
running after ``run_timeout_s`` is stopped and fails alone; the session answers the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from aiplatform.errors import IntegrityError, InvalidArgument, Unavailable

ONNX_FILE = "model.onnx"
ONNX_ARCHITECTURE = "onnx"
MIN_OPSET = 7
LAYOUTS = ("NCHW", "NHWC", "NF")
"""Image graphs take (batch, channels, height, width) or (batch, height, width, channels); other
graphs a (batch, features) matrix."""
SCORES = ("logits", "probabilities")
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
"""Operator domains a served graph may use: ONNX's own operators (contrib domains such as
``com.microsoft`` are ONNX Runtime internals with their own, less reviewed kernels)."""
RUN_TIMEOUT_S = 10.0
"""Default deadline of one ONNX Runtime call (``AIP_SERVE_ONNX_RUN_TIMEOUT_S`` sets the model
servers'): under Serve's 30 s health-check timeout, as the call holds the replica's event loop."""
_DATATYPES = {  # ONNX TensorProto element type -> Open Inference Protocol datatype
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
}
_NUMPY = {
    "FP32": np.float32,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP64": np.float64,
}


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
    tensors, nodes = _contents(model)
    external = [t.name or "(unnamed)" for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise InvalidArgument(
            f"The ONNX model keeps weights in external data files ({', '.join(external[:3])}"
            f"{'...' if len(external) > 3 else ''}); save it with every tensor inside the file"
        )
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})
    if foreign:
        raise InvalidArgument(
            f"The ONNX model uses operators outside the standard ONNX domains ({', '.join(foreign[:3])}"
            f"{'...' if len(foreign) > 3 else ''}); only {', '.join(repr(d) for d in STANDARD_DOMAINS)} "
            "are served: export it without contrib operators, local functions or optimizer fusions"
        )
    control = sorted({n.op_type for n in nodes if any(a.HasField("g") or a.graphs for a in n.attribute)})
    if control:
        raise InvalidArgument(
            f"The ONNX model uses control flow ({', '.join(control)}): operators that run "
            "subgraphs (If, Loop, Scan) may run as long as their inputs say, so they are not "
            "served; export the model without data-dependent loops or branches"
        )
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
        raise InvalidArgument(
            "The ONNX model's first output must be a numeric (batch, classes) tensor, got "
            f"{outputs[0]['datatype'] if outputs else 'no output'}"
        )
    if len(inputs) != 1:
        raise InvalidArgument(
            f"The ONNX model takes {len(inputs)} inputs ({[i['name'] for i in inputs]}); "
            "a classifier here takes one tensor"
        )
    if inputs[0]["datatype"] not in _NUMPY:
        raise InvalidArgument(
            f"The ONNX model's input {inputs[0]['name']!r} is {inputs[0]['datatype']}; supported: {sorted(_NUMPY)}"
        )
    if not inputs[0]["shape"] or inputs[0]["shape"][0] != -1:
        raise InvalidArgument(
            f"The ONNX model's input {inputs[0]['name']!r} has shape {inputs[0]['shape']}: its first "
            "(batch) dimension must be free, as the servers batch requests (export with a "
            "dynamic batch axis)"
        )
    if len(outputs[0]["shape"]) != 2:
        raise InvalidArgument(
            f"The ONNX model's first output {outputs[0]['name']!r} has shape {outputs[0]['shape']}; "
            "a classifier's is (batch, classes)"
        )
    new_session(data)  # an operator ONNX Runtime lacks fails here
    return {"inputs": inputs, "outputs": outputs, "opset": int(opset)}


def new_session(data: bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU, with ``threads`` (default: torch's, which the model
    server sets) intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        message = str(exc).replace("\n", " ")[:400]
        if "NOT_IMPLEMENTED" in message or "Could not find an implementation" in message:
            raise InvalidArgument(f"The ONNX model uses an operator ONNX Runtime lacks: {message}") from None
        raise InvalidArgument(f"ONNX Runtime cannot load the model: {message}") from None


class _Watchdog:
    """One daemon thread that sets ``terminate`` on the ``RunOptions`` of ONNX Runtime calls past
    their deadline (ONNX Runtime checks the flag between kernels, inside loops too, and fails
    that call; the session stays usable). Cheaper than a timer thread per call."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._calls: dict[int, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def deadline(self, options: Any, timeout_s: float) -> Iterator[None]:
        key = id(options)
        with self._changed:
            self._calls[key] = (time.monotonic() + timeout_s, options)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="onnx-deadlines", daemon=True)
                self._thread.start()
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                self._calls.pop(key, None)

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, (due, options) in list(self._calls.items()):
                    if due <= now:
                        options.terminate = True
                        del self._calls[key]
                earliest = min((due for due, _ in self._calls.values()), default=None)
                self._changed.wait(None if earliest is None else earliest - now)


_WATCHDOG = _Watchdog()


class OnnxModule(nn.Module):
    """An ONNX graph behind ``nn.Module``'s call, so the model server batches, times and answers
    for it as for any network: float (N, C, H, W) or (N, F) tensors in, (N, classes) scores out
    (log-probabilities when the graph gives probabilities, so the runner's softmax returns them).

    A call running longer than ``run_timeout_s`` is stopped and raises :class:`Unavailable`: a
    graph that spins on some batch size fails that request, and the replica answers the next."""

    def __init__(self, data: bytes, architecture: dict[str, Any], run_timeout_s: float = RUN_TIMEOUT_S) -> None:
        super().__init__()
        self.run_timeout_s = run_timeout_s
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
        import onnxruntime as ort

        options = ort.RunOptions()
        try:
            with _WATCHDOG.deadline(options, self.run_timeout_s):
                (scores,) = self.session.run([self.output_name], {self.input_name: array}, options)
        except Exception as exc:
            if options.terminate:
                raise Unavailable(
                    f"The ONNX model did not answer {len(array)} input(s) within {self.run_timeout_s:g} s "
                    "(AIP_SERVE_ONNX_RUN_TIMEOUT_S); the call was stopped"
                ) from None
            raise InvalidArgument(
                f"The ONNX model refused the input of shape {list(array.shape)}: {str(exc).splitlines()[0][:300]}"
            ) from None
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
    return {
        "name": value.name,
        "datatype": _DATATYPES.get(tensor.elem_type, f"onnx-type-{tensor.elem_type}"),
        "shape": dims,
    }


def _contents(model: Any) -> tuple[list[Any], list[Any]]:
    """(every tensor stored in the model, every node) wherever they are: initializers (dense and
    sparse) and node attributes of the main graph, of every subgraph (If/Loop bodies), of every
    local function (its nodes and its attributes' default values) and of training graphs."""
    tensors: list[Any] = []
    nodes: list[Any] = []

    def sparse(tensor: Any) -> None:
        tensors.extend((tensor.values, tensor.indices))

    def attributes(attribute_list: Any) -> None:
        for attribute in attribute_list:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
            tensors.extend(attribute.tensors)
            if attribute.HasField("sparse_tensor"):
                sparse(attribute.sparse_tensor)
            for item in attribute.sparse_tensors:
                sparse(item)
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                graph(sub)

    def graph(g: Any) -> None:
        tensors.extend(g.initializer)
        for item in g.sparse_initializer:
            sparse(item)
        nodes.extend(g.node)
        for node in g.node:
            attributes(node.attribute)

    graph(model.graph)
    for function in model.functions:
        nodes.extend(function.node)
        for node in function.node:
            attributes(node.attribute)
        attributes(function.attribute_proto)
    for training in model.training_info:
        for g in (training.initialization, training.algorithm):
            graph(g)
    return tensors, nodes
