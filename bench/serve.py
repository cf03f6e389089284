"""Benchmark: the platform's Serve gateway vs a plain FastAPI app vs the model called in-process.

    python bench/serve.py --repeats 3 [--mode direct|proxy] [--model mnist|onnx|text|minilm|tabular]

One load generator (bench/loadgen.py), one package and one real input, concurrency 1, 8 and 32:
the MNIST-sized CNN and a real MNIST test digit as a base64 PNG in JSON, or (``--model text``) the
default tweets text model (real tokenizer) and a real tweet as ``{"text": ...}``, or (``--model
minilm``) the MiniLM-encoder text model (real pretrained encoder) and the same tweet, or (``--model
tabular``) an XGBoost booster (100 rounds, depth 6) trained on the real breast-cancer table and one
of its rows as ``{"features": {...}}``:
  (a) the gateway on Ray Serve (router, multiplexed batched model code, result store);
  (b) a plain single-process FastAPI + uvicorn app, unbatched (bench/plain_fastapi_app.py);
  (c) the same parsing and model called in-process with dynamic batching: this machine's limit.
Prints throughput, p50/p99 per target and the ratios gateway/plain (throughput) and
gateway - in-process (p50 at concurrency 1). Medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from loadgen import LoadResult, median_summary, run_call_load, run_http_load  # noqa: E402
from wrk import run_wrk  # noqa: E402

from tests.factories import free_port  # noqa: E402

CONCURRENCIES = (1, 8, 32)


def mnist_package() -> bytes:
    """The default ``cnn-classification`` architecture for 28x28 digits (weights random: the cost
    of a forward pass does not depend on them)."""
    import torch

    from aiplatform.networks.architectures import build_model
    from aiplatform.packaging import build_package
    from aiplatform.preprocessing import image_preprocessing
    from aiplatform.training.cnn import CnnParams

    torch.manual_seed(0)
    params = CnnParams()
    architecture = {
        "type": "cnn",
        "in_channels": 1,
        "image_size": 28,
        "num_classes": 10,
        "conv_channels": params.conv_channels,
        "kernel_size": params.kernel_size,
        "hidden_units": params.hidden_units,
        "dropout": params.dropout,
    }
    return build_package(
        model_config={
            "name": "bench-mnist",
            "template": "cnn-classification",
            "architecture": architecture,
            "labels": [str(i) for i in range(10)],
            "input": {"type": "image", "height": 28, "width": 28, "channels": 1},
            "preprocessing": image_preprocessing(28, 28, 1, 0.13, 0.31),
        },
        state_dict=build_model(architecture).state_dict(),
        metrics={"test_accuracy": 0.99},
        lineage={"method": "bench"},
    )


def onnx_mnist_package() -> bytes:
    """The same CNN (same weights) exported to ONNX by torch's exporter and packaged as an import
    is (``aiplatform.model_import``): the model servers run it on ONNX Runtime."""
    import io
    import warnings

    import torch

    from aiplatform.model_import import onnx_model_config, smoke_prediction
    from aiplatform.packaging import build_package, load_package
    from aiplatform.packaging.onnx_graph import inspect_graph

    torch_package = load_package(mnist_package())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch_package.model.eval(),
            (torch.rand(2, 1, 28, 28),),
            buffer,
            dynamo=False,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        )
    graph = buffer.getvalue()
    config = onnx_model_config(
        name="bench-onnx",
        kind="image",
        labels=torch_package.labels,
        signature=inspect_graph(graph, max_bytes=len(graph)),
        preprocessing={k: torch_package.config.preprocessing[k] for k in ("scale", "mean", "std")},
    )
    package = build_package(model_config=config, metrics={}, lineage={"method": "bench"}, model_file=graph)
    smoke_prediction(package)
    return package


def digit_body() -> bytes:
    import io

    from PIL import Image

    from aiplatform.datasets.sources import mnist_test_digits

    images, _ = mnist_test_digits(1)
    buffer = io.BytesIO()
    Image.fromarray(images[0].reshape(28, 28)).save(buffer, format="PNG")
    return json.dumps({"image_b64": base64.b64encode(buffer.getvalue()).decode()}).encode()


TEXT_LABELS = ["negative", "neutral", "positive"]


def tweets() -> list[str]:
    """The real tweets of the ``tweets-sentiment`` corpus (read from its CSV, as the platform does)."""
    import csv

    from aiplatform.datasets.text_sources import tweets_file

    with tweets_file().open(encoding="latin-1", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def template_package(template_name: str, preprocessing: dict, name: str) -> bytes:  # type: ignore[type-arg]
    """A package of the template's default model over ``preprocessing``, with the architecture
    and input spec the template itself makes; the pretrained part is real, the rest random (the
    cost of a forward pass does not depend on the weights)."""
    from types import SimpleNamespace

    import torch

    from aiplatform.networks.architectures import build_model, load_pretrained
    from aiplatform.packaging import build_package
    from aiplatform.training.catalog import get_template

    template = get_template(template_name)
    params, dataset = template.parse_params({}), SimpleNamespace(labels=TEXT_LABELS)
    architecture = template.architecture(params, dataset, preprocessing)
    torch.manual_seed(0)
    return build_package(
        model_config={
            "name": name,
            "template": template.name,
            "task": template.task,
            "architecture": architecture,
            "labels": TEXT_LABELS,
            "input": template.input_spec(dataset, preprocessing),
            "preprocessing": preprocessing,
        },
        state_dict=load_pretrained(build_model(architecture), architecture).state_dict(),
        metrics={"test_accuracy": 0.74},
        lineage={"method": "bench"},
    )


def text_package() -> tuple[bytes, bytes]:
    """The default ``text-classification`` model for the tweets (the real tokenizer fitted on the
    corpus) and one real tweet as JSON ``{"text": ...}``."""
    from aiplatform.preprocessing import text_preprocessing
    from aiplatform.text import Tokenizer
    from aiplatform.training.text import TextParams

    corpus, params = tweets(), TextParams()
    tokenizer = Tokenizer.fit(
        corpus,
        max_vocab=params.max_vocab,
        min_freq=params.min_freq,
        max_tokens=params.max_tokens,
        bigram_buckets=params.bigram_buckets,
    )
    package = template_package("text-classification", text_preprocessing(tokenizer), "bench-text")
    return package, json.dumps({"text": corpus[1234]}).encode()


def minilm_package() -> tuple[bytes, bytes]:
    """The default ``text-minilm-classification`` model: the real pretrained MiniLM encoder and
    its WordPiece tokenizer (the ``minilm`` extra), a random head, and the same real tweet."""
    from aiplatform.training.catalog import get_template

    template = get_template("text-minilm-classification")
    preprocessing = template.preprocessing(template.parse_params({}), None, None)
    package = template_package(template.name, preprocessing, "bench-minilm")
    return package, json.dumps({"text": tweets()[1234]}).encode()


def tabular_package() -> tuple[bytes, bytes]:
    """A booster trained here on scikit-learn's real breast-cancer table (what the
    tabular-classification template trains, in XGBoost's JSON format) and one real row as JSON."""
    import sklearn.datasets
    import xgboost

    from aiplatform.packaging import build_package

    bunch = sklearn.datasets.load_breast_cancer()
    names = [name.replace(" ", "_") for name in bunch.feature_names]
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 2, "max_depth": 6, "nthread": 2, "seed": 0},
        xgboost.DMatrix(bunch.data, label=bunch.target),
        num_boost_round=100,
    )
    package = build_package(
        model_config={
            "name": "bench-tabular",
            "template": "tabular-classification",
            "task": "tabular-classification",
            "architecture": {"type": "xgboost", "num_features": len(names), "num_classes": 2},
            "labels": [str(n) for n in bunch.target_names],
            "input": {"type": "tabular", "features": [{"name": n, "type": "number"} for n in names]},
        },
        model_file=bytes(booster.save_raw("json")),
        metrics={},
        lineage={"method": "bench"},
    )
    return package, json.dumps({"features": dict(zip(names, bunch.data[7].tolist()))}).encode()


