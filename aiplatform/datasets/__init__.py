"""The dataset manager on Ray Data: sources, augmentation, seeded splits, versioned parquet.

The names below load on first use (PEP 562), so a module that only needs the source policy or the
specs (the task manager on the head node) does not load Ray Data and torch with the manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiplatform.lazy_names import lazy_names

if TYPE_CHECKING:
    from aiplatform.datasets.manager import DatasetManager, DatasetVersion
    from aiplatform.datasets.spec import AugmentSpec, ImageDatasetSpec
    from aiplatform.datasets.tabular_sources import TabularDatasetSpec
    from aiplatform.datasets.text_sources import TextDatasetSpec

_HOMES = {
    "DatasetManager": "aiplatform.datasets.manager",
    "DatasetVersion": "aiplatform.datasets.manager",
    "AugmentSpec": "aiplatform.datasets.spec",
    "ImageDatasetSpec": "aiplatform.datasets.spec",
    "TextDatasetSpec": "aiplatform.datasets.text_sources",
    "TabularDatasetSpec": "aiplatform.datasets.tabular_sources",
}
__all__ = [
    "AugmentSpec",
    "DatasetManager",
    "DatasetVersion",
    "ImageDatasetSpec",
    "TabularDatasetSpec",
    "TextDatasetSpec",
]


__getattr__ = lazy_names(__name__, _HOMES, globals())
