"""Embeddings a frozen encoder has computed, kept for the rest of a training run.

A frozen encoder (MiniLM with ``train_encoder`` off: no gradients, no dropout) gives a row of
token ids the same embedding every epoch, and computing it was nearly all of an epoch's time on
CPU: only the small head learns. The training loop gives the model a memo
(``EncoderClassifier.remember_embeddings``), so that from the second epoch on, and for the
validation split every epoch, the encoder runs only for rows it has not seen. The model servers
never get one: their inputs are not the same rows again and again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MAX_REMEMBERED_ROWS = 100_000
"""Rows a worker remembers (MiniLM: 384 floats, ~1.5 KiB, plus the row's key and the tensor's own
overhead: ~2.3 KiB each, ~230 MiB in all); past it the
rows seen first stay and later ones are computed each time (an evicting cache would keep
nothing for long when a shard is larger and arrives in a new order every epoch)."""


class EmbeddingMemo:
    """Each distinct row of token ids' embedding, computed once (up to ``max_rows`` rows)."""

    def __init__(self, max_rows: int = MAX_REMEMBERED_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: dict[bytes, torch.Tensor] = {}
        self.computed = 0
        """Rows the encoder was run for (a repeated row is not computed again)."""

    def __len__(self) -> int:
        return len(self._rows)

    def embed(self, token_ids: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The embeddings of ``token_ids``' rows: remembered ones as they were, the others by
        ``encode`` (called once, on those rows only) and remembered while there is room."""
        keys = [row.tobytes() for row in token_ids.cpu().numpy()]
        fresh: dict[bytes, torch.Tensor] = {}
        missing = [i for i, key in enumerate(keys) if key not in self._rows]
        if missing:
            computed = encode(token_ids[torch.tensor(missing, device=token_ids.device)])
            self.computed += len(missing)
            for i, embedding in zip(missing, computed, strict=True):
                fresh[keys[i]] = embedding
                if len(self._rows) < self.max_rows:
                    self._rows[keys[i]] = embedding.clone()  # not a view keeping the whole batch
        return torch.stack([self._rows[key] if key in self._rows else fresh[key] for key in keys])
