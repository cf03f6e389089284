"""What a finished training run hands to the model manager, whichever trainer produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from aiplatform.datasets import DatasetVersion


@dataclass
class TrainingOutcome:
    """What a finished run hands to the model manager."""

    template: str
    params: dict[str, Any]
    dataset: DatasetVersion
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    state_dict: dict[str, torch.Tensor] | None
    """The network's weights; None when the model is a serialized file (``model_file``)."""
    history: list[dict[str, float]]
    test_metrics: dict[str, Any]
    """Plain numbers (test_accuracy, ...) and the nested ``test_evaluation`` (evaluation.py)."""
    run_name: str
    checkpoint_uri: str
    used_gpu: bool
    timings: dict[str, float] = field(default_factory=dict)
    model_file: bytes | None = None
    """The model as its own runtime stores it (an XGBoost booster's JSON), for architectures whose
    package holds a serialized model instead of weights."""
