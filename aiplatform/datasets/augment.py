"""Seeded random affine augmentation (rotation, shift, scale) in plain torch.

Each variant's parameters come from a hash of (seed, row id, copy index), never from batch
position, so the same spec gives byte-identical images however Ray Data cuts the batches.
"""

from __future__ import annotations

import math

import numpy as np

from aiplatform.datasets.spec import AugmentSpec

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def hash_uniform(seed: int, ids: np.ndarray, stream: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) per id (splitmix64 of seed, id and stream)."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= np.uint64((seed * 0x632BE59BD9B4E019 + stream * 0x85EBCA77C2B2AE63) & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def random_affine(images: np.ndarray, ids: np.ndarray, copy_index: int, spec: AugmentSpec, seed: int) -> np.ndarray:
    """Augment ``images`` (N, H, W, C uint8) with per-row affine transforms; returns uint8."""
    if len(images) == 0:
        return images
    stream = 1000 * (copy_index + 1)
    angle = (hash_uniform(seed, ids, stream) * 2 - 1) * math.radians(spec.rotation_deg)
    scale = 1 + (hash_uniform(seed, ids, stream + 1) * 2 - 1) * spec.scale_frac
    shift_x = (hash_uniform(seed, ids, stream + 2) * 2 - 1) * spec.shift_frac * 2
    shift_y = (hash_uniform(seed, ids, stream + 3) * 2 - 1) * spec.shift_frac * 2
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin, shift_x], axis=1), np.stack([sin, cos, shift_y], axis=1)], axis=1)
    # Imported where it runs (a build's workers): every job's driver imports the dataset manager,
    # and torch is 1.3 s of a table task's start.
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(batch.shape), align_corners=False)
    warped = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
