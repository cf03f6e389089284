from __future__ import annotations

import time
from pathlib import Path

import pytest

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.results import PredictionRecord, ResultStore


def make_record(i: int, model: str = "m", version: int = 1, at: float | None = None) -> PredictionRecord:
    return PredictionRecord(
        id=f"req-{i}", model=model, version=version, input_digest=f"sha-{i}",
        output={"label": str(i % 10)}, latency_ms=1.5, created_at=at if at is not None else time.time(),
    )


def test_batches_are_stored_once_and_queried(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    assert store.record_batch([make_record(i, at=1000 + i) for i in range(5)]) == 5
    assert store.record_batch([make_record(0, at=1000)]) == 0  # a retried batch is not duplicated
    assert store.get("req-3").output == {"label": "3"}
    assert [r.id for r in store.query(model="m", limit=2)] == ["req-4", "req-3"]
    assert [r.id for r in store.query(since=1003)] == ["req-4", "req-3"]
    assert [r.id for r in store.query(until=1001)] == ["req-0"]
    assert store.count("m") == 5


def test_filters_by_model_and_version(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    store.record_batch([make_record(1, "a", 1), make_record(2, "a", 2), make_record(3, "b", 1)])
    assert [r.id for r in store.query(model="a", version=2)] == ["req-2"]
    assert {r.id for r in store.query(model="a")} == {"req-1", "req-2"}


def test_bad_queries_and_unknown_ids(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    with pytest.raises(NotFound, match="Result 'nope' not found"):
        store.get("nope")
    with pytest.raises(InvalidArgument, match="limit must be between 1 and 1000"):
        store.query(limit=0)
    with pytest.raises(InvalidArgument, match="version filter needs a model"):
        store.query(version=1)


def test_results_survive_reopening(tmp_path: Path) -> None:
    ResultStore(tmp_path / "r.sqlite").record_batch([make_record(1)])
    assert ResultStore(tmp_path / "r.sqlite").get("req-1").model == "m"
