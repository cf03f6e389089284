"""The Open Inference Protocol (KServe v2) REST shapes: server and model metadata, the infer response.
Input tensors are decoded by each model kind (``aiplatform.kinds``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from aiplatform.kinds import ModelKind

if TYPE_CHECKING:
    from aiplatform.serving.dataplane import Predictions

OUTPUT_NAMES = ["probabilities", "label"]
EXTENSIONS = ["binary_tensor_data"]
"""The protocol extensions the server speaks (``GET /v2``): standard clients check for these."""


def server_metadata() -> dict[str, Any]:
    """``GET /v2``: the server's name, version and extensions."""
    try:
        release = version("aiplatform")
    except PackageNotFoundError:
        release = "dev"
    return {"name": "aiplatform", "version": release, "extensions": EXTENSIONS}


PLATFORMS = {"onnx": "onnxruntime_onnx", "xgboost": "xgboost"}
"""Triton's platform names for the models that are not PyTorch networks."""


def model_metadata(
    name: str, versions: list[int], kind: ModelKind, labels: list[str], architecture: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs (as the model's kind takes them) and outputs as tensors;
    for an ONNX model, Triton's platform name and, in ``parameters``, the graph's own signature
    (what the kind's decoding feeds it); what the kind adds (a table model's features, in order)."""
    inputs = kind.v2_inputs()
    architecture_type = (architecture or {}).get("type")
    parameters = dict(kind.v2_parameters())
    if architecture_type == "onnx" and architecture:
        parameters["onnx_signature"] = architecture["signature"]
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORMS.get(str(architecture_type), "pytorch"),
        **({"parameters": parameters} if parameters else {}),
        "inputs": inputs,
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


def infer_response(
    name: str, version: int, request_id: str | None, labels: list[str], answers: list[dict[str, Any]]
) -> dict[str, Any]:
    probabilities = [[a["probabilities"][label] for label in labels] for a in answers]
    return {
        "model_name": name,
        "model_version": str(version),
        "id": request_id,
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [len(answers), len(labels)],
                "data": [p for row in probabilities for p in row],
            },
            {"name": "label", "datatype": "BYTES", "shape": [len(answers)], "data": [a["label"] for a in answers]},
        ],
    }


def infer_answer(predictions: Predictions) -> dict[str, Any]:
    """An infer request's response body (REST's JSON, gRPC's message made from it): the client's
    id when it sent one, the server's result id in ``parameters.request_id`` always."""
    target = predictions.target
    response = infer_response(
        target.name,
        target.version,
        predictions.client_id or predictions.request_id,
        predictions.labels,
        predictions.answers,
    )
    response["parameters"] = {"request_id": predictions.request_id}
    return response
