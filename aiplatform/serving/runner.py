"""Model runner: a verified package, loaded once, that predicts batches of inputs."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np
import torch

from aiplatform.kinds import kind_for
from aiplatform.packaging import ModelPackage, load_package


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
        self.on_release: Optional[Callable[[], None]] = None

    @classmethod
    def from_bytes(cls, data: bytes, device: str = "cpu") -> "ModelRunner":
        started = time.perf_counter()
        runner = cls(load_package(data), device)
        runner.load_seconds = time.perf_counter() - started
        return runner

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
