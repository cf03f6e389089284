"""The ``cnn-classification`` template: a small CNN for image classification (MNIST by default)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiplatform.datasets import AugmentSpec, DatasetManager, DatasetVersion, ImageDatasetSpec
from aiplatform.kinds.framing import measure_framing
from aiplatform.preprocessing import decode_rows, image_preprocessing
from aiplatform.training.loop import classification_loop
from aiplatform.training.template import TrainingTemplate

FRAMING_SAMPLE_ROWS = 2000
"""Training images measured for their framing: the median and mean settle well before this."""


class CnnParams(BaseModel):
    """Parameters of a ``cnn-classification`` run."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("mnist", description="mnist, idx:<uri>, folder:<uri> or parquet:<uri>")
    epochs: int = Field(3, ge=1, le=500)
    batch_size: int = Field(128, ge=1, le=8192)
    learning_rate: float = Field(3e-3, gt=0, le=10, description="peak learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr_schedule: Literal["onecycle", "constant"] = Field(
        "onecycle", description="onecycle: warm up to learning_rate, then anneal to ~0"
    )
    augment: bool = Field(False, description="add one random-affine copy of each training image")
    augment_strength: float = Field(1.0, gt=0, le=5, description="1.0 = 10 deg, 10% shift/scale")
    workers: int = Field(1, ge=1, le=256, description="Ray Train workers")
    gpu: Literal["auto", "on", "off"] = "auto"
    conv_channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1, max_length=5)
    kernel_size: int = Field(3, ge=1, le=9)
    hidden_units: int = Field(128, ge=4, le=8192)
    dropout: float = Field(0.25, ge=0, lt=1)
    image_size: int = Field(28, ge=8, le=512)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(1 / 12, ge=0.01, lt=0.5)
    max_rows: int | None = Field(None, ge=100, description="use only the first N rows of each source split")
    seed: int = Field(0, ge=0)

    @field_validator("conv_channels")
    @classmethod
    def _channels_in_range(cls, value: list[int]) -> list[int]:
        if any(c < 1 or c > 1024 for c in value):
            raise ValueError("each conv channel count must be between 1 and 1024")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset_form(cls, value: str) -> str:
        if not re.fullmatch(r"mnist|(idx|folder|parquet):.+", value, re.DOTALL):
            raise ValueError("use mnist, idx:<uri>, folder:<uri> or parquet:<uri>")
        return value


class CnnClassificationTemplate(TrainingTemplate):
    name = "cnn-classification"
    title = "CNN classification"
    task = "image-classification"
    description = "Image classification with a small convolutional network (MNIST by default)."
    params_model = CnnParams

    def dataset_spec(self, params: CnnParams) -> ImageDatasetSpec:
        return ImageDatasetSpec(
            source=params.dataset,
            image_size=params.image_size,
            channels=params.channels,
            val_fraction=params.val_fraction,
            seed=params.seed,
            max_rows=params.max_rows,
            augment=AugmentSpec.from_strength(params.augment_strength) if params.augment else None,
        )

    def preprocessing(self, params: CnnParams, dataset: DatasetVersion, datasets: DatasetManager) -> dict[str, Any]:
        """Normalisation by the training split's mean and std intensity, and the framing of its
        images (so uploads are brought into it: ``aiplatform.kinds.framing``)."""
        profile = dataset.manifest["profile"]["train"]
        height, width, channels = dataset.image_shape
        block = image_preprocessing(height, width, channels, profile["mean_intensity"], profile["std_intensity"])
        sample = datasets.sample_table(dataset, "train", FRAMING_SAMPLE_ROWS)
        originals = sample.filter(pc.equal(sample["variant"], 0))  # augmented copies are shifted and scaled
        framing = measure_framing(
            decode_rows(originals.column("image").to_numpy(zero_copy_only=False), dataset.image_shape)
        )
        return {**block, "framing": framing} if framing else block

    def input_spec(self, dataset: DatasetVersion, preprocessing: dict[str, Any]) -> dict[str, Any]:
        height, width, channels = dataset.image_shape
        return {
            "type": "image",
            "height": height,
            "width": width,
            "channels": channels,
            "dtype": "uint8",
            "accepts": ["image/png", "image/jpeg", "array"],
        }

    def architecture(self, params: CnnParams, dataset: DatasetVersion, preprocessing: dict[str, Any]) -> dict[str, Any]:
        height, _, channels = dataset.image_shape
        return {
            "type": "cnn",
            "in_channels": channels,
            "image_size": height,
            "num_classes": len(dataset.labels),
            "conv_channels": list(params.conv_channels),
            "kernel_size": params.kernel_size,
            "hidden_units": params.hidden_units,
            "dropout": params.dropout,
        }

    def train_loop(self) -> Callable[[dict[str, Any]], Any]:
        return classification_loop

    def default_model_name(self, params: CnnParams) -> str:
        return f"{ImageDatasetSpec(source=params.dataset).dataset_name}-cnn"[:63]
