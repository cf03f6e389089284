"""Reductions over a Ray Train worker group's workers (torch.distributed), for the loop's metrics
and for the workers' agreement on keeping their shards (``kept_shard``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def all_reduce(values: list[float], device: Any = None, op: Any = None) -> list[float]:
    """Sum (or ``op``) over workers; a no-op for a single worker."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op if op is not None else dist.ReduceOp.SUM)
    return tensor.tolist()
