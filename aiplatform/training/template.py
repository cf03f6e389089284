"""What a training template is: a typed parameter schema plus how to build the data, model and loop.

Templates are plugins: each is a subclass in its own module, found through the
``aiplatform.templates`` entry-point group (see ``templates``); this base knows none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ValidationError

from aiplatform.errors import InvalidArgument

if TYPE_CHECKING:
    from aiplatform.datasets import DatasetManager, DatasetSpec, DatasetVersion, TextDatasetSpec


def validation_message(error: ValidationError, what: str) -> str:
    """One readable line per problem: ``epochs: Input should be >= 1 (got 0)``."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or what
        got = f" (got {item['input']!r})" if "input" in item and item["type"] != "missing" else ""
        problems.append(f"{where}: {item['msg']}{got}")
    return f"Invalid {what}: " + "; ".join(problems)


class TrainingTemplate(ABC):
    """One kind of training task (``cnn-classification``, ...)."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        """Validate raw parameters against the schema; :class:`InvalidArgument` names each problem."""
        try:
            return self.params_model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidArgument(validation_message(exc, f"parameters for template {self.name!r}")) from exc

    def schema(self) -> dict[str, Any]:
        """JSON schema of the parameters (the UI builds its form from it)."""
        return self.params_model.model_json_schema()

    task: ClassVar[str]
    """``model.json``'s task, e.g. ``image-classification``."""

    @abstractmethod
    def dataset_spec(self, params: Any) -> "DatasetSpec | TextDatasetSpec":
        """The dataset version this run trains on."""

    @abstractmethod
    def preprocessing(self, params: Any, dataset: "DatasetVersion", datasets: "DatasetManager") -> dict[str, Any]:
        """The ``preprocessing`` block of ``model.json`` (fitted on the training split if needed):
        training, evaluation and serving all turn raw inputs into tensors with it."""

    @abstractmethod
    def architecture(self, params: Any, dataset: "DatasetVersion", preprocessing: dict[str, Any]) -> dict[str, Any]:
        """The ``architecture`` block of ``model.json``."""

    @abstractmethod
    def input_spec(self, dataset: "DatasetVersion", preprocessing: dict[str, Any]) -> dict[str, Any]:
        """The ``input`` block of ``model.json``: what a prediction request may carry."""

    @abstractmethod
    def train_loop(self) -> Callable[[dict[str, Any]], Any]:
        """The Ray Train per-worker loop."""

    @abstractmethod
    def default_model_name(self, params: Any) -> str:
        """The registry name used when the caller gives none."""
