"""A training worker keeps a small split's shard after reading it once (``training.kept_shard``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import ray

from aiplatform.training.kept_shard import KeptShard, batch_bytes

ROWS = 300


def rows_dataset() -> ray.data.Dataset:
    return ray.data.from_items(
        [{"image": bytes([row % 251]) * 16, "label": row} for row in range(ROWS)], override_num_blocks=4
    )


def labels(chunks: Iterator[dict[str, np.ndarray]], most_rows: int = 64) -> list[int]:
    seen: list[int] = []
    for chunk in chunks:
        assert 0 < len(chunk["label"]) <= most_rows
        # Each row's columns stay together, whatever the order.
        assert [image[0] for image in chunk["image"]] == [label % 251 for label in chunk["label"]]
        seen.extend(int(label) for label in chunk["label"])
    return seen


def test_a_shard_read_once_is_drawn_from_memory_in_a_new_order_every_epoch(ray_session: None) -> None:
    shard = KeptShard(rows_dataset(), max_bytes=1 << 20)
    assert not shard.kept
    stored = labels(shard.chunks(64, seed=1))
    assert sorted(stored) == list(range(ROWS))
    assert shard.kept
    shard.shard = None  # an epoch that read Ray Data again would fail here

    second, third, second_again = (labels(shard.chunks(64, seed=seed)) for seed in (2, 3, 2))
    assert sorted(second) == sorted(third) == list(range(ROWS))
    assert second != third and second != stored
    assert second == second_again  # the order is the seed's
    assert labels(shard.chunks(64)) == stored  # no seed: as stored


def test_a_shard_over_its_budget_read_in_part_or_not_kept_is_read_from_ray_data_again(ray_session: None) -> None:
    dataset = rows_dataset()
    one_chunk = batch_bytes(next(iter(dataset.iter_batches(batch_size=64, batch_format="numpy"))))
    over_budget = KeptShard(dataset, max_bytes=one_chunk * 2)
    assert sorted(labels(over_budget.chunks(64, seed=1))) == list(range(ROWS))
    assert not over_budget.kept
    assert sorted(labels(over_budget.chunks(64, seed=2))) == list(range(ROWS))

    read_in_part = KeptShard(dataset, max_bytes=1 << 20)
    chunks = read_in_part.chunks(64, seed=1)
    next(chunks)
    chunks.close()  # the epoch stopped (a failure, say) before its end
    assert not read_in_part.kept
    assert sorted(labels(read_in_part.chunks(64, seed=1))) == list(range(ROWS))
    assert read_in_part.kept

    never = KeptShard(dataset, max_bytes=0)
    assert sorted(labels(never.chunks(64))) == list(range(ROWS))
    assert not never.kept

    read_in_part.forget()  # another worker could not keep its shard: all stream, from now on
    for seed in (3, 4):
        assert sorted(labels(read_in_part.chunks(64, seed=seed))) == list(range(ROWS))
        assert not read_in_part.kept


def test_batch_bytes_counts_what_object_columns_hold() -> None:
    images = [b"a" * 100, b"b" * 50]
    texts = ["short", "ü" * 40]
    batch = {
        "image": np.array(images, dtype=object),
        "text": np.array(texts, dtype=object),
        "label": np.array([1, 2], dtype=np.int64),
    }
    held = sum(map(sys.getsizeof, images + texts))
    assert held > 150 + 45  # each object's own header counts, not only its bytes
    assert batch_bytes(batch) == 2 * 8 + 2 * 8 + held + 2 * 8
