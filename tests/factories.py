"""Small factories for test data."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path


def _unassigned_ports() -> range:
    """Ports the kernel never hands out by itself: below the ephemeral range (above Ray's default
    worker ports, 10002-19999), or above it where the range starts low."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - 20000 >= 1000:
        return range(20000, low)
    if 65535 - high >= 1000:
        return range(high + 1, 65536)
    return range(20000, 32000)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, outside the kernel's ephemeral range and
    never handed out twice in a session. A port from bind(0) is one the kernel may give the next
    bind(0) or connect too: a test's job bound its port a minute after choosing it, and by then a
    gRPC server of that job's Ray (which sets SO_REUSEPORT, as the gateway's listener does) held it,
    so the two shared it and an HTTP client got HTTP/2 bytes."""
    import random

    ports = _unassigned_ports()
    for _ in range(200):
        port = random.choice(ports)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {ports}")


def make_digit_images(count: int = 20, seed: int = 0):  # type: ignore[no-untyped-def]
    """Real MNIST test digits (images uint8 N x 28 x 28, labels); ``seed`` picks the slice."""
    from aiplatform.datasets.sources import mnist_test_digits

    return mnist_test_digits(count, offset=seed * count)


def write_idx(path, array, gz: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Write a uint8 array as an IDX file (optionally gzipped)."""
    import gzip
    import struct

    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype("uint8").tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def png_bytes(array, mode: str = "L") -> bytes:  # type: ignore[no-untyped-def]
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def make_package(
    name: str = "tiny", num_classes: int = 3, seed: int = 0, delay_ms: float = 0.0, error_rate: float = 0.0
) -> bytes:
    """A small valid CNN package with random weights; ``delay_ms`` / ``error_rate`` wrap it in
    the fault-injection architecture (slower, or failing some forward passes)."""
    import torch

    from aiplatform.networks.architectures import build_model
    from aiplatform.packaging import build_package
    from aiplatform.preprocessing import image_preprocessing

    torch.manual_seed(seed)
    architecture = {
        "type": "cnn",
        "in_channels": 1,
        "image_size": 8,
        "num_classes": num_classes,
        "conv_channels": [4],
        "kernel_size": 3,
        "hidden_units": 8,
        "dropout": 0.0,
    }
    if delay_ms or error_rate:
        architecture = {
            "type": "fault-injection",
            "delay_ms": delay_ms,
            "error_rate": error_rate,
            "inner": architecture,
        }
    model = build_model(architecture)
    return build_package(
        model_config={
            "name": name,
            "template": "cnn-classification",
            "architecture": architecture,
            "labels": [str(i) for i in range(num_classes)],
            "input": {"type": "image", "height": 8, "width": 8, "channels": 1},
            "preprocessing": image_preprocessing(8, 8, 1, 0.1, 0.3),
        },
        state_dict=model.state_dict(),
        metrics={"test_accuracy": 0.5},
        lineage={"method": "test"},
    )


def make_text_package(name: str = "tiny-text", max_tokens: int = 8) -> bytes:
    """A small text-classification package (the template's own architecture, a word tokenizer
    fitted on a few sentences, random weights): 3 labels, ``max_tokens`` words per window."""
    from types import SimpleNamespace

    import torch

    from aiplatform.networks.architectures import build_model
    from aiplatform.packaging import build_package
    from aiplatform.preprocessing import text_preprocessing
    from aiplatform.text import Tokenizer
    from aiplatform.training.catalog import get_template

    labels = ["negative", "neutral", "positive"]
    tokenizer = Tokenizer.fit(
        ["good great happy love", "bad awful sad hate", "ok fine the a is"] * 2, min_freq=1, max_tokens=max_tokens
    )
    template = get_template("text-classification")
    params, dataset = template.parse_params({"max_tokens": max_tokens}), SimpleNamespace(labels=labels)
    preprocessing = text_preprocessing(tokenizer)
    architecture = template.architecture(params, dataset, preprocessing)
    torch.manual_seed(0)
    return build_package(
        model_config={
            "name": name,
            "template": template.name,
            "task": template.task,
            "architecture": architecture,
            "labels": labels,
            "input": template.input_spec(dataset, preprocessing),
            "preprocessing": preprocessing,
        },
        state_dict=build_model(architecture).state_dict(),
        metrics={"test_accuracy": 0.5},
        lineage={"method": "test"},
    )


def register_bytes(settings, name: str, data: bytes, template: str = "cnn-classification", metrics=None) -> int:  # type: ignore[no-untyped-def]
    """Store and register (through the registry actor) a package's bytes; returns its version."""
    from aiplatform.registry import RegistryClient
    from aiplatform.storage import sha256_bytes, storage_from_settings

    key = f"packages/{name}/{sha256_bytes(data)[:16]}.zip"
    storage_from_settings(settings).put_bytes(key, data)
    return (
        RegistryClient.connect(settings)
        .register_version(name, package_key=key, sha256=sha256_bytes(data), template=template, metrics=metrics)
        .version
    )


