from __future__ import annotations

import time
from pathlib import Path

import pytest

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.results import PredictionRecord, ResultStore
from aiplatform.results.store import next_cursor


def make_record(i: int, model: str = "m", version: int = 1, at: float | None = None) -> PredictionRecord:
    return PredictionRecord(
        id=f"req-{i}",
        model=model,
        version=version,
        input_digest=f"sha-{i}",
        output={"label": str(i % 10)},
        latency_ms=1.5,
        created_at=at if at is not None else time.time(),
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


def test_filters_by_predicted_label_within_a_page(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    store.record_batch([make_record(i, at=1000 + i) for i in range(30)])  # labels i % 10
    assert [r.id for r in store.query(model="m", label="7")] == ["req-27", "req-17", "req-7"]
    first = store.query(model="m", label="7", limit=2)
    assert [r.id for r in store.query(model="m", label="7", before=next_cursor(first))] == ["req-7"]
    assert store.query(label="nothing") == []


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


def test_pages_follow_their_cursor_and_stay_stable_while_results_arrive(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite")
    store.record_batch([make_record(i, at=1000 + i // 2) for i in range(9)])  # pairs share a timestamp
    first = store.query(model="m", limit=4)
    store.record_batch([make_record(100, at=2000)])  # newer than every page: not in the next ones
    second = store.query(model="m", limit=4, before=next_cursor(first))
    third = store.query(model="m", limit=4, before=next_cursor(second))
    ids = [r.id for r in first + second + third]
    assert ids == [f"req-{i}" for i in (8, 7, 6, 5, 4, 3, 2, 1, 0)] and next_cursor([]) is None
    for bad in ("nope", "1.5", "nan~x", "x" * 300):
        with pytest.raises(InvalidArgument, match="cursor"):
            store.query(before=bad)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"model": "m"},
        {"model": "m", "version": 2},
        {"model": "m", "since": 5.0},
        {"model": "m", "before": "7.0~req-3"},
        {"since": 1.0, "until": 9.0},
    ],
)
def test_every_query_reads_an_index_in_order_without_sorting(tmp_path: Path, filters: dict) -> None:  # type: ignore[type-arg]
    store = ResultStore(tmp_path / "results.sqlite")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.query(limit=50, **filters)
    store._db.set_trace_callback(None)
    select = next(s for s in statements if s.startswith("SELECT * FROM results"))
    plan = " ".join(row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {select}"))
    assert "USING INDEX results_by_" in plan and "TEMP B-TREE" not in plan, plan
    if "before" in filters:  # the cursor bounds the index range: a page far back is no slower to reach
        assert "(created_at,id)<(?,?)" in plan, plan
