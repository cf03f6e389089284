"""A worker's shard of a small split: read through Ray Data in the first epoch, then kept in the
worker's memory and drawn from there in every later one.

Each epoch streamed from Ray Data costs CPU outside the training step: the split coordinator's
executor, object-store fetches, block-to-batch conversion, and the threads doing it interrupt the
step's OpenMP threads. On a two-core machine that is a large share of an epoch. A split small
enough to be cached in the object store (``DatasetManager.streams`` says which) is small enough
to keep raw (undecoded, as stored) in each worker; a shard over ``max_bytes`` (per split and per
worker) is streamed every epoch, as one larger than the object-store cache always is.

Kept rows are drawn in a new order each epoch (the worker's whole shard permuted; each worker
keeps the rows it was dealt in the first epoch). A worker group restarted from a checkpoint reads
its shards through Ray Data again in its first epoch. Workers must agree: one that streams waits
at Ray Data's per-epoch barrier for all the others, so after each epoch every worker forgets its
shard where any one could not keep its own (``keep_where_all_kept``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


class KeptShard:
    """One worker's shard of one split (``ray.train.get_dataset_shard``), kept after one full read."""

    def __init__(self, shard: Any, max_bytes: int):
        self.shard = shard
        self.max_bytes = max_bytes
        self._rows: Batch | None = None

    @property
    def kept(self) -> bool:
        """Whether the next epoch is drawn from memory."""
        return self._rows is not None

    def forget(self) -> None:
        """Stream every epoch from the next one on (another worker could not keep its shard, and
        would not next time either: keeping it again would only copy it each epoch)."""
        self._rows = None
        self.max_bytes = 0

    def chunks(self, rows: int, seed: int | None = None) -> Iterator[Batch]:
        """The shard in chunks of up to ``rows`` rows (numpy columns, as stored): from Ray Data
        until one pass has been kept whole, then from memory, in an order drawn from ``seed`` (the
        stored order when None)."""
        if self._rows is None:
            yield from self._read_and_keep(rows)
            return
        count = len(next(iter(self._rows.values()))) if self._rows else 0
        order = np.random.default_rng(seed).permutation(count) if seed is not None else None
        for start in range(0, count, rows):
            if order is None:
                yield {name: column[start : start + rows] for name, column in self._rows.items()}
            else:
                index = order[start : start + rows]
                yield {name: column[index] for name, column in self._rows.items()}

    def _read_and_keep(self, rows: int) -> Iterator[Batch]:
        parts: list[Batch] | None = [] if self.max_bytes > 0 else None
        size = 0
        for batch in self.shard.iter_batches(batch_size=rows, batch_format="numpy", prefetch_batches=1):
            if parts is not None:
                size += batch_bytes(batch)
                if size > self.max_bytes:
                    parts = None  # streamed every epoch, as a split over the object-store cache is
                else:
                    parts.append(batch)
            yield batch
        # Reached only when the pass was read to its end: a partial one is never kept.
        if parts is not None:
            self._rows = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}


def keep_where_all_kept(shards: list[KeptShard], device: Any = None) -> None:
    """After an epoch, in every worker of a group: a shard stays kept only where every worker
    kept its own (one that streams would wait at Ray Data's per-epoch barrier for the others)."""
    import torch.distributed as dist

    from aiplatform.training.collectives import all_reduce

    everywhere = all_reduce([float(shard.kept) for shard in shards], device, op=dist.ReduceOp.MIN)
    for shard, kept in zip(shards, everywhere, strict=True):
        if shard.kept and not kept:
            shard.forget()


def batch_bytes(batch: Batch) -> int:
    """Memory a batch's columns hold, each object of an object column (bytes, str) included."""
    total = 0
    for column in batch.values():
        total += column.nbytes
        if column.dtype == object:
            total += sum(map(sys.getsizeof, column))
    return total