def register_package(settings, name: str, metrics=None, **package_options) -> int:  # type: ignore[no-untyped-def]
    """Store and register (through the registry actor) one ``make_package(name, **package_options)``
    with ``metrics``; returns its version."""
    return register_bytes(settings, name, make_package(name=name, **package_options), metrics=metrics)


def train_and_publish(settings, template_name: str, params: dict, name: str):  # type: ignore[no-untyped-def]
    """Train ``template_name`` with ``params`` in this process (Ray Train on the session's Ray) and
    register the package as ``name``: (the training outcome, its version, the storage)."""
    import uuid

    from aiplatform.datasets import DatasetManager
    from aiplatform.registry import RegistryClient
    from aiplatform.storage import storage_from_settings
    from aiplatform.training.catalog import get_template
    from aiplatform.training.engine import run_training
    from aiplatform.training.publish import publish_model

    storage = storage_from_settings(settings)
    template = get_template(template_name)
    outcome = run_training(
        template,
        template.parse_params(params),
        settings=settings,
        storage=storage,
        datasets=DatasetManager(storage),
        run_name=f"{name}-{uuid.uuid4().hex[:6]}",
    )
    version = publish_model(outcome, name=name, storage=storage, registry=RegistryClient.connect(settings))
    return outcome, version, storage


def register_versions(settings, name: str, count: int = 1, seed: int = 0) -> list[int]:  # type: ignore[no-untyped-def]
    """Register ``count`` small 3-class packages of ``name`` and point ``production`` at the first;
    returns their version numbers."""
    from aiplatform.registry import RegistryClient

    versions = [register_package(settings, name, num_classes=3, seed=seed + index) for index in range(count)]
    RegistryClient.connect(settings).set_alias(name, "production", versions[0])
    return versions


def model_server_replicas(app_name: str):  # type: ignore[no-untyped-def]
    """Handles of the live model-server replicas of the Serve app ``app_name`` (to kill one)."""
    import ray

    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"{app_name}#ModelServer#" in a["name"]
    ]
    return [ray.get_actor(name, namespace="serve") for name in names]


