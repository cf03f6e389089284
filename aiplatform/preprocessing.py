"""Preprocessing shared by training, evaluation and serving, so all see identical tensors (each
model kind in ``aiplatform.kinds`` picks what it needs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from aiplatform.text import TextTokenizer

if TYPE_CHECKING:  # torch is imported where tensors are made (model servers, training workers)
    import torch


def image_preprocessing(height: int, width: int, channels: int, mean: float, std: float) -> dict[str, Any]:
    """The ``preprocessing`` block of a ``model.json`` for an image model."""
    return {
        "resize": [height, width],
        "color_mode": "L" if channels == 1 else "RGB",
        "scale": 1 / 255,
        "mean": [round(mean, 6)] * channels,
        "std": [round(max(std, 1e-6), 6)] * channels,
    }


def images_to_tensor(images: np.ndarray, preprocessing: dict[str, Any]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    tensor = tensor * float(preprocessing["scale"])
    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (tensor - mean) / std


def batch_to_tensors(
    batch: dict[str, np.ndarray], shape: tuple[int, int, int], preprocessing: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset batch (``image`` bytes, ``label``) -> (normalised images, int64 labels)."""
    import torch

    images = images_to_tensor(decode_rows(batch["image"], shape), preprocessing)
    return images, torch.from_numpy(np.array(batch["label"], dtype=np.int64))


def decode_rows(image_bytes: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Raw image bytes from a dataset column -> uint8 (N, H, W, C)."""
    # bytearray: a writable buffer, so torch.from_numpy needs no extra copy and does not warn.
    buffer = bytearray(b"".join(image_bytes))
    return np.frombuffer(buffer, dtype=np.uint8).reshape(len(image_bytes), *shape)


def text_preprocessing(tokenizer: TextTokenizer) -> dict[str, Any]:
    """The ``preprocessing`` block of a ``model.json`` for a text model: the tokenizer's rules
    and vocabulary."""
    return {"type": "text", "tokenizer": tokenizer.to_config()}
