"""Publishing a user's own nn.Module: exported to ONNX, checked against PyTorch, registered, and
served by the platform's runner with the module's answers (its source is not needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aiplatform import sdk
from aiplatform.errors import InvalidArgument
from aiplatform.kinds import kind_for
from aiplatform.packaging import load_package
from aiplatform.registry import RegistryStore
from aiplatform.serving.runner import ModelRunner
from aiplatform.storage import LocalStorage

PREPROCESSING = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}


class TinyMLP(nn.Module):
    """A user's own model: nothing of it is known to the platform."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Linear(16, 4))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images) * 2.0


class NotExportable(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.fft.fft(images.numpy()).real).reshape(len(images), -1)[:, :4]


@pytest.fixture()
def registry(tmp_path: Path) -> RegistryStore:
    return RegistryStore(tmp_path / "registry.sqlite", LocalStorage(tmp_path / "artifacts"))


def test_a_published_module_serves_its_own_answers_without_its_source(
    registry: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sdk.TASK_ID_VARIABLE, "task-123")
    model = TinyMLP().train()
    version = sdk.publish(
        model,
        name="mine",
        kind="image",
        labels=["a", "b", "c", "d"],
        example_input=torch.rand(4, 1, 8, 8),
        preprocessing=PREPROCESSING,
        metrics={"val_accuracy": 0.5},
        storage=registry.storage,
        registry=registry,
    )
    assert version.template == "user-code" and version.metrics == {"val_accuracy": 0.5}
    assert version.lineage["method"] == "sdk" and version.lineage["task_id"] == "task-123"
    assert version.lineage["model_class"] == "TinyMLP"
    assert model.training  # the caller's model is left as it was (mode, device): training may go on

    runner = ModelRunner(load_package(registry.storage.get_bytes(version.package_key)))
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    with torch.inference_mode():
        expected = torch.softmax(model(kind_for(runner.config).to_tensor(images)), dim=1).numpy()
    np.testing.assert_allclose(runner.predict_proba(images), expected, atol=1e-4)


@pytest.mark.parametrize(
    "model, example, fragment",
    [
        (NotExportable(), torch.rand(2, 1, 8, 8), "does not export to ONNX|does not reproduce"),
        (TinyMLP(), torch.rand(8, 8), "must be a batch|input"),
        (nn.Flatten(), torch.rand(2, 1, 8, 8), "classes|labels"),
    ],
)
def test_models_that_cannot_be_published_say_why_and_store_nothing(
    registry: RegistryStore, model: nn.Module, example: torch.Tensor, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        sdk.publish(
            model,
            name="mine",
            kind="image",
            labels=["a", "b", "c", "d"],
            example_input=example,
            storage=registry.storage,
            registry=registry,
        )
    assert registry.list_models() == []
