"""Hostile imported models (docs/SECURITY.md, "a hostile model file"): ONNX graphs sent to the real
import route under token auth, each refused with its reason, nothing stored, the replica still
answering; and a graph that spins at serving time stopped by the model servers' deadline."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import numpy as np
import pytest

from tests.factories import register_bytes
from tests.hostile import AUTH, GOOD, refused, stored
from tests.onnx_graphs import (
    allocating_off_batch_two,
    branching_graph,
    contrib_graph,
    external_in_function_default,
    external_in_training_info,
    package_of,
    sized_input_graph,
    spinning_graph,
    spinning_on_bright_pixels,
)

IMPORT = "/v1/models/elsewhere/import"
LABELS = "cat,dog,owl"


def form(graph: bytes, kind: str = "image") -> dict[str, Any]:
    return {"data": {"kind": kind, "labels": LABELS}, "files": {"file": ("model.onnx", graph)}}


@pytest.mark.parametrize(
    "graph, message",
    [
        (spinning_graph, "uses control flow (Loop)"),
        (branching_graph, "uses control flow (If)"),
        (contrib_graph, "outside the standard ONNX domains (com.microsoft.Gelu)"),
        (external_in_function_default, "keeps weights in external data files"),
        (external_in_training_info, "keeps weights in external data files"),
        (allocating_off_batch_two, "smoke prediction on 1 input(s) failed"),
    ],
)
def test_hostile_graphs_are_refused_at_import(platform: dict[str, Any], graph, message: str) -> None:  # type: ignore[no-untyped-def]
    refused(platform, "POST", IMPORT, 400, message, **form(graph()))


def test_an_input_too_large_for_a_replica_is_refused_naming_the_limit(platform: dict[str, Any]) -> None:
    # The hostile platform takes 16 rows a request: a row may be 64 MiB, and 4096x4096x3 is 192 MiB.
    body = refused(
        platform,
        "POST",
        IMPORT,
        400,
        "a request of 16 rows (AIP_MAX_REQUEST_ROWS)",
        **form(sized_input_graph((4096, 4096, 3))),
    )
    assert "4096x4096x3" in body["message"] and "over the 1 GiB" in body["message"]


def test_a_table_model_of_200000_features_is_refused(platform: dict[str, Any]) -> None:
    refused(
        platform,
        "POST",
        IMPORT,
        400,
        "has 200,000 features; a table model takes at most 512",
        **form(sized_input_graph((200_000,)), kind="tabular"),
    )


def test_imports_past_the_concurrency_limit_are_answered_503_at_once(platform: dict[str, Any]) -> None:
    """Four imports at once against the default limit of two: each import holds its slot for a
    child process's start-up (seconds), so at least two are refused at once, with Retry-After."""
    before = stored(platform)
    start = threading.Barrier(4)
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=platform["url"], timeout=120, headers=AUTH) as client:
            start.wait()
            answers.append(client.post(IMPORT, **form(branching_graph())))

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    busy = [a for a in answers if a.status_code == 503]
    checked = [a for a in answers if a.status_code == 400]
    assert len(busy) >= 2 and len(busy) + len(checked) == 4, [(a.status_code, a.text) for a in answers]
    assert all("AIP_MAX_CONCURRENT_IMPORTS" in a.json()["message"] and a.headers["Retry-After"] for a in busy)
    assert all("control flow (If)" in a.json()["message"] for a in checked)
    assert platform["api"].post("/v1/models/probe/predict", json=GOOD).status_code == 200
    assert stored(platform) == before
    refused(platform, "POST", IMPORT, 400, "control flow (If)", **form(branching_graph()))  # the slots are free


def test_a_graph_that_spins_at_serving_time_fails_that_request_not_the_replica(platform: dict[str, Any]) -> None:
    """A graph past the import's checks (registered directly) that loops for hours on a bright
    image: the model server stops the call at AIP_SERVE_ONNX_RUN_TIMEOUT_S (10 s by default)."""
    version = register_bytes(
        platform["settings"],
        "spinner",
        package_of(spinning_on_bright_pixels(), "spinner", LABELS.split(",")),
        template="imported-onnx",
    )
    platform["registry"].set_alias("spinner", "production", version)
    dark, bright = np.zeros((8, 8)).tolist(), np.full((8, 8), 255).tolist()
    assert platform["api"].post("/v1/models/spinner/predict", json={"array": dark}).status_code == 200
    refused(
        platform,
        "POST",
        "/v1/models/spinner/predict",
        503,
        "did not answer 1 input(s) within 10 s",
        json={"array": bright},
    )
    assert platform["api"].post("/v1/models/spinner/predict", json={"array": dark}).status_code == 200
