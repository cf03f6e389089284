"""The result-store actor and the batching writer on the session's Ray."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from aiplatform.results import PredictionRecord, ResultClient, ResultWriter
from aiplatform.settings import Settings
from tests.factories import platform_settings


@pytest.fixture()
def settings(ray_session: None, tmp_path: Path) -> Iterator[Settings]:
    with platform_settings(tmp_path, "res") as settings:
        yield settings


def test_writer_batches_survive_an_actor_restart_without_loss_or_duplicates(settings: Settings) -> None:
    client = ResultClient.connect(settings)
    writer = ResultWriter(client.handle, flush_interval_s=0.01)
    for i in range(600):
        writer.record(
            PredictionRecord(
                id=f"r{i}", model="m", version=1 + i % 2, input_digest="d", output={"label": "1"}, latency_ms=1.0
            )
        )
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


def test_writer_keeps_raw_inputs_in_storage_when_configured(settings: Settings) -> None:
    import hashlib

    from aiplatform.results import input_key
    from aiplatform.storage import storage_from_settings

    client = ResultClient.connect(settings)
    storage = storage_from_settings(settings)
    touched: list[str] = []

    class CountingStorage:  # the real storage; which keys the writer looks up or writes
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            method = getattr(storage, name)
            return lambda key, *args: (touched.append(key), method(key, *args))[1]

    writer = ResultWriter(client.handle, flush_interval_s=0.01, input_storage=CountingStorage())  # type: ignore[arg-type]
    payloads = [b"first input", b"second input", b"first input"]
    for i, raw in enumerate(payloads):
        digest = hashlib.sha256(raw).hexdigest()
        writer.record(
            PredictionRecord(
                id=f"in{i}",
                model="m",
                version=1,
                input_digest=digest,
                output={"label": "1"},
                latency_ms=1.0,
                input_uri=input_key(digest),
            ),
            raw,
        )
    assert writer.flush(timeout_s=60)
    stored = client.get("in2")
    assert storage.get_bytes(stored.input_uri) == b"first input"
    assert storage.list(input_key("")) == sorted({input_key(hashlib.sha256(p).hexdigest()) for p in payloads})
    # The repeated input is neither looked up nor written again: one exists + one put per distinct input.
    assert sorted(touched) == sorted(2 * [input_key(hashlib.sha256(p).hexdigest()) for p in payloads[:2]])
    writer.close()
    ray.kill(client.handle, no_restart=True)
