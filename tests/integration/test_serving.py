"""The Serve gateway and model server on the session's Ray: inference over HTTP and results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from tests.factories import (
    fault_table_figure,
    make_text_package,
    onnx_classifier,
    png_bytes,
    register_bytes,
    register_package,
    register_versions,
    served_grpc_address,
    wait_for,
)

_GATEWAY_SETTINGS: dict[str, Settings] = {}


@pytest.fixture(scope="module")
def gateway(shared_platform: dict[str, Any]) -> str:
    settings = _GATEWAY_SETTINGS["settings"] = shared_platform["settings"]
    register_versions(settings, "tiny")
    return str(shared_platform["url"])


def test_upload_and_json_predictions(gateway: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (20, 20), dtype=np.uint8)
    with httpx.Client(base_url=gateway, timeout=30) as client:
        upload = client.post("/v1/models/tiny/predict", files={"file": ("x.png", png_bytes(image), "image/png")})
        assert upload.status_code == 200, upload.text
        body = upload.json()
        assert body["model"] == "tiny" and body["version"] == 1
        assert body["label"] in {"0", "1", "2"}
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        as_array = client.post("/v1/models/tiny/predict?version=1", json={"array": image.tolist()})
        assert as_array.status_code == 200, as_array.text
        assert as_array.json()["probabilities"] == pytest.approx(body["probabilities"], abs=1e-5)

        # Results reach the store in batches, later on a busy or slower machine: the wait every
        # other module gives a stored result (it ends as soon as the result is there).
        wait_for(lambda: client.get(f"/v1/results/{body['request_id']}").status_code == 200, 30, "the result stored")
        stored = client.get(f"/v1/results/{body['request_id']}")
        assert stored.json()["output"]["label"] == body["label"]
        listed = client.get("/v1/results", params={"model": "tiny", "limit": 10}).json()["results"]
        assert body["request_id"] in {r["id"] for r in listed}


@pytest.mark.parametrize(
    "path, kwargs, status, fragment",
    [
        ("/v1/models/tiny/predict", {"json": {"text": "hello"}}, 400, "classifies images"),
        ("/v1/models/tiny/predict", {"content": b"{not json"}, 400, "not valid JSON"),
        ("/v1/models/tiny/predict", {"content": b""}, 400, "empty"),
        (
            "/v1/models/tiny/predict",
            {"files": {"file": ("x.png", b"not a png", "image/png")}},
            400,
            "not a PNG or JPEG image",
        ),
        ("/v1/models/nope/predict", {"json": {"array": [[1]]}}, 404, "nope"),
        ("/v1/models/tiny/predict?version=9", {"json": {"array": [[1]]}}, 404, "version=9"),
        ("/v1/models/tiny/predict?alias=staging", {"json": {"array": [[1]]}}, 404, "alias=staging"),
    ],
)
def test_bad_input_answers_4xx_with_a_json_error(
    gateway: str, path: str, kwargs: dict, status: int, fragment: str
) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        response = client.post(path, **kwargs)
        assert response.status_code == status, response.text
        assert fragment in response.json()["message"]
        # The next request is served normally.
        ok = client.post("/v1/models/tiny/predict", json={"array": [[0, 255], [255, 0]]})
        assert ok.status_code == 200


def test_open_inference_protocol_v2(gateway: str) -> None:
    images = np.random.default_rng(2).integers(0, 255, (2, 8, 8), dtype=np.uint8)
    with httpx.Client(base_url=gateway, timeout=30) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        meta = client.get("/v2/models/tiny").json()
        assert meta["name"] == "tiny" and meta["versions"] == ["1"]
        assert meta["inputs"][0] == {"name": "input", "datatype": "UINT8", "shape": [-1, 8, 8, 1]}
        assert client.get("/v2/models/tiny/versions/1").json()["versions"] == ["1"]
        assert client.get("/v2/models/tiny/ready").json()["ready"] is True
        assert client.get("/v2/models/tiny/versions/1/ready").json()["ready"] is True
        request = {
            "id": "req-v2-1",
            "inputs": [{"name": "input", "shape": [2, 8, 8], "datatype": "UINT8", "data": images.reshape(-1).tolist()}],
        }
        for path in ("/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"):
            response = client.post(path, json=request)
            assert response.status_code == 200, response.text
            out = {o["name"]: o for o in response.json()["outputs"]}
            assert out["probabilities"]["shape"] == [2, 3] and len(out["probabilities"]["data"]) == 6
            assert out["label"]["datatype"] == "BYTES" and len(out["label"]["data"]) == 2
            assert response.json()["model_version"] == "1"


@pytest.mark.parametrize(
    "tensor, status, fragment",
    [
        ({"name": "input", "shape": [1, 8, 8], "datatype": "UINT8", "data": [1, 2, 3]}, 400, "needs 64"),
        ({"name": "input", "shape": [1, 8], "datatype": "UINT8", "data": [0] * 8}, 400, "[N, H, W]"),
        ({"name": "input", "shape": [1], "datatype": "BYTES", "data": ["hi"]}, 400, "not BYTES"),
        ({"name": "input", "shape": [1, 8, 8], "datatype": "COMPLEX", "data": [0] * 64}, 400, "Unknown datatype"),
        ({"name": "input", "shape": [1, 8, 8], "datatype": "FP32"}, 400, "lacks 'data'"),
    ],
)
def test_v2_bad_tensors_get_v2_error_bodies(gateway: str, tensor: dict, status: int, fragment: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        response = client.post("/v2/models/tiny/infer", json={"inputs": [tensor]})
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"]
        assert client.get("/v2/models/nope").status_code == 404


def test_deploy_under_constant_load_fails_no_request_then_rolls_back(gateway: str, tmp_path: Path) -> None:
    import threading

    from aiplatform.errors import Conflict
    from aiplatform.serving.deployer import deploy, rollback, warm_on_serve

    settings = _GATEWAY_SETTINGS["settings"]
    registry = RegistryClient.connect(settings)
    v2 = register_package(settings, "tiny", num_classes=3, seed=5, metrics={"test_accuracy": 0.9})
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gateway, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/models/tiny/predict", json={"array": [[0, 255], [255, 0]]})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    result = deploy(registry, "tiny", v2, warm=warm_on_serve(settings.serve_app_name), force=True)
    assert result.previous_version == 1
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"
    assert versions[0] == 1 and versions[-1] == 2
    fault_table_figure(
        "update",
        f"production v1 -> v2 under 4 clients: {len(statuses)} requests, "
        f"{sum(1 for s in statuses if s != 200)} failed, {versions.count(1)} answered by v1, {versions.count(2)} by v2",
    )

    # The gate: a worse candidate is refused and production does not move.
    v3 = register_package(settings, "tiny", num_classes=3, seed=6, metrics={"test_accuracy": 0.5})
    with pytest.raises(Conflict, match="Gate refused"):
        deploy(registry, "tiny", v3, warm=lambda mid: None)
    assert registry.resolve("tiny", "production").version == 2

    back = rollback(registry, "tiny", warm=warm_on_serve(settings.serve_app_name))
    assert back.version == 1
    time.sleep(0.6)
    with httpx.Client(base_url=gateway, timeout=30) as client:
        assert client.post("/v1/models/tiny/predict", json={"array": [[1]]}).json()["version"] == 1


def test_concurrent_requests_are_batched(gateway: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> dict:
        with httpx.Client(base_url=gateway, timeout=30) as client:
            response = client.post("/v1/models/tiny/predict?version=1", json={"array": [[0, 255], [255, 0]]})
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, range(64)))
    assert max(a["batch_size"] for a in answers) > 1
    assert len({a["request_id"] for a in answers}) == 64


def test_canary_split_set_through_the_api(gateway: str) -> None:
    settings = _GATEWAY_SETTINGS["settings"]
    first, second = register_versions(settings, "canary", 2, seed=100)
    with httpx.Client(base_url=gateway, timeout=30) as client:
        bad = client.put("/v1/models/canary/traffic", json={"weights": {"1": -5}})
        assert bad.status_code == 400 and "must be a finite number >= 0" in bad.json()["message"]
        assert client.put("/v1/models/canary/traffic", json={"weights": {"9": 5}}).status_code == 404
        assert client.put("/v1/models/canary/traffic", json={"weights": "half"}).status_code == 400
        split = client.put("/v1/models/canary/traffic", json={"weights": {str(first): 50, str(second): 50}})
        assert split.status_code == 200 and split.json()["weights"] == {str(first): 50.0, str(second): 50.0}
        time.sleep(0.6)  # the routers' cache TTL
        seen = [
            client.post("/v1/models/canary/predict", json={"array": [[1, 2], [3, 4]]}).json()["version"]
            for _ in range(60)
        ]
        assert 10 <= seen.count(second) <= 50, seen
        assert client.put("/v1/models/canary/traffic", json={"weights": {}}).json()["weights"] == {}
        assert client.get("/v1/models/canary/traffic").json()["weights"] == {}
        time.sleep(0.6)
        seen = {client.post("/v1/models/canary/predict", json={"array": [[1]]}).json()["version"] for _ in range(10)}
        assert seen == {first}


def test_multiplexed_model_servers_evict_the_least_recently_used(gateway: str) -> None:
    from ray import serve

    from serve_apps.model_server import MAX_MODELS_PER_REPLICA

    settings = _GATEWAY_SETTINGS["settings"]
    versions = register_versions(settings, "many", MAX_MODELS_PER_REPLICA + 2, seed=100)
    handle = serve.get_deployment_handle("ModelServer", app_name=settings.serve_app_name)
    before = handle.stats.remote().result()
    with httpx.Client(base_url=gateway, timeout=30) as client:
        for version in versions:
            response = client.post(f"/v1/models/many/predict?version={version}", json={"array": [[7]]})
            assert response.status_code == 200, response.text
        stats = handle.stats.remote().result()
        loaded_many = [m for m in stats["loaded"] if m.startswith("many:")]
        assert len(stats["loaded"]) <= MAX_MODELS_PER_REPLICA
        assert f"many:{versions[-1]}" in loaded_many and f"many:{versions[0]}" not in loaded_many
        assert stats["evictions"] - before["evictions"] >= 2
        # An evicted model is loaded again on demand.
        again = client.post(f"/v1/models/many/predict?version={versions[0]}", json={"array": [[7]]})
        assert again.status_code == 200 and again.json()["version"] == versions[0]
    assert f"many:{versions[0]}" in handle.stats.remote().result()["loaded"]


def test_a_standard_oip_client_works_with_its_defaults(gateway: str) -> None:
    """tritonclient's HTTP client, unmodified: binary tensors in and out unless told otherwise,
    metadata and readiness, a text model's BYTES, and its errors."""
    import tritonclient.http as oip
    from tritonclient.utils import InferenceServerException

    _register_text_model()
    client = oip.InferenceServerClient(url=gateway.removeprefix("http://"))
    # closed here, on this thread: left to the garbage collector, its gevent pool would be joined
    # from whichever thread collects it (a Ray thread of this driver), which crashes the process
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        assert client.get_model_metadata("tiny")["inputs"][0]["shape"] == [-1, 8, 8, 1]

        images = np.random.default_rng(3).integers(0, 255, (2, 8, 8, 1), dtype=np.uint8)
        tensor = oip.InferInput("input", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)  # binary_data=True: the default
        result = client.infer("tiny", [tensor], request_id="oip-binary-1")
        probabilities, labels = result.as_numpy("probabilities"), result.as_numpy("label")
        assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        assert [label.decode() for label in labels] == [str(i) for i in probabilities.argmax(axis=1)]
        assert result.get_response()["id"] == "oip-binary-1"

        as_json = httpx.post(
            f"{gateway}/v2/models/tiny/infer",
            timeout=30,
            json={
                "inputs": [
                    {"name": "input", "shape": [2, 8, 8, 1], "datatype": "UINT8", "data": images.reshape(-1).tolist()}
                ]
            },
        )
        json_probabilities = {o["name"]: o for o in as_json.json()["outputs"]}["probabilities"]["data"]
        np.testing.assert_allclose(probabilities.reshape(-1), json_probabilities, atol=1e-6)

        tensor.set_data_from_numpy(images, binary_data=False)
        only_label = client.infer(
            "tiny", [tensor], model_version="1", outputs=[oip.InferRequestedOutput("label", binary_data=False)]
        )
        assert [o["name"] for o in only_label.get_response()["outputs"]] == ["label"]
        assert list(only_label.as_numpy("label")) == [label.decode() for label in labels]  # JSON BYTES: str

        texts = oip.InferInput("text", [2], "BYTES")
        texts.set_data_from_numpy(np.array(["good great happy", "bad awful sad"], dtype=np.object_))
        text_labels = client.infer("tiny-text", [texts]).as_numpy("label")
        assert len(text_labels) == 2 and {label.decode() for label in text_labels} <= {
            "negative",
            "neutral",
            "positive",
        }

        with pytest.raises(InferenceServerException, match="Unknown output 'logits'"):
            client.infer("tiny", [tensor], outputs=[oip.InferRequestedOutput("logits")])
        with pytest.raises(InferenceServerException, match=r"64 bytes do not match shape \[2, 8, 8\] of UINT8"):
            short = oip.InferInput("input", [1, 8, 8], "UINT8")
            short.set_data_from_numpy(np.zeros((1, 8, 8), dtype=np.uint8))
            short.set_shape([2, 8, 8])  # the client states a shape its bytes do not fill
            client.infer("tiny", [short])
        with pytest.raises(InferenceServerException, match="Model 'nope'|nope"):
            client.get_model_metadata("nope")
    finally:
        client.close()


