"""An end-to-end check over HTTP: real MNIST test digits, rendered to PNG, through the upload
endpoint; reports the accuracy and latency a client sees."""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass

import httpx
import numpy as np

from aiplatform.datasets.sources import mnist_test_digits


@dataclass(frozen=True)
class HttpCheck:
    requests: int
    accuracy: float
    p50_ms: float
    p99_ms: float
    versions: tuple[int, ...]


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def check_digits_over_http(
    base_url: str, model: str, count: int = 200, offset: int = 0, headers: dict[str, str] | None = None
) -> HttpCheck:
    """POST ``count`` test digits as PNG uploads to ``/v1/models/{model}/predict``
    (``headers``: e.g. the platform's ``Authorization``)."""
    images, labels = mnist_test_digits(count, offset)
    latencies, correct, versions = [], 0, set()
    with httpx.Client(base_url=base_url, timeout=30, headers=headers or {}) as client:
        for image, label in zip(images, labels):
            started = time.perf_counter()
            response = client.post(
                f"/v1/models/{model}/predict", files={"file": ("digit.png", png(image), "image/png")}
            )
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            body = response.json()
            correct += int(body["label"] == str(int(label)))
            versions.add(int(body["version"]))
    ordered = sorted(latencies)
    return HttpCheck(
        requests=count,
        accuracy=correct / max(1, count),
        p50_ms=statistics.median(ordered),
        p99_ms=ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        versions=tuple(sorted(versions)),
    )
