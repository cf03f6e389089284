"""The binary tensor data extension: bodies as standard clients build them, and the bad ones."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.serving.oip_binary import (
    RequestedOutputs,
    attach_binary_inputs,
    requested_outputs,
    shape_response,
    split_body,
)

pytestmark = pytest.mark.unit


def binary_request(header: dict, *tensors: bytes) -> tuple[bytes, str]:
    raw = json.dumps(header).encode()
    return raw + b"".join(tensors), str(len(raw))


def bytes_tensor(*texts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


def test_numeric_and_bytes_inputs_are_decoded_in_order() -> None:
    pixels = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    texts = bytes_tensor("héllo".encode(), b"")
    raw, length = binary_request(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [2, 4, 4],
                    "parameters": {"binary_data_size": pixels.nbytes},
                },
                {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(texts)}},
            ]
        },
        pixels.tobytes(),
        texts,
    )
    body = attach_binary_inputs(*split_body(raw, length))
    np.testing.assert_array_equal(body["inputs"][0]["data"], pixels.reshape(-1))
    assert body["inputs"][1]["data"] == ["héllo", ""]


def test_a_body_without_the_header_is_plain_json() -> None:
    body, binary = split_body(b'{"inputs": []}', None)
    assert body == {"inputs": []} and binary == b""


@pytest.mark.parametrize(
    "header, tensors, length, fragment",
    [
        ({"inputs": []}, [], "999", "Inference-Header-Content-Length is 999 but the body has only"),
        ({"inputs": []}, [], "ten", "must be a byte count"),
        (
            {
                "inputs": [
                    {"name": "input", "datatype": "UINT8", "shape": [1, 4], "parameters": {"binary_data_size": 3}}
                ]
            },
            [b"abc"],
            None,
            "3 bytes do not match shape [1, 4]",
        ),
        (
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 8}}]},
            [b"abcd"],
            None,
            "goes past the end",
        ),
        (
            {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [2], "parameters": {"binary_data_size": 2}}]},
            [b"ab", b"extra"],
            None,
            "5 bytes after its tensors",
        ),
        (
            {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}}]},
            [bytes_tensor(b"hello")],
            None,
            "1 BYTES elements",
        ),
        (
            {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
            [struct.pack("<I", 50) + b"hi"],
            None,
            "says 50 bytes",
        ),
        (
            {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
            [bytes_tensor(b"\xff\xfe")],
            None,
            "not UTF-8",
        ),
        (
            {"inputs": [{"name": "input", "datatype": "COMPLEX", "shape": [1], "parameters": {"binary_data_size": 1}}]},
            [b"a"],
            None,
            "unknown datatype 'COMPLEX'",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "UINT8",
                        "shape": [1],
                        "data": [1],
                        "parameters": {"binary_data_size": 1},
                    }
                ]
            },
            [b"a"],
            None,
            "both 'data' and binary_data_size",
        ),
        (
            {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [-1], "parameters": {"binary_data_size": 1}}]},
            [b"a"],
            None,
            "non-negative integers",
        ),
        (
            {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 400}}]},
            [bytes_tensor(*[b""] * 100)],
            None,
            "more BYTES elements than shape [1] holds",
        ),
        (
            {"inputs": [{"name": "input", "datatype": ["UINT8"], "shape": [1], "parameters": {"binary_data_size": 1}}]},
            [b"a"],
            None,
            "unknown datatype ['UINT8']",
        ),
        ({"inputs": []}, [], "\u00b2", "must be a byte count"),  # a superscript two: isdigit() says yes
    ],
)
def test_bodies_that_do_not_add_up_are_refused_naming_the_problem(
    header: dict, tensors: list[bytes], length: str | None, fragment: str
) -> None:
    raw, own_length = binary_request(header, *tensors)
    with pytest.raises(InvalidArgument) as refused:
        attach_binary_inputs(*split_body(raw, length or own_length))
    assert fragment in str(refused.value)


@pytest.mark.parametrize("shape", [[1 << 20, 1 << 20], [1, (1 << 62) + 1, 4], [1 << 70]])
def test_a_shape_beyond_the_tensor_limit_is_refused_before_reading(shape: list[int]) -> None:
    """Also shapes whose product wraps around in 64-bit arithmetic (to 4 here) or overflows it."""
    raw, length = binary_request(
        {"inputs": [{"name": "input", "datatype": "UINT8", "shape": shape, "parameters": {"binary_data_size": 1}}]},
        b"a",
    )
    with pytest.raises(TooLarge):
        attach_binary_inputs(*split_body(raw, length))


RESPONSE = {
    "model_name": "m",
    "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]},
    ],
}


def test_outputs_come_back_binary_when_asked_and_json_otherwise() -> None:
    wanted = requested_outputs(
        {"outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}]},
        ["probabilities", "label"],
    )
    content, headers = shape_response(RESPONSE, wanted)
    header_length = int(headers["inference-header-content-length"])
    header = json.loads(content[:header_length])
    assert [o["name"] for o in header["outputs"]] == ["label", "probabilities"]
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 7 and "data" not in header["outputs"][0]
    assert header["outputs"][1]["data"] == [0.25, 0.75]
    assert content[header_length:] == bytes_tensor(b"cat")

    every = requested_outputs({"parameters": {"binary_data_output": True}}, ["probabilities", "label"])
    content, headers = shape_response(RESPONSE, every)
    tail = content[int(headers["inference-header-content-length"]) :]
    np.testing.assert_array_equal(np.frombuffer(tail[:8], "<f4"), [0.25, 0.75])

    content, headers = shape_response(RESPONSE, RequestedOutputs(None, frozenset()))
    assert headers == {"content-type": "application/json"} and json.loads(content) == RESPONSE


def test_an_unknown_output_name_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="Unknown output 'logits'"):
        requested_outputs({"outputs": [{"name": "logits"}]}, ["probabilities", "label"])
