"""The dataset manager on Ray Data: sources, augmentation, seeded splits, versioned parquet."""

from aiplatform.datasets.manager import DatasetManager, DatasetVersion
from aiplatform.datasets.spec import AugmentSpec, DatasetSpec
from aiplatform.datasets.text_sources import TextDatasetSpec

__all__ = ["AugmentSpec", "DatasetManager", "DatasetSpec", "DatasetVersion", "TextDatasetSpec"]
