"""Open Inference Protocol (KServe v2) input tensors, decoded into each kind's model inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.kinds.images import image_from_array, image_shape
from aiplatform.limits import RequestLimits

V2_DATATYPES = {
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
FLOAT_DATATYPES = ("FP32", "FP16", "FP64")
MAX_TENSOR_VALUES = 64 * 1024 * 1024


def single_input(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InvalidArgument("Infer request needs a non-empty 'inputs' list")
    if len(body["inputs"]) != 1:
        raise InvalidArgument(f"Model takes one input tensor, got {len(body['inputs'])}")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise InvalidArgument("Each input must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise InvalidArgument(f"Input tensor lacks {key!r}")
    return tensor


def texts_from_infer_request(body: Any, limits: RequestLimits = RequestLimits()) -> list[str]:
    """A v2 infer request for a text model: a BYTES tensor of shape [N], one document each."""
    tensor = single_input(body)
    if tensor["datatype"] != "BYTES":
        raise InvalidArgument(f"This model takes text: a BYTES tensor, not {tensor['datatype']!r}")
    data, shape = tensor["data"], tensor["shape"]
    if not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise InvalidArgument(f"shape must be [N] for N texts, got {shape!r}")
    limits.check_rows(shape[0], "The BYTES tensor")
    if not isinstance(data, list) or len(data) != shape[0] or not all(isinstance(t, str) for t in data):
        raise InvalidArgument(f"data must be a list of {shape[0]} strings")
    return data


def images_from_infer_request(
    body: Any, input_spec: Mapping[str, Any], limits: RequestLimits = RequestLimits()
) -> tuple[list[np.ndarray], str | None]:
    """A v2 infer request -> one uint8 (H, W, C) image per row of the ``input`` tensor."""
    tensor = single_input(body)
    datatype = tensor["datatype"]
    if datatype == "BYTES":
        raise InvalidArgument("This model takes image tensors (UINT8 or FP32 pixels), not BYTES")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise InvalidArgument(f"Unknown datatype {datatype!r}; use one of {sorted(V2_DATATYPES)}")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise InvalidArgument(f"shape must be a list of positive integers, got {shape!r}")
    height, width, channels = image_shape(input_spec)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise InvalidArgument(
            f"shape must be [N, H, W] or [N, H, W, C]; this model expects [N, {height}, {width}, {channels}],"
            f" got {shape}"
        )
    limits.check_rows(shape[0], "The input tensor")
    # What the rows become once resized, not what was sent, is the work: checked before any of it.
    limits.check_decoded(shape[0], (height, width, channels))
    expected = math.prod(shape)  # exact: numpy's int64 product wraps around on hostile shapes
    if expected > MAX_TENSOR_VALUES:
        raise TooLarge(f"Tensor of shape {shape} is over the limit of {MAX_TENSOR_VALUES} values")
    try:
        values = np.asarray(tensor["data"], dtype=np.float64).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"data is not numeric: {exc}") from exc
    if values.size != expected:
        raise InvalidArgument(f"data has {values.size} values but shape {shape} needs {expected}")
    array = values.reshape(shape)
    return [image_from_array(row, input_spec) for row in array], tensor.get("name")
