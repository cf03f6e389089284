"""The hostile-input suite (docs/SECURITY.md): the real gateway and API on the session's Ray, with
the platform's defaults (token authentication on), sent what an attacker would send. Each case
asserts the 4xx and its message, that the replica still answers the next request, and that nothing
stored changed."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from tests.factories import served_grpc_address
from tests.hostile import AUTH, GOOD, MAX_TEXT_CHARS, TOKEN, refused, stored


@pytest.mark.parametrize(
    "source, rule",
    [
        ("csv:~/.ray/auth_token", "is not expanded"),
        ("csv:/etc/passwd", "inside the data root"),
        ("csv:../../../etc/passwd", "inside the data root"),
        ("csv:file:///etc/passwd", "file:// sources are not read"),
        ("parquet:simplecache::s3://bucket/x", "chained URLs"),
        ("csv:http://169.254.169.254/latest/meta-data/", "not in AIP_DATASET_HTTP_HOSTS"),
        ("csv:s3://someone-elses-bucket/x.csv", "not under AIP_DATASET_S3_PREFIXES"),
    ],
)
def test_dataset_sources_outside_the_allow_list_are_refused_at_creation(
    platform: dict[str, Any], source: str, rule: str
) -> None:
    body = refused(
        platform,
        "POST",
        "/v1/tasks",
        400,
        "is not allowed",
        json={"template": "text-classification", "params": {"dataset": source}, "start": True},
    )
    assert rule in body["message"] and repr(source) in body["message"]
    assert "root:" not in body["message"]  # nothing of /etc/passwd (or any file) comes back


def test_a_task_larger_than_the_cluster_is_refused_with_the_reason(platform: dict[str, Any]) -> None:
    body = refused(
        platform,
        "POST",
        "/v1/tasks",
        400,
        "the whole cluster has 2 CPU",
        json={"template": "cnn-classification", "params": {"workers": 256}, "start": True},
    )
    assert "128 CPU (256 worker(s))" in body["message"] and "AIP_AUTOSCALING" in body["message"]


def test_requests_over_the_shape_limits(platform: dict[str, Any]) -> None:
    rows = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [17, 8, 8, 1], "data": [0] * 17 * 64}]}
    refused(platform, "POST", "/v2/models/tiny/infer", 413, "has 17 inputs; the limit is 16", json=rows)
    texts = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [17], "data": ["good"] * 17}]}
    refused(platform, "POST", "/v2/models/words/infer", 413, "has 17 inputs; the limit is 16", json=texts)
    for bad_id, message in (("x" * 129, "the limit is 128"), ("a b\n", "only letters, digits")):
        request = {
            "id": bad_id,
            "inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": [0] * 64}],
        }
        refused(platform, "POST", "/v2/models/tiny/infer", 400, message, json=request)
    nested = b"[" * 100_000 + b"]" * 100_000
    for path, message in (
        ("/v1/models/tiny/predict", "nested too deeply"),
        ("/v2/models/tiny/infer", "nested too deeply"),
        ("/v1/tasks", "error parsing the body"),
    ):  # FastAPI's own answer for its routes
        refused(
            platform, "POST", path, 400, message, content=nested, headers={**AUTH, "Content-Type": "application/json"}
        )


def test_texts_over_the_character_and_chunk_limits(platform: dict[str, Any]) -> None:
    refused(
        platform,
        "POST",
        "/v1/models/words/predict",
        413,
        f"the limit is {MAX_TEXT_CHARS:,}",
        json={"text": "good " * (MAX_TEXT_CHARS // 5 + 1)},
    )
    # 256 windows of 8 words is the most: 3,000 short words (under the character limit) is more.
    refused(
        platform,
        "POST",
        "/v1/models/words/predict",
        413,
        "longer than 256 chunks of 8 tokens",
        json={"text": "a " * 3000},
    )
    ok = platform["api"].post("/v1/models/words/predict", json={"text": "good " * 1000})
    assert ok.status_code == 200 and len(ok.json()["chunks"]) == 125


def _encoded(image: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_images_other_than_png_and_jpeg_and_decompression_bombs(platform: dict[str, Any]) -> None:
    from PIL import Image

    gif = _encoded(Image.new("L", (8, 8)), "GIF")
    refused(
        platform,
        "POST",
        "/v1/models/tiny/predict",
        400,
        "is GIF, not a PNG or JPEG image",
        files={"file": ("digit.gif", gif, "image/gif")},
    )
    bomb = _encoded(Image.new("1", (20_000, 20_000)), "PNG")  # a few KB that decode to 400 MP
    refused(
        platform,
        "POST",
        "/v1/models/tiny/predict",
        413,
        "the limit is 50,000,000",
        files={"file": ("bomb.png", bomb, "image/png")},
    )
    refused(
        platform,
        "POST",
        "/v1/models/tiny/predict",
        413,
        "the limit is 50,000,000",
        json={"image_b64": base64.b64encode(bomb).decode()},
    )


def test_the_event_loop_stays_free_while_heavy_images_decode(platform: dict[str, Any]) -> None:
    """Large photos (40 MP JPEGs) decode one after another while health probes and a small
    prediction are sent; the probes answer in a fraction of a photo's time, both measured here.

    Were decoding on the event loop, a probe sent during a decode would wait for the rest of it:
    probes took a median 0.8x a photo's time (measured with the offloading switched off: 0.24 s
    against 0.30 s). Off the loop a probe has the other core: 0.12x (0.06 s against 0.5 s). A
    third sits well apart from both, on slower machines too."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (250, 400), dtype=np.uint8)
    photo = _encoded(Image.fromarray(noise).resize((8000, 5000), Image.Resampling.BILINEAR), "JPEG")
    assert len(photo) < 10 * 1024 * 1024  # a real upload: within the gateway's file limit
    api = platform["api"]
    assert api.post("/v1/models/tiny/predict", json=GOOD).status_code == 200  # warm

    def heavy() -> list[float]:
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            assert (
                api.post("/v1/models/tiny/predict", files={"file": ("photo.jpg", photo, "image/jpeg")}).status_code
                == 200
            )
            seconds.append(time.perf_counter() - started)
        return seconds

    with ThreadPoolExecutor(1) as pool:
        photos = pool.submit(heavy)
        light: list[float] = []
        while not photos.done():
            started = time.perf_counter()
            assert api.get("/v2/health/live").status_code == 200
            assert api.post("/v1/models/tiny/predict", json=GOOD).status_code == 200
            light.append(time.perf_counter() - started)
        photo_seconds = photos.result()
    assert len(light) >= 2, "the photos decoded before probes could be sent"
    assert np.median(light) < np.median(photo_seconds) / 3, (light, photo_seconds)


