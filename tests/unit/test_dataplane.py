"""The inference core without Serve: a real registry, router, kind and model runner; the model
servers a plain async object standing in for the Serve handle (it answers with the real runner).
Routing, decoding, batching, recording, retries on a lost replica, and back-pressure as one error
over REST and gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray.exceptions import ActorUnavailableError
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request

from aiplatform.api.errors import error_response
from aiplatform.errors import InvalidArgument, NotFound, Unavailable
from aiplatform.limits import RequestLimits
from aiplatform.packaging.config import ModelConfig
from aiplatform.registry import RegistryStore
from aiplatform.results import PredictionRecord
from aiplatform.serving.dataplane import DataPlane, Overloaded, Predictions
from aiplatform.serving.oip_grpc import predict_v2_pb2 as pb
from aiplatform.serving.oip_grpc.servicer import InferenceServicer
from aiplatform.serving.requests import V1Input
from aiplatform.serving.rest.v1 import predict_body
from aiplatform.serving.runner import ModelRunner
from aiplatform.storage import open_storage, sha256_bytes
from tests.factories import make_package

pytestmark = pytest.mark.unit

DIGIT = np.arange(64, dtype=np.uint8).reshape(8, 8)


class FakeModelServers:
    """The model-server deployment as the core sees it: answers batches with the real runner of
    each ``name:version`` (as a replica does, ``batch_size`` added); ``lose`` replicas first, or
    answer with Serve's back-pressure."""

    def __init__(self, packages: dict[str, bytes]) -> None:
        self.runners = {model_id: ModelRunner.from_bytes(data) for model_id, data in packages.items()}
        self.calls: list[tuple[str, int]] = []
        self.lose = 0
        self.overloaded = False

    async def predict(self, model_id: str, batch: np.ndarray) -> list[dict[str, Any]]:
        self.calls.append((model_id, len(batch)))
        await asyncio.sleep(0.01)  # a call in flight: requests arriving meanwhile share the next one
        if self.overloaded:
            raise BackPressureError(num_queued_requests=256, max_queued_requests=256)
        if self.lose:
            self.lose -= 1
            raise ActorUnavailableError("the replica died", None)
        return [{**answer, "batch_size": len(batch)} for answer in self.runners[model_id].predict(batch)]

    async def model_config(self, model_id: str) -> ModelConfig:
        return self.runners[model_id].config


class Recorded:
    """Keeps what the core records (the ResultWriter's interface, without its actor)."""

    input_storage = None

    def __init__(self) -> None:
        self.records: list[tuple[PredictionRecord, bytes | None]] = []

    def record(self, record: PredictionRecord, raw_input: bytes | None = None) -> None:
        self.records.append((record, raw_input))


@pytest.fixture()
def registry(tmp_path: Path) -> RegistryStore:
    store = RegistryStore(tmp_path / "r.sqlite", open_storage(str(tmp_path / "art")))
    for seed in (0, 1):
        data = make_package(seed=seed)
        key = f"packages/digits/{seed}.zip"
        store.storage.put_bytes(key, data)
        store.register_version("digits", package_key=key, sha256=sha256_bytes(data), template="cnn-classification")
    store.set_alias("digits", "production", 1)
    return store


@pytest.fixture()
def servers() -> FakeModelServers:
    return FakeModelServers({"digits:1": make_package(seed=0), "digits:2": make_package(seed=1)})


def make_core(
    registry: RegistryStore, servers: FakeModelServers, batches_in_flight: int = 2
) -> tuple[DataPlane, Recorded]:
    recorded = Recorded()
    return DataPlane(
        servers, registry, recorded, RequestLimits(), max_batch_size=64, batches_in_flight=batches_in_flight
    ), recorded


def v1_json(array: np.ndarray = DIGIT) -> Any:
    async def read() -> V1Input:
        return V1Input(json.dumps({"array": array.tolist()}).encode(), False)

    return read


def v2_body(rows: int, request_id: str | None = None) -> Any:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "datatype": "UINT8",
                "shape": [rows, 8, 8, 1],
                "data": np.stack([DIGIT] * rows).ravel().tolist(),
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id

    async def read() -> tuple[bytes, Any]:
        return json.dumps(body).encode(), body

    return read


