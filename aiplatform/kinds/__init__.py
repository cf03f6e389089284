"""Model kinds: one object per kind of input (``image``, ``text``, ``tabular``) owns decoding requests,
preprocessing and batching, the v2 metadata of its inputs, drift features and the dataset profile.

``kind_for(config)`` picks a model's kind once from ``model.json`` (or any mapping with ``input``
and ``preprocessing``); ``kind_class(name)`` gives a kind by name (a dataset manifest's ``kind``).
Adding a kind is one module with a :class:`ModelKind` subclass and one line in ``KINDS``.
"""

from __future__ import annotations

from typing import Any, Mapping

from aiplatform.errors import InvalidArgument
from aiplatform.kinds.base import ManyInputs, ModelKind
from aiplatform.kinds.image import ImageKind
from aiplatform.kinds.tabular import TabularKind
from aiplatform.kinds.text import TextKind
from aiplatform.packaging.config import ModelConfig

KINDS: dict[str, type[ModelKind]] = {kind.name: kind for kind in (ImageKind, TextKind, TabularKind)}

__all__ = ["KINDS", "ImageKind", "ManyInputs", "ModelKind", "TabularKind", "TextKind", "kind_class", "kind_for"]


def kind_class(name: str) -> type[ModelKind]:
    """The kind called ``name``; InvalidArgument names the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidArgument(f"Unknown kind of model input {name!r}; known: {sorted(KINDS)}") from None


def kind_for(config: ModelConfig | Mapping[str, Any]) -> ModelKind:
    """The kind of a model, bound to its ``input`` and ``preprocessing`` blocks."""
    if isinstance(config, ModelConfig):
        input_spec, preprocessing = config.input, config.preprocessing
    else:
        input_spec, preprocessing = config["input"], config.get("preprocessing") or {}
    return kind_class(str(input_spec.get("type")))(input_spec, preprocessing)
