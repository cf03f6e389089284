"""Model kinds: one module per kind of input (``image``, ``text``, ``tabular``) holds both halves of
it: a :class:`ModelKind` (what a loaded model does: decoding requests, preprocessing and batching,
the v2 metadata of its inputs, drift features, an import's input spec and smoke inputs, the
request shapes clients send) and a :class:`DatasetKind` (what its datasets do: profiles and
charts, previews of rows and of kept inputs, the batches user code trains on).

``kind_for(config)`` picks a model's kind once from ``model.json`` (or any mapping with ``input``
and ``preprocessing``); ``kind_class(name)`` gives a kind's datasets by name (a dataset manifest's
``kind``); ``model_kind_class(name)`` a model kind by name, before any model exists (an import).
Adding a kind is one module with the two subclasses and one line in ``KINDS``; the kind contract
test (``tests/unit/test_kind_contract.py``) then runs on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiplatform.errors import InvalidArgument
from aiplatform.kinds.base import DatasetKind, ManyInputs, ModelKind
from aiplatform.kinds.image import ImageKind
from aiplatform.kinds.tabular import TabularKind
from aiplatform.kinds.text import TextKind
from aiplatform.packaging.config import ModelConfig

KINDS: dict[str, type[ModelKind]] = {kind.name: kind for kind in (ImageKind, TextKind, TabularKind)}

__all__ = [
    "KINDS",
    "DatasetKind",
    "ImageKind",
    "ManyInputs",
    "ModelKind",
    "TabularKind",
    "TextKind",
    "importable_kinds",
    "kind_class",
    "kind_for",
    "model_kind_class",
]


def model_kind_class(name: str) -> type[ModelKind]:
    """The model kind called ``name``; InvalidArgument names the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidArgument(f"Unknown kind of model input {name!r}; known: {sorted(KINDS)}") from None


def kind_class(name: str) -> type[DatasetKind]:
    """What datasets of the kind called ``name`` do (a dataset manifest's ``kind``)."""
    return model_kind_class(name).datasets


def importable_kinds() -> list[str]:
    """The kinds whose models can be imported from an ONNX file."""
    return [name for name, kind in KINDS.items() if kind.importable]


def kind_for(config: ModelConfig | Mapping[str, Any]) -> ModelKind:
    """The kind of a model, bound to its ``input`` and ``preprocessing`` blocks."""
    if isinstance(config, ModelConfig):
        input_spec, preprocessing = config.input, config.preprocessing
    else:
        input_spec, preprocessing = config["input"], config.get("preprocessing") or {}
    return model_kind_class(str(input_spec.get("type")))(input_spec, preprocessing)
