"""Open Inference Protocol gRPC messages <-> the bodies the REST path works on.

An infer request becomes the same body a REST request parses to (inputs with their ``data``,
requested outputs, id), so both transports share one code path, the inference core
(aiplatform.serving.dataplane): routing, batching, results, metrics. Inputs come as ``raw_input_contents`` (what standard clients send) or as typed
``contents``; outputs go back as ``raw_output_contents``, as Triton and KServe servers answer.
"""

from __future__ import annotations

from typing import Any

from aiplatform.errors import AIPError, InvalidArgument
from aiplatform.serving.oip_binary import decode_tensor, encode_tensor, is_count, select_outputs
from aiplatform.serving.oip_grpc import predict_v2_pb2 as pb

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
GRPC_STATUS_BY_CODE = {
    "invalid_argument": "INVALID_ARGUMENT",
    "integrity_error": "INVALID_ARGUMENT",
    "too_large": "RESOURCE_EXHAUSTED",
    "forbidden": "PERMISSION_DENIED",
    "unauthenticated": "UNAUTHENTICATED",
    "not_found": "NOT_FOUND",
    "already_exists": "ALREADY_EXISTS",
    "conflict": "FAILED_PRECONDITION",
    "unavailable": "UNAVAILABLE",
}


def grpc_status_name(error: AIPError) -> str:
    """The ``grpc.StatusCode`` name for a platform error (``INTERNAL`` for anything unexpected)."""
    return GRPC_STATUS_BY_CODE.get(error.code, "INTERNAL")


def version_number(version: str) -> int | None:
    """A request's ``model_version``: empty means the version the server routes to."""
    if not version:
        return None
    if not is_count(version):
        raise InvalidArgument(f"model_version must be a version number, got {version[:40]!r}")
    return int(version)


def _parameters(parameters: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values


def _typed_values(tensor: Any) -> Any:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(f"input {tensor.name!r}: datatype {tensor.datatype!r} must come as raw_input_contents")
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        try:
            return [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            raise InvalidArgument(f"input {tensor.name!r}: a BYTES element is not UTF-8 text") from None
    return values


def infer_request_body(request: Any) -> dict[str, Any]:
    """A ``ModelInferRequest`` as the REST body the gateway's infer path takes."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"input {tensor.name!r} has both contents and raw_input_contents")
            data = decode_tensor(tensor.name, tensor.datatype, shape, raw[index])
        else:
            data = _typed_values(tensor)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": shape,
                "data": data,
                "parameters": _parameters(tensor.parameters),
            }
        )
    body: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(request.parameters)}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": output.name} for output in request.outputs]
    return body


def infer_response_message(response: dict[str, Any], names: tuple[str, ...] | None) -> Any:
    """A REST infer response (outputs with their ``data``) as a ``ModelInferResponse``, the
    requested outputs (None: all) as raw contents."""
    message = pb.ModelInferResponse(
        model_name=response["model_name"], model_version=response["model_version"], id=response.get("id") or ""
    )
    for key, value in (response.get("parameters") or {}).items():
        message.parameters[key].string_param = str(value)
    for output in select_outputs(response["outputs"], names):
        message.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        message.raw_output_contents.append(encode_tensor(output["datatype"], output["data"]))
    return message


def model_metadata_message(metadata: dict[str, Any]) -> Any:
    """``GET /v2/models/{name}``'s body as a ``ModelMetadataResponse``."""
    message = pb.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for key in ("inputs", "outputs"):
        for tensor in metadata[key]:
            getattr(message, key).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return message
