"""The Serve gateway and model server on the session's Ray: inference over HTTP and results."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from ray import serve

from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from aiplatform.storage import sha256_bytes, storage_from_settings
from tests.factories import free_port, make_package, png_bytes


@pytest.fixture(scope="module")
def gateway(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from serve_apps.app import build_app

    home = tmp_path_factory.mktemp("serving")
    settings = Settings(home=Path(home), ray_namespace=f"serve-{uuid.uuid4().hex[:8]}")
    storage = storage_from_settings(settings)
    registry = RegistryClient.connect(settings)
    data = make_package(name="tiny", num_classes=3)
    storage.put_bytes("packages/tiny/v1.zip", data)
    registry.register_version("tiny", package_key="packages/tiny/v1.zip", sha256=sha256_bytes(data),
                              template="cnn-classification")
    registry.set_alias("tiny", "production", 1)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="aip-test", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete("aip-test")
        serve.shutdown()


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

        deadline = time.time() + 10
        while time.time() < deadline:
            stored = client.get(f"/v1/results/{body['request_id']}")
            if stored.status_code == 200:
                break
            time.sleep(0.1)
        assert stored.status_code == 200, stored.text
        assert stored.json()["output"]["label"] == body["label"]
        listed = client.get("/v1/results", params={"model": "tiny", "limit": 10}).json()["results"]
        assert body["request_id"] in {r["id"] for r in listed}


@pytest.mark.parametrize(
    "path, kwargs, status, fragment",
    [
        ("/v1/models/tiny/predict", {"json": {"text": "hello"}}, 400, "classifies images"),
        ("/v1/models/tiny/predict", {"content": b"{not json"}, 400, "not valid JSON"),
        ("/v1/models/tiny/predict", {"content": b""}, 400, "empty"),
        ("/v1/models/tiny/predict", {"files": {"file": ("x.png", b"not a png", "image/png")}}, 400, "not a readable PNG/JPEG"),
        ("/v1/models/nope/predict", {"json": {"array": [[1]]}}, 404, "nope"),
        ("/v1/models/tiny/predict?version=9", {"json": {"array": [[1]]}}, 404, "version=9"),
        ("/v1/models/tiny/predict?alias=staging", {"json": {"array": [[1]]}}, 404, "alias=staging"),
    ],
)
def test_bad_input_answers_4xx_with_a_json_error(gateway: str, path: str, kwargs: dict, status: int, fragment: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        response = client.post(path, **kwargs)
        assert response.status_code == status, response.text
        assert fragment in response.json()["message"]
        # The next request is served normally.
        ok = client.post("/v1/models/tiny/predict", json={"array": [[0, 255], [255, 0]]})
        assert ok.status_code == 200
