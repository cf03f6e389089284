"""The Open Inference Protocol's binary tensor data extension, as standard clients send it.

Triton's extension, which KServe's clients use by default: the body is a JSON header whose length
is in ``Inference-Header-Content-Length``, followed by the raw bytes of every input that carries
``parameters.binary_data_size`` (in input order). Numbers are little-endian; a ``BYTES`` element
is a 4-byte little-endian length and its bytes. Outputs come back the same way when the request
asks (``binary_data`` on a requested output, or ``binary_data_output`` for all of them).

Everything here is sized by the body it came in, so the body limit bounds it; a header or tensor
that does not add up is a 400 naming what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.kinds.tensors import MAX_TENSOR_VALUES, V2_DATATYPES
from aiplatform.serving.parsing import parse_json

HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")


def is_count(text: str) -> bool:
    """A plain decimal count (ASCII digits, at most 12): ``int()`` also takes other scripts' digits."""
    return text.isascii() and text.isdecimal() and len(text) <= 12


def split_body(raw: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(parsed JSON header, the tensor bytes after it); without the header, the whole body is JSON."""
    if header_length is None:
        return parse_json(raw), b""
    if not is_count(header_length.strip()):
        raise InvalidArgument(f"Inference-Header-Content-Length must be a byte count, got {header_length[:40]!r}")
    length = int(header_length)
    if length > len(raw):
        raise InvalidArgument(f"Inference-Header-Content-Length is {length} but the body has only {len(raw)} bytes")
    return parse_json(raw[:length]), raw[length:]


def _element_count(name: str, shape: Any) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidArgument(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)  # exact: numpy's int64 product wraps around on hostile shapes
    if count > MAX_TENSOR_VALUES:
        raise TooLarge(f"input {name!r}: shape {shape} is over the limit of {MAX_TENSOR_VALUES} values")
    return count


def decode_tensor(name: str, datatype: Any, shape: Any, data: bytes) -> Any:
    """One input's raw bytes -> its values: a flat array of numbers, or a list of strings for BYTES."""
    count = _element_count(name, shape)
    if datatype == "BYTES":
        texts, offset = [], 0
        while offset < len(data):
            if len(texts) == count:
                raise InvalidArgument(f"input {name!r}: more BYTES elements than shape {shape} holds")
            if offset + _LENGTH.size > len(data):
                raise InvalidArgument(f"input {name!r}: BYTES element {len(texts)} is cut off in its length")
            (size,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            if offset + size > len(data):
                raise InvalidArgument(
                    f"input {name!r}: BYTES element {len(texts)} says {size} bytes, only {len(data) - offset} remain"
                )
            try:
                texts.append(data[offset : offset + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidArgument(f"input {name!r}: BYTES element {len(texts)} is not UTF-8 text") from None
            offset += size
        if len(texts) != count:
            raise InvalidArgument(f"input {name!r}: {len(texts)} BYTES elements but shape {shape} needs {count}")
        return texts
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise InvalidArgument(
            f"input {name!r}: unknown datatype {datatype!r}; use BYTES or one of {sorted(V2_DATATYPES)}"
        )
    dtype = np.dtype(V2_DATATYPES[datatype]).newbyteorder("<")
    if len(data) != count * dtype.itemsize:
        raise InvalidArgument(
            f"input {name!r}: {len(data)} bytes do not match shape {shape} of {datatype} "
            f"({count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(data, dtype=dtype)


def attach_binary_inputs(body: Any, binary: bytes) -> Any:
    """The request with each binary input's ``data`` filled in from ``binary``, which they must
    use up exactly; a body without binary inputs comes back as it is."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        if binary:
            raise InvalidArgument("The body has tensor bytes after its JSON header but no 'inputs' list")
        return body
    offset = 0
    for tensor in inputs:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        name = tensor.get("name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"input {name!r}: binary_data_size must be a byte count, got {size!r}")
        if "data" in tensor:
            raise InvalidArgument(f"input {name!r} has both 'data' and binary_data_size")
        if offset + size > len(binary):
            raise InvalidArgument(
                f"input {name!r}: binary_data_size {size} goes past the end of the body "
                f"({len(binary) - offset} bytes remain)"
            )
        tensor["data"] = decode_tensor(
            name, tensor.get("datatype"), tensor.get("shape"), binary[offset : offset + size]
        )
        offset += size
    if offset != len(binary):
        raise InvalidArgument(f"The body has {len(binary) - offset} bytes after its tensors that no input claims")
    return body


@dataclass(frozen=True)
class RequestedOutputs:
    """Which outputs a request wants (None: all) and which of them as binary."""

    names: tuple[str, ...] | None
    binary: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.binary) or self.names is not None


def requested_outputs(body: Any, known: list[str]) -> RequestedOutputs:
    """The request's ``outputs`` and ``binary_data_output``; an output the model lacks is a 400."""
    if not isinstance(body, dict):
        return RequestedOutputs(None, frozenset())
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    all_binary = parameters.get("binary_data_output") is True
    outputs = body.get("outputs")
    if outputs is None:
        return RequestedOutputs(None, frozenset(known) if all_binary else frozenset())
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument("'outputs' must be a list of objects with a 'name'")
    names, binary = [], set()
    for output in outputs:
        name = output["name"]
        if name not in known:
            raise InvalidArgument(f"Unknown output {name[:64]!r}; this model has {known}")
        names.append(name)
        wants = (
            (output.get("parameters") or {}).get("binary_data") if isinstance(output.get("parameters"), dict) else None
        )
        if wants is True or (wants is None and all_binary):
            binary.add(name)
    return RequestedOutputs(tuple(names), frozenset(binary))


def select_outputs(outputs: list[dict[str, Any]], names: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """The response's output tensors a request named, in its order (None: all of them)."""
    if names is None:
        return outputs
    by_name = {output["name"]: output for output in outputs}
    return [by_name[name] for name in names]


def encode_tensor(datatype: str, values: list[Any]) -> bytes:
    """An output's values as the extension's bytes."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in (str(v).encode("utf-8") for v in values))
    return np.asarray(values, dtype=np.dtype(V2_DATATYPES[datatype]).newbyteorder("<")).tobytes()


def shape_response(response: dict[str, Any], requested: RequestedOutputs) -> tuple[bytes, dict[str, str]]:
    """An infer response as the request asked: only the requested outputs, the binary ones as bytes
    after the JSON header. Returns the body and its headers."""
    outputs = select_outputs(response["outputs"], requested.names)
    tensors: list[bytes] = []
    shaped = []
    for output in outputs:
        if output["name"] in requested.binary:
            data = encode_tensor(output["datatype"], output["data"])
            tensors.append(data)
            output = {k: v for k, v in output.items() if k != "data"}
            output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(data)}
        shaped.append(output)
    header = json.dumps({**response, "outputs": shaped}, separators=(",", ":")).encode()
    if not tensors:
        return header, {"content-type": "application/json"}
    return header + b"".join(tensors), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