def body_parser(runner):  # type: ignore[no-untyped-def]
    """body -> what the model takes for one request: an image, token ids for a text model, or an
    encoded row for a table model."""
    from aiplatform.kinds import TabularKind, TextKind
    from aiplatform.kinds.images import image_from_json
    from aiplatform.limits import RequestLimits

    if isinstance(runner.kind, TabularKind):
        return lambda body: runner.kind.from_json(json.loads(body), RequestLimits())
    if not isinstance(runner.kind, TextKind):
        return lambda body: image_from_json(json.loads(body), runner.config.input)
    return lambda body: runner.kind.tokenizer.encode(json.loads(body)["text"])


def wait_ok(url: str, body: bytes, timeout_s: float = 120, headers: dict[str, str] | None = None) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            answer = httpx.post(
                url, content=body, headers={"content-type": "application/json", **(headers or {})}, timeout=10
            )
            if answer.status_code == 200:
                return
            detail = answer.text
        except httpx.HTTPError as exc:
            detail = str(exc)
        if time.time() > deadline:
            raise RuntimeError(f"{url} did not answer 200: {detail}")
        time.sleep(0.5)


LOAD = {"generator": "wrk"}
"""Which load generator measure_http uses: wrk (C, the default) or bench/loadgen.py (Python)."""


