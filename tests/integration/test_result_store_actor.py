"""The result-store actor and the batching writer on the session's Ray."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import ray

from aiplatform.results import PredictionRecord, ResultsClient, ResultWriter
from aiplatform.settings import Settings


def test_writer_batches_survive_an_actor_restart_without_loss_or_duplicates(
    ray_session: None, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, ray_namespace=f"res-{uuid.uuid4().hex[:8]}")
    client = ResultsClient.connect(settings)
    writer = ResultWriter(client.handle, flush_interval_s=0.01)
    for i in range(600):
        writer.record(PredictionRecord(id=f"r{i}", model="m", version=1 + i % 2,
                                       input_digest="d", output={"label": "1"}, latency_ms=1.0))
        if i == 300:
            ray.kill(client.handle, no_restart=False)
        if i % 50 == 0:
            time.sleep(0.01)
    assert writer.flush(timeout_s=60)
    assert client.count("m") == 600
    assert client.get("r599").version == 2
    assert len(client.query(model="m", version=1, limit=1000)) == 300
    writer.close()
    ray.kill(client.handle, no_restart=True)
