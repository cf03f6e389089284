"""XGBoost boosters in packages: stored in XGBoost's own JSON model format, never a pickle.

A package whose architecture is ``{"type": "xgboost", "num_features": F, "num_classes": C}``
holds ``model.xgb.json`` (what ``Booster.save_model("*.json")`` writes: trees and parameters as
data) in place of ``weights.safetensors``. Loading parses that JSON with XGBoost itself, so no
code of the producer runs; the booster must have the features and classes ``model.json`` says.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

from aiplatform.errors import IntegrityError, InvalidArgument

XGBOOST_FILE = "model.xgb.json"
XGBOOST_ARCHITECTURE = "xgboost"
PROBABILITY_OBJECTIVES = frozenset({"multi:softprob", "binary:logistic"})
"""Objectives whose predictions are class probabilities (``multi:softmax`` gives class ids,
``binary:logitraw`` and regressions raw scores: refused)."""


def booster_from_json(data: bytes, architecture: dict[str, Any]) -> Any:
    """A booster from its JSON model, once it is known to be one with the architecture's features
    and classes; :class:`InvalidArgument` says what is wrong otherwise."""
    import xgboost

    try:
        json.loads(data)  # UBJSON and the old binary format are refused here: only JSON is data-only
    except ValueError:
        raise InvalidArgument("The XGBoost model must be in XGBoost's JSON format (save_model('model.json'))") from None
    try:
        booster = xgboost.Booster()
        booster.load_model(bytearray(data))
    except (ValueError, xgboost.core.XGBoostError) as exc:
        raise InvalidArgument(f"The XGBoost model does not load: {str(exc).splitlines()[0][:300]}") from None
    try:
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    except (ValueError, KeyError, TypeError):
        objective = None
    if objective not in PROBABILITY_OBJECTIVES:
        raise InvalidArgument(
            f"The XGBoost model's objective is {objective!r}; a classifier here gives class "
            f"probabilities: {sorted(PROBABILITY_OBJECTIVES)}"
        )
    features, classes = int(architecture["num_features"]), int(architecture["num_classes"])
    if booster.num_features() != features:
        raise InvalidArgument(f"The XGBoost model takes {booster.num_features()} features; model.json says {features}")
    probe = booster.inplace_predict(np.zeros((1, features), dtype=np.float32))
    if _as_probabilities(np.asarray(probe)).shape != (1, classes):
        raise InvalidArgument(
            f"The XGBoost model does not give {classes} class probabilities "
            f"(its output has shape {list(np.asarray(probe).shape)})"
        )
    return booster


class BoosterModule(nn.Module):
    """A booster behind ``nn.Module``'s call, so the model server batches and answers for it as for
    any network: float (N, features) in (NaN: missing), (N, classes) log-probabilities out."""

    def __init__(self, booster: Any) -> None:
        super().__init__()
        self.booster = booster
        self.booster.set_param({"nthread": torch.get_num_threads()})

    def use_threads(self, threads: int) -> None:
        self.booster.set_param({"nthread": threads})

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        probabilities = _as_probabilities(np.asarray(self.booster.inplace_predict(array)))
        return torch.log(torch.from_numpy(probabilities.astype(np.float32)).clamp_min(1e-12))


def load_booster(data: bytes, architecture: dict[str, Any]) -> BoosterModule:
    """The module of a stored booster (its package already verified)."""
    try:
        return BoosterModule(booster_from_json(data, architecture))
    except (InvalidArgument, KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"Package {XGBOOST_FILE} cannot be loaded: {exc}") from None


def _as_probabilities(output: np.ndarray) -> np.ndarray:
    """(N, C) probabilities from a ``multi:softprob`` (N, C) or a binary objective's (N,) output."""
    if output.ndim == 1:
        return np.stack([1.0 - output, output], axis=1)
    return output