def measure_http(
    urls: str | list[str], body: bytes, seconds: float, headers: dict[str, str] | None = None
) -> dict[int, LoadResult]:
    if LOAD["generator"] == "wrk":
        return {c: run_wrk(urls, body, c, seconds, headers=headers) for c in CONCURRENCIES}  # type: ignore[misc]
    if headers:
        raise SystemExit("--load python sends no headers: use wrk with --mode aip-up")
    return {c: asyncio.run(run_http_load(urls, body, c, seconds)) for c in CONCURRENCIES}


def in_process(package: bytes, body: bytes, seconds: float) -> dict[int, LoadResult]:
    """(c): parse + predict in this process, requests batched as the gateway batches them."""
    import numpy as np

    from aiplatform.serving.batcher import AdaptiveBatcher
    from aiplatform.serving.runner import ModelRunner
    from aiplatform.settings import Settings

    runner = ModelRunner.from_bytes(package)
    parse = body_parser(runner)
    settings = Settings()

    async def forward(_: str, images: list) -> list:  # type: ignore[type-arg]
        return runner.predict(np.stack(images))

    async def run(concurrency: int) -> LoadResult:
        batcher = AdaptiveBatcher(forward, settings.serve_max_batch_size, max_in_flight=1)

        async def call() -> object:
            return await batcher.submit("m", parse(body))

        return await run_call_load(call, concurrency, seconds)

    return {c: asyncio.run(run(c)) for c in CONCURRENCIES}


def plain_fastapi(package_path: Path, body: bytes, seconds: float, torch_threads: int = 0) -> dict[int, LoadResult]:
    """(b): a single uvicorn process serving the package unbatched (``torch_threads``: 0 for
    torch's default)."""
    port = free_port()
    env = {**os.environ, "BENCH_PACKAGE": str(package_path), "PYTHONPATH": str(ROOT)}
    if torch_threads:
        env["BENCH_TORCH_THREADS"] = str(torch_threads)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "bench"),
            "plain_fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/predict"
        wait_ok(url, body)
        return measure_http(url, body, seconds)
    finally:
        server.terminate()
        server.wait(30)


def gateway_urls(mode: str, proxy_port: int, app_name: str, replicas: int) -> list[str]:
    """Where clients send requests: Serve's proxy, or the gateway replicas' own ports (direct
    ingress: the target group a load balancer in front of the replicas would use)."""
    if mode == "proxy":
        return [f"http://127.0.0.1:{proxy_port}"]
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    deadline = time.time() + 60
    while time.time() < deadline:
        for group in ray.get(controller.get_target_groups.remote(app_name)):
            if str(group.protocol).upper().endswith("HTTP") and len(group.targets) >= replicas:
                return [f"http://{t.ip}:{t.port}" for t in group.targets]
        time.sleep(0.5)
    raise RuntimeError("the gateway replicas' direct-ingress targets did not appear")


def gateway(package: bytes, body: bytes, seconds: float, mode: str, replicas: int) -> dict[int, LoadResult]:
    """(a): the platform's Serve app, on an embedded local Ray with 2 CPUs."""
    if mode == "direct":
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    import ray
    from ray import serve

    from aiplatform.registry import RegistryClient
    from aiplatform.runtime import local_runtime_env  # Serve's gRPC proxy on loopback, bounded
    from aiplatform.settings import Settings
    from aiplatform.storage import sha256_bytes, storage_from_settings
    from serve_apps.app import start_app

    home = Path(tempfile.mkdtemp(prefix="aip-bench-serve-"))
    settings = Settings(
        home=home,
        ray_namespace=f"bench-{uuid.uuid4().hex[:8]}",
        serve_gateway_replicas=replicas,
        api_auth="off",  # as the plain app it is compared with
        grpc_port=free_port(),
    )
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(("RAY_SERVE_", "RAY_ENABLE_WINDOWS"))}
    ray.init(
        address="local",
        num_cpus=2,
        namespace=settings.ray_namespace,
        include_dashboard=False,
        _temp_dir=f"/tmp/aip-bench-ray-{os.getpid()}",
        runtime_env=local_runtime_env(env_vars),
        log_to_driver=False,
    )
    try:
        storage = storage_from_settings(settings)
        registry = RegistryClient.connect(settings)
        storage.put_bytes("packages/bench/v1.zip", package)
        registry.register_version(
            "bench", package_key="packages/bench/v1.zip", sha256=sha256_bytes(package), template="cnn-classification"
        )
        registry.set_alias("bench", "production", 1)
        port = free_port()
        start_app(settings, port)
        urls = [url + "/v1/models/bench/predict" for url in gateway_urls(mode, port, settings.serve_app_name, replicas)]
        print(f"gateway ({mode}) at {urls}", flush=True)
        for url in urls:
            wait_ok(url, body)
        return measure_http(urls, body, seconds)
    finally:
        serve.shutdown()
        ray.shutdown()


