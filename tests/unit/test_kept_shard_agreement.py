"""Workers of one training group agree on keeping their shards (``training.kept_shard``): where one
could not keep its own, all stream the next epoch, or the one streaming would wait at Ray Data's
per-epoch barrier for workers that never come. Two real processes over torch's gloo backend."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import numpy as np
import pytest

from aiplatform.training.kept_shard import KeptShard, keep_where_all_kept
from tests.factories import free_port

pytestmark = pytest.mark.unit


class RowsShard:
    """A worker's shard as the loop reads it (``iter_batches`` of numpy columns), of texts whose
    lengths differ between workers: equal rows, unequal bytes."""

    def __init__(self, text_chars: int):
        self.texts = np.array(["x" * text_chars] * 40, dtype=object)

    def iter_batches(self, batch_size: int, batch_format: str, prefetch_batches: int):  # type: ignore[no-untyped-def]
        assert batch_format == "numpy"
        for start in range(0, len(self.texts), batch_size):
            texts = self.texts[start : start + batch_size]
            yield {"text": texts, "label": np.arange(start, start + len(texts))}


def _worker(rank: int, port: int, answers: multiprocessing.Queue) -> None:
    import torch.distributed as dist

    # A bound on every collective: a peer that died fails this one within a minute, not gloo's 30.
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        # Rank 1's texts are too long for the budget; rank 0's fit, and so does each one's labels.
        train = KeptShard(RowsShard(text_chars=10 if rank == 0 else 10_000), max_bytes=100_000)
        val = KeptShard(RowsShard(text_chars=10), max_bytes=100_000)
        for shard in (train, val):
            for _ in shard.chunks(16, seed=rank):
                pass
        before = (train.kept, val.kept)
        keep_where_all_kept([train, val])
        answers.put((rank, before, (train.kept, val.kept)))
    finally:
        dist.destroy_process_group()


def test_a_shard_one_worker_could_not_keep_is_streamed_by_every_worker() -> None:
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    port = free_port()
    workers = [context.Process(target=_worker, args=(rank, port, answers), daemon=True) for rank in (0, 1)]
    got = {}
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            rank, before, after = answers.get(timeout=120)
            got[rank] = (before, after)
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0, f"worker exited with {worker.exitcode}"
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
    # (train kept, val kept) before and after agreeing: rank 1 could not keep its train shard, so
    # rank 0 drops its own; both kept val, so both keep it.
    assert got == {0: ((True, True), (False, True)), 1: ((False, True), (False, True))}
