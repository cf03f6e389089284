"""``tiny-digits``: a small, fast digit classifier with its own defaults and model name.

It reuses the platform's CNN building blocks; a template may as well build everything itself.
"""

from __future__ import annotations

from pydantic import Field

from aiplatform.training.cnn import CnnClassificationTemplate, CnnParams


class TinyDigitsParams(CnnParams):
    epochs: int = Field(1, ge=1, le=3)
    max_rows: int = Field(600, ge=100, le=5000)
    batch_size: int = 64
    conv_channels: list[int] = Field(default_factory=lambda: [4])
    hidden_units: int = 16


class TinyDigitsTemplate(CnnClassificationTemplate):
    name = "tiny-digits"
    title = "Tiny digits (plugin)"
    description = "A few hundred MNIST digits, one small convolution: a template installed as a package."
    params_model = TinyDigitsParams

    def default_model_name(self, params: TinyDigitsParams) -> str:
        return "tiny-digits"