def test_the_access_guard(platform: dict[str, Any]) -> None:
    url = platform["url"]
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        assert anonymous.get("/v1/models").status_code == 401
        assert anonymous.get("/v2/health/live").status_code == 200  # probes stay open
        ui = anonymous.get("/")
        assert ui.status_code == 200 and "frame-ancestors 'none'" in ui.headers["content-security-policy"]
        assert ui.headers["x-frame-options"] == "DENY" and ui.headers["x-content-type-options"] == "nosniff"
    refused(
        platform,
        "GET",
        "/v1/models",
        400,
        "is not a name this platform answers to",
        headers={**AUTH, "Host": "attacker.example:8000"},
    )  # DNS rebinding
    refused(
        platform,
        "POST",
        "/v1/tasks",
        403,
        "Cross-origin request from 'http://attacker.example' refused",
        json={"template": "cnn-classification", "params": {}},
        headers={**AUTH, "Origin": "http://attacker.example"},
    )
    refused(
        platform,
        "POST",
        "/v1/models/tiny/promote",
        403,
        "Cross-origin request",
        json={"version": 1, "alias": "staging"},
        headers={**AUTH, "Sec-Fetch-Site": "cross-site"},
    )
    same_origin = {**AUTH, "Origin": url}
    assert platform["api"].get("/v1/models", headers=same_origin).status_code == 200


def test_binary_tensor_bodies_that_do_not_add_up(platform: dict[str, Any]) -> None:
    header = (
        b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 8, 8], '
        b'"parameters": {"binary_data_size": 64}}]}'
    )
    binary = {**AUTH, "Inference-Header-Content-Length": str(len(header))}
    refused(
        platform,
        "POST",
        "/v2/models/tiny/infer",
        400,
        "Inference-Header-Content-Length is 99999",
        content=header,
        headers={**binary, "Inference-Header-Content-Length": "99999"},
    )
    refused(
        platform,
        "POST",
        "/v2/models/tiny/infer",
        400,
        "goes past the end of the body",
        content=header + b"\x00" * 10,
        headers=binary,
    )
    refused(
        platform,
        "POST",
        "/v2/models/tiny/infer",
        400,
        "4 bytes after its tensors that no input claims",
        content=header + b"\x00" * 68,
        headers=binary,
    )
    body = {
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 8, 8], "data": [0] * 64}],
        "outputs": [{"name": "secrets"}],
    }
    refused(platform, "POST", "/v2/models/tiny/infer", 400, "Unknown output 'secrets'", json=body)