@pytest.mark.parametrize(
    "header_length, body, fragment",
    [
        ("4096", b'{"inputs": []}', "Inference-Header-Content-Length is 4096"),
        ("-1", b'{"inputs": []}', "must be a byte count"),
        (None, b"\x00\x01", "not valid JSON"),
    ],
)
def test_binary_bodies_that_do_not_add_up_answer_400(
    gateway: str, header_length: str | None, body: bytes, fragment: str
) -> None:
    headers = {"Inference-Header-Content-Length": header_length} if header_length else {}
    response = httpx.post(f"{gateway}/v2/models/tiny/infer", content=body, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def _register_text_model() -> None:
    """A small text model ``tiny-text`` on the module's platform (once)."""
    settings = _GATEWAY_SETTINGS["settings"]
    registry = RegistryClient.connect(settings)
    if not any(m["name"] == "tiny-text" for m in registry.list_models()):
        registry.set_alias(
            "tiny-text",
            "production",
            register_bytes(settings, "tiny-text", make_text_package(), template="text-classification"),
        )


def test_a_standard_oip_grpc_client_works_with_its_defaults(gateway: str) -> None:
    """tritonclient's gRPC client, unmodified, through Serve's gRPC proxy: health, metadata, raw
    tensors in and out, a text model's BYTES, results recorded as over HTTP, errors as status codes."""
    import tritonclient.grpc as oip
    from tritonclient.utils import InferenceServerException

    _register_text_model()
    client = oip.InferenceServerClient(url=served_grpc_address())
    assert client.is_server_live() and client.is_server_ready()
    port = int(served_grpc_address().rsplit(":", 1)[1])  # Serve would listen on every interface
    assert {
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    } == {"::ffff:127.0.0.1"}
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    metadata = client.get_model_metadata("tiny", as_json=True)
    assert metadata["inputs"][0]["shape"] == ["-1", "8", "8", "1"] and "1" in metadata["versions"]

    images = np.random.default_rng(4).integers(0, 255, (3, 8, 8, 1), dtype=np.uint8)
    tensor = oip.InferInput("input", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    result = client.infer("tiny", [tensor], request_id="oip-grpc-1")
    probabilities, labels = result.as_numpy("probabilities"), result.as_numpy("label")
    assert probabilities.shape == (3, 3) and [label.decode() for label in labels] == [
        str(i) for i in probabilities.argmax(axis=1)
    ]
    response = result.get_response()
    assert response.id == "oip-grpc-1" and response.model_version == "1"
    over_http = httpx.post(
        f"{gateway}/v2/models/tiny/infer",
        timeout=30,
        json={
            "inputs": [
                {"name": "input", "shape": [3, 8, 8, 1], "datatype": "UINT8", "data": images.reshape(-1).tolist()}
            ]
        },
    )
    http_probabilities = {o["name"]: o for o in over_http.json()["outputs"]}["probabilities"]["data"]
    np.testing.assert_allclose(probabilities.reshape(-1), http_probabilities, atol=1e-6)
    request_id = response.parameters["request_id"].string_param

    def result() -> dict | None:
        answer = httpx.get(f"{gateway}/v1/results/{request_id}-0", timeout=30)
        return answer.json() if answer.status_code == 200 else None

    recorded = wait_for(result, 30, "the gRPC prediction's result")  # written off the request path
    assert recorded["model"] == "tiny" and recorded["client_id"] == "oip-grpc-1"

    texts = oip.InferInput("text", [2], "BYTES")
    texts.set_data_from_numpy(np.array([b"good great happy", b"bad awful sad"], dtype=np.object_))
    only_label = client.infer("tiny-text", [texts], outputs=[oip.InferRequestedOutput("label")])
    assert [o.name for o in only_label.get_response().outputs] == ["label"]
    assert {label.decode() for label in only_label.as_numpy("label")} <= {"negative", "neutral", "positive"}

    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [tensor])
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "nope" in unknown.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("tiny", model_version="9")
    assert missing.value.status() == "StatusCode.NOT_FOUND"


def test_a_model_imported_from_onnx_serves_the_pytorch_models_answers(gateway: str) -> None:
    import torch

    from aiplatform.kinds import kind_for

    module, graph = onnx_classifier(seed=3)
    form = {"kind": "image", "labels": "cat,dog,owl", "preprocessing": '{"scale": 0.00392156862745098}'}
    with httpx.Client(base_url=gateway, timeout=120) as client:
        corrupt = client.post("/v1/models/onnx-net/import", data=form, files={"file": ("bad.onnx", b"\x08\x07junk")})
        assert corrupt.status_code == 400 and "not an ONNX model" in corrupt.json()["message"]
        assert client.get("/v1/models/onnx-net").status_code == 404  # nothing registered
        answer = client.post("/v1/models/onnx-net/import", data=form, files={"file": ("net.onnx", graph)})
        assert answer.status_code == 201, answer.text
        version = answer.json()
        assert version["version"] == 1 and version["lineage"]["imported"]["filename"] == "net.onnx"
        assert version["created_by"] == "platform"  # who imported it (auth off: the platform admin)

        images = np.random.default_rng(4).integers(0, 256, (2, 8, 8), dtype=np.uint8)
        spec = {
            "input": {"type": "image", "height": 8, "width": 8, "channels": 1},
            "preprocessing": {"scale": 1 / 255, "mean": [0.0], "std": [1.0]},
        }
        with torch.inference_mode():
            expected = torch.softmax(module(kind_for(spec).to_tensor(images[..., None])), dim=1).numpy()
        for image, want in zip(images, expected):
            got = client.post("/v1/models/onnx-net/predict?version=1", json={"array": image.tolist()})
            assert got.status_code == 200, got.text
            probabilities = got.json()["probabilities"]
            np.testing.assert_allclose([probabilities[k] for k in ("cat", "dog", "owl")], want, atol=1e-4)

        meta = client.get("/v2/models/onnx-net/versions/1").json()  # no production alias: by version
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["parameters"]["onnx_signature"]["inputs"] == [
            {"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
        ]
        infer = client.post(
            "/v2/models/onnx-net/versions/1/infer",
            json={
                "inputs": [
                    {"name": "input", "shape": [2, 8, 8], "datatype": "UINT8", "data": images.reshape(-1).tolist()}
                ]
            },
        )
        assert infer.status_code == 200, infer.text
        scores = np.array(infer.json()["outputs"][0]["data"]).reshape(2, 3)
        np.testing.assert_allclose(scores, expected, atol=1e-4)
        mismatch = client.post(
            "/v2/models/onnx-net/versions/1/infer",
            json={"inputs": [{"name": "input", "shape": [1, 64], "datatype": "UINT8", "data": [0] * 64}]},
        )
        assert mismatch.status_code == 400 and "[N, H, W]" in mismatch.json()["error"]


def test_results_moved_to_the_archive_are_exported_with_the_live_ones(gateway: str) -> None:
    import io

    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from aiplatform.results import ResultClient

    def predict(client: httpx.Client) -> str:
        answer = client.post("/v1/models/tiny/predict", json={"array": [[1, 2], [3, 4]]})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        wait_for(lambda: client.get(f"/v1/results/{request_id}").status_code == 200, 30, "the result stored")
        return request_id

    with httpx.Client(base_url=gateway, timeout=60) as client:
        archived = predict(client)
        results = ResultClient.connect(_GATEWAY_SETTINGS["settings"])
        # A year from now every result so far is past the default 30 days: all move to parquet.
        assert results.retain(now=time.time() + 365 * 86_400) >= 1
        assert results.count("tiny") == 0 and results.moves(model="tiny")
        live = predict(client)

        csv = client.get("/v1/results/export", params={"model": "tiny", "format": "csv"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        ids = pa_csv.read_csv(io.BytesIO(csv.content)).column("id").to_pylist()
        assert {archived, live} <= set(ids) and len(ids) == len(set(ids))
        parquet = client.get("/v1/results/export", params={"model": "tiny", "since": time.time() - 3600})
        assert (
            parquet.status_code == 200 and 'filename="results-tiny.parquet"' in parquet.headers["content-disposition"]
        )
        assert sorted(pq.read_table(io.BytesIO(parquet.content)).column("id").to_pylist()) == sorted(ids)

        backwards = client.get("/v1/results/export", params={"since": 10, "until": 5})
        assert backwards.status_code == 400 and "until" in backwards.json()["message"]
        assert client.get("/v1/results/export", params={"format": "xlsx"}).status_code in (400, 422)