def test_a_request_is_routed_decoded_classified_and_recorded(
    registry: RegistryStore, servers: FakeModelServers
) -> None:
    core, recorded = make_core(registry, servers)
    expected = servers.runners["digits:1"].predict(DIGIT.reshape(1, 8, 8, 1))[0]

    predictions = asyncio.run(core.predict("digits", None, None, v1_json()))
    assert (predictions.target.name, predictions.target.version) == ("digits", 1)  # production
    assert servers.calls == [("digits:1", 1)]
    assert predictions.outputs == [{field: expected[field] for field in ("label", "probability", "probabilities")}]
    record, raw = recorded.records[0]
    assert (record.id, record.model, record.version) == (predictions.request_id, "digits", 1)
    assert record.input_digest == hashlib.sha256(raw or b"").hexdigest() and raw is not None
    assert record.output == predictions.outputs[0] and set(record.features)  # drift features from the kind
    body = predict_body(predictions)
    assert body["label"] == expected["label"] and body["batch_size"] == 1 and body["version"] == 1

    pinned = asyncio.run(core.predict("digits", 2, None, v1_json()))
    assert pinned.target.version == 2 and servers.calls[-1] == ("digits:2", 1)
    with pytest.raises(NotFound):
        asyncio.run(core.predict("nope", None, None, v1_json()))
    with pytest.raises(InvalidArgument, match="between 0 and 255"):  # decoded by the image kind
        asyncio.run(core.predict("digits", None, None, v1_json(np.full((8, 8), 300))))
    assert len(servers.calls) == 2 and len(recorded.records) == 2


def test_concurrent_requests_share_one_model_server_call(registry: RegistryStore, servers: FakeModelServers) -> None:
    core, recorded = make_core(registry, servers, batches_in_flight=1)

    async def scenario() -> list[Predictions]:
        return await asyncio.gather(*(core.predict("digits", None, None, v1_json()) for _ in range(8)))

    answers = asyncio.run(scenario())
    # The first request leaves at once; the seven that arrive while it is in flight go together.
    assert servers.calls == [("digits:1", 1), ("digits:1", 7)]
    assert sorted(p.answers[0]["batch_size"] for p in answers) == [1] + [7] * 7
    assert len({p.request_id for p in answers}) == 8 and len(recorded.records) == 8


def test_an_infer_request_records_each_input_and_keeps_the_clients_id(
    registry: RegistryStore, servers: FakeModelServers
) -> None:
    core, recorded = make_core(registry, servers)
    predictions = asyncio.run(core.infer("digits", 2, v2_body(3, request_id="client-7")))
    assert predictions.target.version == 2 and predictions.client_id == "client-7"
    assert {model for model, _ in servers.calls} == {"digits:2"} and sum(n for _, n in servers.calls) == 3
    ids = [record.id for record, _ in recorded.records]
    assert ids == [f"{predictions.request_id}-{row}" for row in range(3)]
    assert {record.client_id for record, _ in recorded.records} == {"client-7"}
    assert [raw is not None for _, raw in recorded.records] == [True, False, False]  # the input stored once
    with pytest.raises(InvalidArgument, match="'id' may hold only"):
        asyncio.run(core.infer("digits", 2, v2_body(1, request_id="a b")))


def test_a_batch_whose_replica_died_is_sent_again(registry: RegistryStore, servers: FakeModelServers) -> None:
    core, recorded = make_core(registry, servers)
    servers.lose = 2
    predictions = asyncio.run(core.predict("digits", None, None, v1_json()))
    assert servers.calls == [("digits:1", 1)] * 3 and len(recorded.records) == 1
    assert predictions.outputs[0]["label"] in {"0", "1", "2"}

    servers.lose = 10  # every retry lost too: the request fails, nothing is recorded
    with pytest.raises(Unavailable, match="No model server replica could answer for digits:1"):
        asyncio.run(core.predict("digits", None, None, v1_json()))
    assert len(recorded.records) == 1


class GrpcContext:
    """What the gRPC servicer uses of Serve's gRPC context."""

    def __init__(self) -> None:
        self.code: Any = None
        self.details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


def test_back_pressure_is_one_error_over_rest_and_grpc(registry: RegistryStore, servers: FakeModelServers) -> None:
    import grpc

    core, recorded = make_core(registry, servers)
    servers.overloaded = True
    with pytest.raises(Overloaded) as raised:
        asyncio.run(core.predict("digits", None, None, v1_json()))
    assert raised.value.message.startswith("Model servers are overloaded (")
    assert raised.value.message.endswith("; retry in 1 s")
    assert servers.calls == [("digits:1", 1)] and recorded.records == []  # not retried, not recorded

    request = Request(
        {"type": "http", "method": "POST", "path": "/v1/models/digits/predict", "headers": [], "query_string": b""}
    )
    response = error_response(request, raised.value)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert json.loads(response.body) == {"error": "unavailable", "message": raised.value.message}

    context = GrpcContext()
    message = pb.ModelInferRequest(model_name="digits", raw_input_contents=[DIGIT.tobytes()])
    message.inputs.add(name="input", datatype="UINT8", shape=[1, 8, 8, 1])
    answer = asyncio.run(InferenceServicer(core, "off", None).ModelInfer(message, context))
    assert answer == pb.ModelInferResponse()
    assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED and context.details == raised.value.message
