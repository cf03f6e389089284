"""Model runner: a verified package, loaded once, that predicts batches of inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from aiplatform.kinds import kind_for
from aiplatform.packaging import ModelPackage, load_package

HEAVY_FORWARD_S = 0.004
"""A model whose forward pass over one input takes longer than this on one thread gets more
threads under ``serve_model_threads="auto"``: its forward pass, not the gateway, bounds what a
replica serves (the MNIST CNN takes ~0.3 ms here, MiniLM ~15 ms)."""
CALIBRATION_PASSES = 3

ThreadsSetting = int | Literal["auto"]


def forward_threads(setting: ThreadsSetting, forward_s: float, cpus: int) -> int:
    """Torch threads for a model's forward passes: ``setting`` when it is a number (0: every CPU
    the process may use), else one for a light model and ``cpus`` for a heavy one."""
    if setting == "auto":
        return cpus if forward_s > HEAVY_FORWARD_S else 1
    return int(setting) or cpus


class ModelRunner:
    """Holds one model on its device; ``predict`` takes a batch of the model's inputs."""

    def __init__(self, package: ModelPackage, device: str = "cpu") -> None:
        self.package = package
        self.config = package.config
        self.labels = package.labels
        self.kind = kind_for(package.config)
        self.device = torch.device("cpu" if package.cpu_only else device)
        self.model = package.model.to(self.device)
        self.model.eval()
        self.on_release: Callable[[], None] | None = None
        self.threads: int | None = None
        """Torch threads for this model's forward passes (None: leave the process's setting)."""
        self.forward_s: float | None = None

    @classmethod
    def from_bytes(cls, data: bytes, device: str = "cpu") -> ModelRunner:
        started = time.perf_counter()
        runner = cls(load_package(data), device)
        runner.load_seconds = time.perf_counter() - started
        return runner

    def choose_threads(self, setting: ThreadsSetting, cpus: int) -> int:
        """Times a forward pass over one input on one thread (the best of a few, after a first
        pass that warms the model up) and keeps the threads :func:`forward_threads` gives."""
        self.use_threads(1)
        sample = self.kind.sample_batch()
        try:
            self.predict_proba(sample)
            timings = []
            for _ in range(CALIBRATION_PASSES):
                started = time.perf_counter()
                self.predict_proba(sample)
                timings.append(time.perf_counter() - started)
            self.forward_s = min(timings)
        except Exception:
            self.forward_s = None
        self.use_threads(forward_threads(setting, self.forward_s or 0.0, cpus))
        return self.threads  # type: ignore[return-value]

    def limit_run_time(self, seconds: float) -> None:
        """A model with its own runtime (ONNX Runtime) stops a forward pass after ``seconds`` and
        fails that call: a graph that spins on some input cannot hold the replica."""
        if hasattr(self.model, "run_timeout_s"):
            self.model.run_timeout_s = seconds

    def use_threads(self, threads: int) -> None:
        """Forward passes on ``threads`` torch threads; a model with its own runtime (ONNX Runtime,
        XGBoost) is told too."""
        self.threads = threads
        retune = getattr(self.model, "use_threads", None)
        if retune is not None:
            retune(threads)

    def release(self) -> None:
        """Drops the weights (called when a model server evicts this model from its cache)."""
        self.model = None  # type: ignore[assignment]
        self.package = None  # type: ignore[assignment]
        device = getattr(self, "device", None)
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
        callback, self.on_release = getattr(self, "on_release", None), None
        if callback is not None:
            callback()

    def __del__(self) -> None:  # Serve's multiplexing calls __del__ on eviction
        self.release()

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, num_classes), for a batch of the model's inputs as its
        kind makes them (uint8 images (N, H, W, C), token ids (N, L), ...)."""
        tensor = self.kind.to_tensor(inputs).to(self.device)
        # Per call and on the calling thread: OpenMP keeps the thread count per thread, and the
        # models one replica multiplexes may each want their own.
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            logits = self.model(tensor)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict(self, inputs: np.ndarray) -> list[dict[str, Any]]:
        """One answer per input: label, its probability and every class's probability."""
        probabilities = self.predict_proba(inputs)
        answers = []
        for row in probabilities:
            best = int(row.argmax())
            answers.append(
                {
                    "label": self.labels[best],
                    "probability": float(row[best]),
                    "probabilities": {label: float(p) for label, p in zip(self.labels, row)},
                }
            )
        return answers