REGISTER = """
import os, sys
from aip.local import LOCAL_RAY_ENV
os.environ.update(LOCAL_RAY_ENV)  # before Ray is imported, as the CLI does
from aip.local import connect_driver
from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from aiplatform.storage import sha256_bytes, storage_from_settings
settings = Settings()
connect_driver(settings)
package = open(sys.argv[1], "rb").read()
storage_from_settings(settings).put_bytes("packages/bench/v1.zip", package)
registry = RegistryClient.connect(settings)
registry.register_version("bench", package_key="packages/bench/v1.zip", sha256=sha256_bytes(package),
                          template="cnn-classification")
registry.set_alias("bench", "production", 1)
"""
"""Registers the bench package on a running platform, as a training job would (a driver that
joins the head with its token)."""


def aip_up_env(home: Path) -> dict[str, str]:
    """The environment of an `aip up` of its own: home, ports, Ray temp folder and Ray token
    file, so it neither meets nor disturbs another platform on the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIP_", "RAY_"))}
    env.update(
        {
            "AIP_HOME": str(home),
            "AIP_RAY_PORT": str(free_port()),
            "AIP_DASHBOARD_PORT": str(free_port()),
            "AIP_DASHBOARD_AGENT_PORT": str(free_port()),
            "AIP_HTTP_PORT": str(free_port()),
            "AIP_GRPC_PORT": str(free_port()),
            "AIP_PROMETHEUS_PORT": str(free_port()),
            "AIP_RAY_NUM_CPUS": "2",
            "AIP_RAY_TEMP_DIR": f"/tmp/aip-bench-up-{os.getpid()}",
            "RAY_AUTH_TOKEN_PATH": str(home / "ray_token"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


@contextmanager
def aip_up_platform(code: Path, package_path: Path) -> Iterator[tuple[str, str]]:
    """``python -m aip up`` from the tree ``code`` in a home of its own, with the package
    registered as ``bench`` and set production; yields (base URL, the API token). `aip down`
    afterwards."""
    home = Path(tempfile.mkdtemp(prefix="aip-bench-up-"))
    env = aip_up_env(home) | {"PYTHONPATH": str(code), "AIP_RAY_TEMP_DIR": f"/tmp/{home.name}-ray"}

    def aip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aip", *args], cwd=code, env=env, capture_output=True, text=True, timeout=600
        )

    try:
        up = aip("up")
        if up.returncode != 0:
            raise RuntimeError(f"aip up ({code}) failed: {up.stderr[-3000:]}")
        registered = subprocess.run(
            [sys.executable, "-c", REGISTER, str(package_path)],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if registered.returncode != 0:
            raise RuntimeError(f"registering the package failed: {registered.stderr[-3000:]}")
        yield f"http://127.0.0.1:{env['AIP_HTTP_PORT']}", (home / "state" / "api_token").read_text().strip()
    finally:
        aip("down")


def aip_up_gateway(package_path: Path, body: bytes, seconds: float) -> dict[int | str, LoadResult]:
    """(a) as users run it: ``python -m aip up`` (a Ray head with its dashboard and token
    authentication, Prometheus when installed, the head's actors, the alert engine, the Serve
    app; the API token on, inputs kept), the package registered and set production, wrk at the
    URL `up` prints with the token header. Also ``/v2/health/ready`` at c=1 (key ``"ready"``),
    the gateway's fixed path alone."""
    with aip_up_platform(ROOT, package_path) as (base, token):
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{base}/v1/models/bench/predict"
        print(f"gateway (aip up) at {url}", flush=True)
        wait_ok(url, body, headers=headers)
        results: dict[int | str, LoadResult] = dict(measure_http(url, body, seconds, headers))
        results["ready"] = run_wrk(f"{base}/v2/health/ready", b"", 1, seconds, method="GET")  # type: ignore[assignment]
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="recorded seconds per concurrency")
    parser.add_argument(
        "--mode",
        choices=["direct", "proxy", "aip-up"],
        default="direct",
        help="direct: clients reach the gateway replica (throughput-optimized Serve); "
        "proxy: through Serve's HTTP proxy; aip-up: the platform as `aip up` starts it "
        "(dashboard, token auth, Prometheus, alert engine, inputs kept), at the URL it prints",
    )
    parser.add_argument("--gateway-replicas", type=int, default=1)
    parser.add_argument(
        "--model",
        choices=["mnist", "onnx", "text", "minilm", "tabular"],
        default="mnist",
        help="the MNIST CNN and a digit PNG (onnx: the same CNN exported to ONNX, served by "
        "ONNX Runtime), or a tweets text model (bag of embeddings, or the MiniLM encoder) "
        "and a tweet, or an XGBoost booster and a breast-cancer row",
    )
    parser.add_argument(
        "--only",
        choices=["gateway", "gateway_torch", "plain", "plain1", "inprocess"],
        action="append",
        help="plain: torch's default threads; plain1: one torch thread; gateway_torch (with "
        "--model onnx): the same CNN in PyTorch through the same gateway",
    )
    parser.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk",
        help="the HTTP load generator: wrk (C; default) or bench/loadgen.py",
    )
    args = parser.parse_args()
    LOAD["generator"] = args.load

    makers = {
        "mnist": lambda: (mnist_package(), digit_body()),
        "onnx": lambda: (onnx_mnist_package(), digit_body()),
        "text": text_package,
        "minilm": minilm_package,
        "tabular": tabular_package,
    }
    package, body = makers[args.model]()
    package_path = Path(tempfile.mkdtemp(prefix="aip-bench-")) / "package.zip"
    package_path.write_bytes(package)
    targets = args.only or (
        ["gateway_torch", "gateway"] if args.model == "onnx" else ["inprocess", "plain", "plain1", "gateway"]
    )
    runs: dict[str, list[dict[int, LoadResult]]] = {t: [] for t in targets}
    for repeat in range(args.repeats):
        for target in targets:
            if target == "inprocess":
                runs[target].append(in_process(package, body, args.seconds))
            elif target in ("plain", "plain1"):
                runs[target].append(plain_fastapi(package_path, body, args.seconds, 1 if target == "plain1" else 0))
            elif target == "gateway_torch":
                runs[target].append(gateway(mnist_package(), body, args.seconds, args.mode, args.gateway_replicas))
            elif args.mode == "aip-up":
                runs[target].append(aip_up_gateway(package_path, body, args.seconds))  # type: ignore[arg-type]
            else:
                runs[target].append(gateway(package, body, args.seconds, args.mode, args.gateway_replicas))
            print(
                f"repeat {repeat + 1} {target}: " + json.dumps({c: r.summary() for c, r in runs[target][-1].items()}),
                flush=True,
            )

    table = {t: {c: median_summary([run[c] for run in runs[t]]) for c in CONCURRENCIES} for t in targets}
    if args.mode == "aip-up" and "gateway" in table:
        table["gateway"]["ready"] = median_summary([run["ready"] for run in runs["gateway"]])  # type: ignore[index]
    print("\nmedians over", args.repeats, "runs (rps, p50_ms, p99_ms, failed):")
    for target, rows in table.items():
        for c, row in rows.items():
            print(f"  {target:<10} c={c:<3} {row}")
    if args.mode == "aip-up" and "gateway" in table:
        print(f"gateway GET /v2/health/ready at c=1: p50 {table['gateway']['ready']['p50_ms']:.2f} ms")  # type: ignore[index]
    for plain in ("plain", "plain1"):
        if "gateway" in table and plain in table:
            for c in CONCURRENCIES:
                ratio = table["gateway"][c]["rps"] / table[plain][c]["rps"]
                gap = table["gateway"][c]["p50_ms"] - table[plain][c]["p50_ms"]
                print(f"gateway/{plain} at c={c}: throughput {ratio:.2f}x, p50 {gap:+.2f} ms")
    if "gateway" in table and "gateway_torch" in table:
        for c in CONCURRENCIES:
            ratio = table["gateway"][c]["rps"] / table["gateway_torch"][c]["rps"]
            gap = table["gateway"][c]["p50_ms"] - table["gateway_torch"][c]["p50_ms"]
            print(f"{args.model}/pytorch through the gateway at c={c}: throughput {ratio:.2f}x, p50 {gap:+.2f} ms")
    if "gateway" in table and "inprocess" in table:
        gap = table["gateway"][1]["p50_ms"] - table["inprocess"][1]["p50_ms"]
        print(f"gateway p50 - in-process p50 at c=1: {gap:.2f} ms")
    print(
        json.dumps(
            {"model": args.model, "mode": args.mode, "gateway_replicas": args.gateway_replicas, "medians": table}
        )
    )


if __name__ == "__main__":
    main()