def wait_for(condition, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until it returns something truthy, and return that; fails naming
    ``what`` it waited for."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_for_task(queue, task_id: str, done, timeout_s: float = 240.0):  # type: ignore[no-untyped-def]
    """Poll the queue until ``done(task)`` holds; returns that task (fails naming its state)."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        task = queue.get(task_id)
        if done(task):
            return task
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} stuck in {task.state}: {task}")


TINY_CNN_PARAMS = {"epochs": 1, "max_rows": 600, "batch_size": 64, "conv_channels": [4], "hidden_units": 16}
"""A cnn-classification run that finishes in seconds on 2 cores (the accuracy is not the point)."""


def make_task(store, **overrides):  # type: ignore[no-untyped-def]
    """A task in ``store`` (a TaskStore or TaskClient) with tiny CNN parameters."""
    options = {"template": "cnn-classification", "params": dict(TINY_CNN_PARAMS), **overrides}
    return store.create(options.pop("template"), options.pop("params"), **options)


@contextlib.contextmanager
def platform_settings(home, prefix: str, **overrides):  # type: ignore[no-untyped-def]
    """Settings of a test platform of its own (its home folder and Ray namespace); afterwards its
    head actors are removed, so that a session does not keep a dozen idle schedulers and alert
    engines polling on its two cores."""
    import uuid
    from pathlib import Path

    from aiplatform.settings import Settings

    # Authentication off unless a test asks for it: the token tests and the hostile-input suite
    # cover the guard; the others talk to the platform as a trusted client.
    if "api_token" not in overrides:
        overrides.setdefault("api_auth", "off")
    settings = Settings(home=Path(home), ray_namespace=f"{prefix}-{uuid.uuid4().hex[:8]}", **overrides)
    try:
        yield settings
    finally:
        remove_platform_actors(settings.ray_namespace)


def remove_platform_actors(namespace: str) -> None:
    """Kill the named actors of ``namespace`` (the platform's detached head actors)."""
    import ray

    if not ray.is_initialized():
        return
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            with contextlib.suppress(ValueError):  # already gone
                ray.kill(ray.get_actor(actor["name"], namespace=namespace))


_SERVE_URLS: dict[str, str] = {}
"""The URL of the Serve instance started in each Ray (by GCS address): it outlives the modules."""
_SERVE_GRPC: dict[str, str] = {}
"""The address of that Serve instance's gRPC proxy (the Open Inference Protocol over gRPC)."""
_RESIDENT: dict[str, object] = {}
"""The settings of the app ``served_platform(keep=True)`` left deployed in each Ray (by GCS address):
the session's shared platform (tests/conftest.py ``shared_platform``), kept for the next module."""


def served_grpc_address() -> str:
    """``127.0.0.1:<port>`` of the gRPC proxy of the Serve instance ``served_platform`` started."""
    import ray

    return _SERVE_GRPC[ray._private.worker._global_node.gcs_address]


@contextlib.contextmanager
def served_platform(settings, keep: bool = False):  # type: ignore[no-untyped-def]
    """The platform's Serve app (gateway + model servers) on 127.0.0.1, yielding its base URL;
    the app is deleted afterwards, unless ``keep``: then it stays deployed for the next module
    that serves the same settings (a deploy and a delete cost about 10 s on two cores), until one
    serving other settings replaces it (``release_resident``). Serve itself (its controller and
    proxy, on a free port) is started once per Ray and kept for the next module: starting it
    again cost seconds each time."""
    import ray

    from serve_apps.app import deploy_app, start_app

    cluster = ray._private.worker._global_node.gcs_address
    resident = _RESIDENT.get(cluster)
    if resident is not None and resident.serve_app_name != settings.serve_app_name:  # type: ignore[attr-defined]
        release_resident()
        resident = None
    if cluster not in _SERVE_URLS:
        _SERVE_GRPC[cluster] = f"127.0.0.1:{free_port()}"
        _SERVE_URLS[cluster] = start_app(settings, free_port(), int(_SERVE_GRPC[cluster].rsplit(":", 1)[1]))
    elif resident is None:
        deploy_app(settings)
    _RESIDENT.pop(cluster, None)
    try:
        yield _SERVE_URLS[cluster]
    finally:
        if keep:
            _RESIDENT[cluster] = settings
        else:
            delete_app(settings.serve_app_name)


def delete_app(name: str) -> None:
    """Delete the Serve app ``name`` and wait until Serve no longer lists it: ``serve.delete``
    itself looks once a second, so each delete (about 2 s of replicas draining) took 3 s."""
    from ray import serve

    serve.delete(name, _blocking=False)
    wait_for(lambda: name not in serve.status().applications, 60, f"Serve to delete the app {name}")


def release_resident() -> None:
    """Delete the app ``served_platform(keep=True)`` left deployed, and stop its platform's head
    actors (its scheduler would go on polling on the session's two cores); a no-op without one."""
    import ray

    if not ray.is_initialized():
        return
    settings = _RESIDENT.pop(ray._private.worker._global_node.gcs_address, None)
    if settings is not None:
        delete_app(settings.serve_app_name)  # type: ignore[attr-defined]
        remove_platform_actors(settings.ray_namespace)  # type: ignore[attr-defined]


def fault_table_figure(row: str, text: str) -> None:
    """Record a fault-table figure (docs/RELIABILITY.md) in test-artifacts/fault-table.txt."""
    from pathlib import Path

    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with (artifacts / "fault-table.txt").open("a") as handle:
        handle.write(f"{row}: {text}\n")
    print(f"\nFAULT-TABLE {row}: {text}")


def onnx_classifier(
    num_classes: int = 3,
    image_size: int = 8,
    channels: int = 1,
    seed: int = 0,
    layout: str = "NCHW",
    softmax: bool = False,
):  # type: ignore[no-untyped-def]
    """(a small CNN in eval mode, its ONNX graph as torch's exporter writes it): a model "trained
    elsewhere". ``layout`` NHWC: the graph takes channels last; ``softmax``: it outputs probabilities."""
    import io
    import warnings

    import torch

    from aiplatform.networks.architectures import build_model

    torch.manual_seed(seed)
    network = build_model(
        {
            "type": "cnn",
            "in_channels": channels,
            "image_size": image_size,
            "num_classes": num_classes,
            "conv_channels": [4],
            "hidden_units": 16,
        }
    )

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            if layout == "NHWC":
                pixels = pixels.permute(0, 3, 1, 2)
            scores = self.network(pixels)
            return torch.softmax(scores, dim=1) if softmax else scores

    module = Exported().eval()
    shape = (2, channels, image_size, image_size) if layout == "NCHW" else (2, image_size, image_size, channels)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(shape),),
            buffer,
            dynamo=False,
            input_names=["pixels"],
            output_names=["scores"],
            dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}},
        )
    return module, buffer.getvalue()


def digits_package(labels: list[str], seed: int = 0) -> bytes:
    """A small random CNN over 28x28 digits with ``labels`` (an MNIST split's rows fit it): a
    package to score with, its accuracy not the point."""
    import torch

    from aiplatform.networks.architectures import build_model
    from aiplatform.packaging import build_package
    from aiplatform.preprocessing import image_preprocessing

    torch.manual_seed(seed)
    architecture = {
        "type": "cnn",
        "in_channels": 1,
        "image_size": 28,
        "num_classes": len(labels),
        "conv_channels": [4],
        "kernel_size": 3,
        "hidden_units": 16,
        "dropout": 0.0,
    }
    return build_package(
        model_config={
            "name": "digits",
            "template": "cnn-classification",
            "architecture": architecture,
            "labels": labels,
            "input": {"type": "image", "height": 28, "width": 28, "channels": 1},
            "preprocessing": image_preprocessing(28, 28, 1, 0.1307, 0.3081),
        },
        state_dict=build_model(architecture).state_dict(),
        metrics={"test_accuracy": 0.1},
        lineage={"method": "test"},
    )
