"""A table's rows as the datasets store them: each row's features as float32 bytes.

Apart from the model kinds (the table kind uses it too) so that a boosting worker
decodes its shard without importing them (``aiplatform.training.boosting``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def decode_features(column: Sequence[bytes], width: int) -> np.ndarray:
    """A dataset's ``features`` column (float32 bytes per row) -> (N, width) float32."""
    if len(column) == 0:
        return np.zeros((0, width), dtype=np.float32)
    return np.frombuffer(b"".join(column), dtype=np.float32).reshape(len(column), width)
