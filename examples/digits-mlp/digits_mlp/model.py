"""The network: nothing platform-specific, as a team would write it anyway."""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """Pixels -> hidden ReLU layer -> class scores (logits)."""

    def __init__(self, pixels: int = 784, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
