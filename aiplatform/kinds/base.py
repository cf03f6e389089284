"""What a kind of model input is, in two halves: what a loaded model does with its inputs
(:class:`ModelKind`) and what the kind's datasets do (:class:`DatasetKind`).

A model's kind is chosen once, from ``model.json``'s ``input.type`` (``aiplatform.kinds.kind_for``),
and bound to that model's input spec and preprocessing. The stages of a prediction follow LitServe's
names: decode a request into inputs (``from_json``, ``from_upload``, ``from_v2``), send them through
the batcher (``classify``), turn a batch into a tensor on the model server (``to_tensor``). A
dataset's kind (its manifest's ``kind``, ``aiplatform.kinds.kind_class``) needs no model: profiles
and their charts, previews of rows and of kept request inputs, the batches user code trains on.
Everything else in the platform asks the kind and never switches on the type itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from aiplatform.errors import InvalidArgument
from aiplatform.limits import RequestLimits

if TYPE_CHECKING:  # torch is imported where tensors are made (model servers, training workers)
    import torch

Submit = Callable[[np.ndarray], Awaitable[dict[str, Any]]]
"""Sends one model input (one row of a batch) to the model servers; answers its prediction."""


class ManyInputs(list):  # type: ignore[type-arg]
    """What ``from_json``/``from_upload`` give when one request holds many inputs (a CSV of table
    rows): the gateway classifies each and answers them all in one response."""


BatchConverter = Callable[[dict[str, np.ndarray]], "tuple[torch.Tensor, torch.Tensor]"]
"""A dataset batch -> (model inputs, int64 labels)."""
InputConverter = Callable[[dict[str, np.ndarray]], Any]
"""A dataset batch -> the inputs user code trains on (``aiplatform.sdk.batches``)."""


@dataclass(frozen=True)
class BarChart:
    """One bar chart of a dataset profile, as data (``aiplatform.analysis`` draws it)."""

    name: str
    """The chart's file name without its suffix."""
    title: str
    values: list[float]
    labels: list[str]


@dataclass(frozen=True)
class ImageChart:
    """A float image in [0, 1] (H, W) or (H, W, C) shown as a grayscale PNG (a mean image)."""

    name: str
    pixels: np.ndarray


Chart = BarChart | ImageChart


@dataclass(frozen=True)
class ImportedInput:
    """What an imported graph's input makes of a model of this kind."""

    spec: dict[str, Any]
    """``model.json``'s ``input`` block."""
    preprocessing: dict[str, Any]
    layout: str
    """How the graph takes a batch (``NCHW``, ``NHWC``, ``NF``)."""
    row_values: int
    """Values in one model input (the served request size is checked with it)."""
    row_shape: str
    """One model input's shape, as messages name it (``28x28x1``)."""


class DatasetKind(ABC):
    """What the datasets of one kind do, no model needed: every method is a class's own."""

    name: ClassVar[str]
    """A dataset manifest's ``kind`` (and its models' ``input.type``)."""
    dataset_columns: ClassVar[tuple[str, ...]]
    """The columns of this kind's dataset splits."""

    @staticmethod
    @abstractmethod
    def profile_split(table: pa.Table, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """What a dataset profile shows of one split beyond rows and classes, and one key per row
        (equal keys: duplicate inputs) for finding duplicates and leakage between splits."""

    @staticmethod
    @abstractmethod
    def profile_extra(manifest: dict[str, Any], splits: list[str]) -> dict[str, Any]:
        """Whole-version additions to a dataset profile (from the build's manifest)."""

    @staticmethod
    @abstractmethod
    def profile_charts(profile: dict[str, Any]) -> list[Chart]:
        """The charts this kind adds to a dataset profile (the class balance is everyone's)."""

    @staticmethod
    @abstractmethod
    def sample_previews(table: pa.Table, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """What a person sees of each row of a dataset split (an image as a PNG data URL, a text,
        a row's values by column), in the table's order."""

    @staticmethod
    def input_preview(data: bytes, size: int) -> dict[str, Any] | None:
        """What a person sees of a kept request input (its raw bytes) when they are this kind's
        own form (an image's thumbnail, at most ``size`` pixels a side); None leaves it to the
        platform's text snippet."""
        return None

    @staticmethod
    def worker_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
        """What a user-code worker needs of the dataset's manifest to read its rows (JSON-ready)."""
        return {}

    @staticmethod
    @abstractmethod
    def user_batch_converter(inputs: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> InputConverter:
        """Dataset batches -> what user code trains on (``aiplatform.sdk.batches``); ``inputs``:
        :meth:`worker_inputs`, ``preprocessing``: the user's (checked here, before any batch)."""


class ModelKind(ABC):
    """One kind of model input, bound to one model's ``input`` and ``preprocessing`` blocks: what
    serving, training and evaluation do with that model's inputs."""

    name: ClassVar[str]
    """``model.json``'s ``input.type`` and a dataset manifest's ``kind``."""
    datasets: ClassVar[type[DatasetKind]]
    """What datasets of this kind do."""
    feature_names: ClassVar[tuple[str, ...]]
    """The drift features recorded with every prediction and computed over datasets alike."""
    importable: ClassVar[bool] = False
    """Whether a graph trained elsewhere can take this kind's inputs as they are decoded."""

    def __init__(self, input_spec: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> None:
        self.input_spec = dict(input_spec)
        self.preprocessing = dict(preprocessing)

    # -- what clients send (the UI and the CLI read it through the API) --------------------------
    @classmethod
    @abstractmethod
    def request_shape(cls) -> dict[str, Any]:
        """How a request to a model of this kind looks: ``upload`` (file name endings it takes),
        ``json_keys`` (a JSON body holding one of them is this kind's), ``paste_key`` (pasted
        text is sent as ``{paste_key: text}``; null: pasted as JSON), ``paste_hint``, and for an
        importable kind the ``import_hint`` of its preprocessing."""

    # -- a graph trained elsewhere ---------------------------------------------------------------
    @classmethod
    def import_input(cls, graph_input: dict[str, Any], given: dict[str, Any]) -> ImportedInput:
        """The input spec and preprocessing of an imported graph whose (first) input is
        ``graph_input`` (name, datatype, shape); ``given``: the caller's preprocessing."""
        raise InvalidArgument(f"Models of kind {cls.name!r} cannot be imported from ONNX")

    # -- serving: a request -> model inputs -------------------------------------------------------
    @abstractmethod
    def from_json(self, payload: Any, limits: RequestLimits) -> Any:
        """One input from a v1 JSON body (parsed)."""

    @abstractmethod
    def from_upload(self, filename: str | None, data: bytes, limits: RequestLimits) -> Any:
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
    async def classify(
        self, item: Any, submit: Submit, labels: list[str], max_chunks: int
    ) -> tuple[dict[str, Any], dict[str, float]]:
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

    @abstractmethod
    def smoke_inputs(self, rows: int) -> np.ndarray:
        """``rows`` model inputs of the served shape, varied where the kind allows (an import
        tries the graph on them); ``rows`` seeds them, so a try can be repeated."""

    # -- training and evaluation ------------------------------------------------------------------
    @abstractmethod
    def batch_converter(self) -> BatchConverter:
        """Dataset batches -> (model inputs, labels), exactly as serving prepares them."""

    # -- drift ------------------------------------------------------------------------------------
    @abstractmethod
    def reference_features(self, table: pa.Table, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        """The drift features of every row of a dataset split (its version's ``manifest`` says how
        rows are stored), one array per feature, as this model's inputs would give them."""
