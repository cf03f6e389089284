"""The gRPC messages of the Open Inference Protocol, read and written as the REST path's bodies."""

from __future__ import annotations

import numpy as np
import pytest

from aiplatform.errors import InvalidArgument, Unauthenticated, Unavailable
from aiplatform.serving.oip_binary import encode_tensor
from aiplatform.serving.oip_grpc import predict_v2_pb2 as pb
from aiplatform.serving.oip_grpc.access import grpc_refusal
from aiplatform.serving.oip_grpc.messages import (
    grpc_status_name,
    infer_request_body,
    infer_response_message,
    version_number,
)

pytestmark = pytest.mark.unit


def test_raw_and_typed_inputs_become_the_rest_body() -> None:
    pixels = np.arange(8, dtype=np.uint8)
    request = pb.ModelInferRequest(
        model_name="m", id="req-1", raw_input_contents=[pixels.tobytes(), encode_tensor("BYTES", ["hé"])]
    )
    request.inputs.add(name="input", datatype="UINT8", shape=[1, 8])
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.outputs.add(name="label")
    body = infer_request_body(request)
    np.testing.assert_array_equal(body["inputs"][0]["data"], pixels)
    assert body["inputs"][1]["data"] == ["hé"] and body["id"] == "req-1" and body["outputs"] == [{"name": "label"}]

    typed = pb.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="input", datatype="FP32", shape=[2])
    tensor.contents.fp32_contents.extend([0.5, 1.5])
    assert infer_request_body(typed)["inputs"][0]["data"] == [0.5, 1.5]


@pytest.mark.parametrize(
    "build, fragment",
    [
        (
            lambda r: (r.inputs.add(name="a", datatype="UINT8", shape=[1]), r.raw_input_contents.extend([b"a", b"b"])),
            "2 entries for 1 inputs",
        ),
        (
            lambda r: (r.inputs.add(name="a", datatype="UINT8", shape=[2]), r.raw_input_contents.append(b"a")),
            "1 bytes do not match shape [2]",
        ),
        (lambda r: r.inputs.add(name="a", datatype="FP16", shape=[1]), "must come as raw_input_contents"),
    ],
)
def test_requests_that_do_not_add_up_are_refused(build, fragment: str) -> None:  # type: ignore[no-untyped-def]
    request = pb.ModelInferRequest(model_name="m")
    build(request)
    with pytest.raises(InvalidArgument, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        infer_request_body(request)


def test_outputs_go_back_as_raw_contents_in_the_requested_order() -> None:
    response = {
        "model_name": "m",
        "model_version": "2",
        "id": "x",
        "parameters": {"request_id": "abc"},
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]},
        ],
    }
    message = infer_response_message(response, ("label", "probabilities"))
    assert [o.name for o in message.outputs] == ["label", "probabilities"]
    assert message.raw_output_contents[0] == b"\x03\x00\x00\x00cat"
    np.testing.assert_array_equal(np.frombuffer(message.raw_output_contents[1], "<f4"), [0.25, 0.75])
    assert message.parameters["request_id"].string_param == "abc" and message.model_version == "2"


def test_versions_tokens_and_status_codes() -> None:
    assert version_number("") is None and version_number("12") == 12
    with pytest.raises(InvalidArgument):
        version_number("v1")
    assert grpc_refusal("off", None, None) is None
    assert grpc_refusal("token", "s3cret", "Bearer s3cret") is None
    assert isinstance(grpc_refusal("token", "s3cret", "Bearer nope"), Unauthenticated)
    assert isinstance(grpc_refusal("token", None, "Bearer s3cret"), Unavailable)  # fails closed
    assert grpc_status_name(Unauthenticated("x")) == "UNAUTHENTICATED"
    assert grpc_status_name(InvalidArgument("x")) == "INVALID_ARGUMENT"
