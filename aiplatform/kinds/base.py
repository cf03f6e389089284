"""What a kind of model input is: one object per kind owns everything that differs between kinds.

A model's kind is chosen once, from ``model.json``'s ``input.type`` (``aiplatform.kinds.kind_for``),
and bound to that model's input spec and preprocessing. Everything else in the platform (gateway,
model servers, training, evaluation, drift, dataset profiles) asks the kind and never switches on
the type itself. The stages of a prediction follow LitServe's names: decode a request into inputs
(``from_json``, ``from_upload``, ``from_v2``), send them through the batcher (``classify``), turn a
batch into a tensor on the model server (``to_tensor``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Optional

import numpy as np
import pyarrow as pa
import torch

from aiplatform.kinds.limits import RequestLimits

Submit = Callable[[np.ndarray], Awaitable[dict[str, Any]]]
"""Sends one model input (one row of a batch) to the model servers; answers its prediction."""


class ManyInputs(list):  # type: ignore[type-arg]
    """What ``from_json``/``from_upload`` give when one request holds many inputs (a CSV of table
    rows): the gateway classifies each and answers them all in one response."""


BatchConverter = Callable[[dict[str, np.ndarray]], tuple[torch.Tensor, torch.Tensor]]
"""A dataset batch -> (model inputs, int64 labels)."""


class ModelKind(ABC):
    """One kind of model input (``image``, ``text``), bound to one model's ``input`` and
    ``preprocessing`` blocks."""

    name: ClassVar[str]
    """``model.json``'s ``input.type`` and a dataset manifest's ``kind``."""
    feature_names: ClassVar[tuple[str, ...]]
    """The drift features recorded with every prediction and computed over datasets alike."""
    dataset_columns: ClassVar[tuple[str, ...]]
    """The columns of this kind's dataset splits."""

    def __init__(self, input_spec: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> None:
        self.input_spec = dict(input_spec)
        self.preprocessing = dict(preprocessing)

    # -- serving: a request -> model inputs -------------------------------------------------------
    @abstractmethod
    def from_json(self, payload: Any, limits: RequestLimits) -> Any:
        """One input from a v1 JSON body (parsed)."""

    @abstractmethod
    def from_upload(self, filename: Optional[str], data: bytes, limits: RequestLimits) -> Any:
        """One input from an uploaded file (or :class:`ManyInputs`)."""

    @abstractmethod
    def from_v2(self, body: Any, limits: RequestLimits) -> list[Any]:
        """The inputs of an Open Inference Protocol infer request (parsed JSON)."""

    @abstractmethod
    def v2_inputs(self) -> list[dict[str, Any]]:
        """The ``inputs`` of the model's Open Inference Protocol metadata."""

    def v2_parameters(self) -> dict[str, Any]:
        """What the model's Open Inference Protocol metadata adds in ``parameters`` (nothing by default)."""
        return {}

    @abstractmethod
    async def classify(self, item: Any, submit: Submit, labels: list[str],
                       max_chunks: int) -> tuple[dict[str, Any], dict[str, float]]:
        """One input through the model servers (``submit`` per model input): its answer and its
        drift features. ``max_chunks`` bounds how many model inputs one input may become."""

    # -- the model server -------------------------------------------------------------------------
    @abstractmethod
    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """A stacked batch of model inputs -> the tensor the network takes."""

    @abstractmethod
    def sample_batch(self) -> np.ndarray:
        """A batch of one model input of the served shape: the model server times a forward pass
        on it when it loads a model (to choose its threads) and so warms the model up."""

    # -- training and evaluation ------------------------------------------------------------------
    @abstractmethod
    def batch_converter(self) -> BatchConverter:
        """Dataset batches -> (model inputs, labels), exactly as serving prepares them."""

    # -- drift ------------------------------------------------------------------------------------
    @abstractmethod
    def reference_features(self, table: pa.Table, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        """The drift features of every row of a dataset split (its version's ``manifest`` says how
        rows are stored), one array per feature."""

    # -- datasets of this kind (no model needed) -------------------------------------------------
    @staticmethod
    @abstractmethod
    def profile_split(table: pa.Table, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """What a dataset profile shows of one split beyond rows and classes, and one key per row
        (equal keys: duplicate inputs) for finding duplicates and leakage between splits."""

    @staticmethod
    @abstractmethod
    def sample_previews(table: pa.Table, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """What a person sees of each row of a dataset split (an image as a PNG data URL, a text,
        a row's values by column), in the table's order."""

    @staticmethod
    @abstractmethod
    def profile_extra(manifest: dict[str, Any], splits: list[str]) -> dict[str, Any]:
        """Whole-version additions to a dataset profile (from the build's manifest)."""