def test_grpc_calls_need_the_token_and_bad_tensors_get_status_codes(platform: dict[str, Any]) -> None:
    """The Open Inference Protocol over gRPC with tritonclient: the same token as HTTP (health
    checks open), and the hostile cases answered with gRPC status codes, nothing stored."""
    import tritonclient.grpc as oip
    from tritonclient.utils import InferenceServerException

    client = oip.InferenceServerClient(url=served_grpc_address())
    token = {"authorization": f"Bearer {TOKEN}"}
    assert client.is_server_live() and client.is_server_ready()  # probes stay open
    tensor = oip.InferInput("input", [1, 8, 8], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8), dtype=np.uint8))
    for call in (
        lambda: client.infer("tiny", [tensor]),
        lambda: client.get_model_metadata("tiny"),
        lambda: client.infer("tiny", [tensor], headers={"authorization": "Bearer wrong"}),
    ):
        with pytest.raises(InferenceServerException) as anonymous:
            call()
        assert anonymous.value.status() == "StatusCode.UNAUTHENTICATED", anonymous.value
        assert "API token" in anonymous.value.message()
    assert client.infer("tiny", [tensor], headers=token).as_numpy("probabilities").shape == (1, 3)

    before = stored(platform)
    short = oip.InferInput("input", [1, 4, 8], "UINT8")
    short.set_data_from_numpy(np.zeros((1, 4, 8), dtype=np.uint8))
    short.set_shape([1, 8, 8])  # the client states a shape its bytes do not fill
    wide = oip.InferInput("input", [1, 8, 8], "FP32")
    wide.set_data_from_numpy(np.zeros((1, 8, 8), dtype=np.float32))
    many = oip.InferInput("input", [17, 8, 8], "UINT8")
    many.set_data_from_numpy(np.zeros((17, 8, 8), dtype=np.uint8))
    cases = [
        (lambda: client.infer("tiny", [short], headers=token), "INVALID_ARGUMENT", "32 bytes do not match shape"),
        (
            lambda: client.infer("tiny", [tensor], headers=token, outputs=[oip.InferRequestedOutput("secrets")]),
            "INVALID_ARGUMENT",
            "Unknown output 'secrets'",
        ),
        (
            lambda: client.infer("tiny", [tensor], model_version="v1", headers=token),
            "INVALID_ARGUMENT",
            "model_version must be a version number",
        ),
        (lambda: client.infer("nope", [tensor], headers=token), "NOT_FOUND", "nope"),
        (
            lambda: client.infer("tiny", [tensor], request_id="x" * 500, headers=token),
            "INVALID_ARGUMENT",
            "'id' is 500 characters",
        ),
        (lambda: client.infer("tiny", [many], headers=token), "RESOURCE_EXHAUSTED", "17"),
        (lambda: client.infer("words", [tensor], headers=token), "INVALID_ARGUMENT", "BYTES tensor"),
    ]
    for call, status, fragment in cases:
        with pytest.raises(InferenceServerException) as bad:
            call()
        assert bad.value.status() == f"StatusCode.{status}" and fragment in bad.value.message(), bad.value
    assert client.infer("tiny", [wide], headers=token).as_numpy("label").shape == (1,)  # FP32 pixels are fine
    after = stored(platform)
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1] == before[1] + 1  # only the good FP32 request was recorded


def test_sane_state_canary_weights_aliases_and_result_ids(platform: dict[str, Any]) -> None:
    api, registry = platform["api"], platform["registry"]
    for weights, message in (
        ({"1": 1e308, "2": 1e308}, "finite"),
        ({"1": -1}, "finite number >= 0"),
        ({"1": 0}, "finite number above 0"),
    ):
        refused(platform, "PUT", "/v1/models/tiny/traffic", 400, message, json={"weights": weights})
    assert registry.get_traffic("tiny") == {}
    refused(platform, "POST", "/v1/models/tiny/promote", 400, "Alias", json={"version": 1, "alias": "production\n"})
    assert registry.aliases("tiny") == {"production": 1}
    # A client's v2 id is its own: it never names (or overwrites) a stored result.
    request = {
        "id": "client-7",
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": [0] * 64}],
    }
    for _ in range(2):
        answer = api.post("/v2/models/tiny/infer", json=request).json()
        assert answer["id"] == "client-7" and answer["parameters"]["request_id"] != "client-7"
    assert api.get("/v1/results/client-7").status_code == 404
    deadline = time.time() + 30
    while time.time() < deadline and api.get(f"/v1/results/{answer['parameters']['request_id']}").status_code != 200:
        time.sleep(0.2)
    kept = api.get(f"/v1/results/{answer['parameters']['request_id']}").json()
    assert kept["client_id"] == "client-7"


@pytest.mark.breaks_platform
def test_the_readiness_probe_names_no_internals_when_it_fails(platform: dict[str, Any]) -> None:
    """Last in the suite (breaks_platform): the registry actor goes away for good."""
    import ray

    ray.kill(platform["registry"].handle, no_restart=True)
    with httpx.Client(base_url=platform["url"], timeout=60) as anonymous:
        deadline = time.time() + 60
        while (answer := anonymous.get("/v2/health/ready")).status_code == 200 and time.time() < deadline:
            time.sleep(0.5)
    assert answer.status_code == 503 and answer.json() == {"ready": False}
