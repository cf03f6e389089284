"""Retention: results move to parquet in (real, local) storage and are read back from both places;
a process killed at any step of a move leaves every row in exactly one place."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from aiplatform.errors import InvalidArgument
from aiplatform.results import PredictionRecord
from aiplatform.results.archive import DAY_S, RetainedResultStore, RetentionPolicy, read_archived
from aiplatform.results.export import recent_records, result_tables, stream
from aiplatform.storage import LocalStorage

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def record(i: int, model: str = "m", at: float = START, version: int = 1) -> PredictionRecord:
    return PredictionRecord(
        id=f"req-{model}-{i:05d}",
        model=model,
        version=version,
        input_digest=f"sha-{i}",
        output={"label": str(i % 3), "probabilities": [0.5, 0.25, 0.25]},
        latency_ms=2.0,
        created_at=at,
        features={"mean": i / 10},
        client_id=f"c{i}" if i % 2 else None,
    )


def open_store(tmp_path: Path, policy: RetentionPolicy = RetentionPolicy()) -> RetainedResultStore:
    return RetainedResultStore(tmp_path / "results.sqlite", LocalStorage(tmp_path / "artifacts"), policy)


def places(store: RetainedResultStore) -> tuple[list[str], list[str]]:
    """Ids in the live table, and in committed archive files."""
    live = [r.id for r in store.scan()]
    archived = [i for move in store.moves() for i in read_archived(store.archive.storage, move)["id"].to_pylist()]
    return live, archived


def three_days(store: RetainedResultStore) -> list[str]:
    """Two models, 30 results a day each for three days."""
    batch = [
        record(day * 30 + i, model, START + day * DAY_S + i * 60)
        for model in ("a", "b")
        for day in range(3)
        for i in range(30)
    ]
    store.record_batch(batch)
    return sorted(r.id for r in batch)


def test_results_older_than_the_age_move_to_day_partitions_and_nothing_else_does(tmp_path: Path) -> None:
    store = open_store(tmp_path, RetentionPolicy(max_age_s=DAY_S))
    ids = three_days(store)
    now = START + 2 * DAY_S + 630  # a day ago: day 1's first 10.5 minutes
    moved = store.retain(now=now)
    live, archived = places(store)
    assert moved == 2 * (30 + 11)
    assert sorted(live + archived) == ids and not set(live) & set(archived)
    keys = sorted(move["key"] for move in store.moves())
    assert [k.split("/")[2:4] for k in keys] == [
        ["model=a", "day=2026-01-01"],
        ["model=a", "day=2026-01-02"],
        ["model=b", "day=2026-01-01"],
        ["model=b", "day=2026-01-02"],
    ]
    assert min(r.created_at for r in store.scan()) >= now - DAY_S
    assert store.retain(now=now) == 0  # nothing more is due
    assert not store.moves(state="pending")


def test_the_newest_rows_per_model_stay_live(tmp_path: Path) -> None:
    store = open_store(tmp_path, RetentionPolicy(max_rows_per_model=25))
    store.record_batch(
        [record(i, "big", START + i) for i in range(40)] + [record(i, "small", START + i) for i in range(5)]
    )
    store.archive.batch_rows = 4  # several files for one day
    assert store.retain() == 15
    assert [r.id for r in store.query(model="big", limit=1000)][-1] == "req-big-00015"
    assert store.count("big") == 25 and store.count("small") == 5
    assert len(store.moves(model="big")) == 4


def test_an_export_reads_both_places_once_in_order_and_filters_by_time(tmp_path: Path) -> None:
    from aiplatform.results.feedback import LabelRequest

    store = open_store(tmp_path, RetentionPolicy(max_age_s=DAY_S))
    three_days(store)
    classes = {("a", 1): ["0", "1", "2"]}
    store.label([LabelRequest(label="2", id="req-a-00000"), LabelRequest(label="1", id="req-a-00089")], classes, "ann")
    store.label([LabelRequest(label="0", id="req-a-00089")], classes, "bob")  # the later label is exported
    store.retain(now=START + 2 * DAY_S + 3600)
    storage = store.archive.storage
    everything = [r for t in result_tables(store, storage, model="a") for r in t.to_pylist()]
    assert [r["id"] for r in everything] == sorted(f"req-a-{i:05d}" for i in range(90))
    assert json.loads(everything[0]["output"])["label"] == "0" and everything[1]["client_id"] == "c1"
    labeled = {r["id"]: (r["true_label"], r["labeled_by"]) for r in everything if r["true_label"] is not None}
    assert labeled == {"req-a-00000": ("2", "ann"), "req-a-00089": ("0", "bob")}  # archived and live
    window = [
        r for t in result_tables(store, storage, since=START + DAY_S, until=START + DAY_S + 600) for r in t.to_pylist()
    ]
    assert len(window) == 2 * 10 and {r["model"] for r in window} == {"a", "b"}

    parquet = b"".join(stream(result_tables(store, storage), "parquet"))
    assert pq.read_table(io.BytesIO(parquet)).num_rows == 180
    csv = b"".join(stream(result_tables(store, storage, model="b"), "csv"))
    table = pa_csv.read_csv(io.BytesIO(csv))
    assert table.num_rows == 90 and table.column_names[:3] == ["id", "model", "version"]
    assert table.column_names[-3:] == ["true_label", "labeled_at", "labeled_by"]
    with pytest.raises(InvalidArgument, match="until .* must be after since"):
        next(result_tables(store, storage, since=START + 10, until=START))


def test_no_move_starts_while_an_export_holds_them(tmp_path: Path) -> None:
    store = open_store(tmp_path, RetentionPolicy(max_age_s=DAY_S))
    three_days(store)
    store.hold_moves("reader", 60)
    assert store.retain(now=START + 5 * DAY_S) == 0
    store.release_moves("reader")
    assert store.retain(now=START + 5 * DAY_S) == 180


def test_drift_reads_the_archive_when_the_live_table_holds_too_few(tmp_path: Path) -> None:
    store = open_store(tmp_path, RetentionPolicy(max_rows_per_model=10))
    store.record_batch([record(i, "m", START + i, version=1 + i % 2) for i in range(50)])
    store.retain()
    recent = recent_records(store, store.archive.storage, model="m", limit=30)
    assert [r.id for r in recent] == [f"req-m-{i:05d}" for i in range(49, 19, -1)]
    assert recent[-1].features == {"mean": 2.0} and recent[-1].output["label"] == "2"
    version_2 = recent_records(store, store.archive.storage, model="m", version=2, since=START + 40, limit=100)
    assert [r.id for r in version_2] == [f"req-m-{i:05d}" for i in range(49, 40, -2)]


_CRASHING_MOVE = textwrap.dedent("""
    import os, sys
    from aiplatform.results.archive import RetainedResultStore, RetentionPolicy
    from aiplatform.storage import LocalStorage
    from aiplatform.storage.local import LocalStorage as Local

    root, step = sys.argv[1], sys.argv[2]
    if step == "digest":  # the file written, the process killed before its sha256 is recorded
        write = Local._write_atomic
        def crash_on_digest(self, path, data):
            if "/.sha256/results/archive/" in path:
                os._exit(9)
            write(self, path, data)
        Local._write_atomic = crash_on_digest
    store = RetainedResultStore(root + "/results.sqlite", LocalStorage(root + "/artifacts"), RetentionPolicy())
    store.archive.batch_rows = 7
    store.archive._step_hook = lambda name: os._exit(9) if name == step else None
    store.policy = RetentionPolicy(max_age_s=1.0)
    store.retain(now=float(sys.argv[3]))
    os._exit(0)
""")


@pytest.mark.parametrize("step", ["marked", "digest", "written", "committed"])
def test_a_move_killed_at_any_step_leaves_each_row_in_exactly_one_place(tmp_path: Path, step: str) -> None:
    store = open_store(tmp_path)
    ids = three_days(store)
    store.close()
    killed = subprocess.run(
        [sys.executable, "-c", _CRASHING_MOVE, str(tmp_path), step, str(START + 10 * DAY_S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 9, killed.stderr

    reopened = open_store(tmp_path)  # settles the pending move
    live, archived = places(reopened)
    assert sorted(live + archived) == ids and not set(live) & set(archived)
    assert not reopened.moves(state="pending")
    expected_committed = {"marked": 0, "digest": 0, "written": 1, "committed": 1}[step]
    assert len(reopened.moves()) == expected_committed
    leftovers = [
        p
        for p in (tmp_path / "artifacts").rglob("*.parquet")
        if not any(p.as_posix().endswith(m["key"]) for m in reopened.moves())
    ]
    assert [p for p in leftovers if "/.sha256/" not in p.as_posix()] == []
    reopened.policy = RetentionPolicy(max_age_s=1.0)
    assert reopened.retain(now=START + 10 * DAY_S) == 180 - 7 * expected_committed
    live, archived = places(reopened)
    assert live == [] and sorted(archived) == ids


def test_a_write_storage_refuses_leaves_the_rows_live_and_the_next_run_moves_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path, RetentionPolicy(max_age_s=DAY_S))
    ids = three_days(store)
    storage = store.archive.storage
    real_put = storage.put_bytes

    def refuse(key: str, data: bytes):  # type: ignore[no-untyped-def]
        raise ConnectionError("storage is down")

    monkeypatch.setattr(storage, "put_bytes", refuse)
    with pytest.raises(ConnectionError):
        store.retain(now=START + 5 * DAY_S)
    assert not store.moves(state="pending") and sorted(r.id for r in store.scan()) == ids
    monkeypatch.setattr(storage, "put_bytes", real_put)
    assert store.retain(now=START + 5 * DAY_S) == 180


def test_an_export_that_a_move_overtook_fails_instead_of_ending_short(tmp_path: Path) -> None:
    store = open_store(tmp_path, RetentionPolicy(max_age_s=DAY_S))
    three_days(store)

    class ForgetfulStore:  # a store that lost the export's lease (it restarted)
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(store, name)

        def hold_moves(self, lease: str, seconds: float) -> None:
            pass

    from aiplatform.errors import Unavailable

    tables = result_tables(ForgetfulStore(), store.archive.storage)  # type: ignore[arg-type]
    next(tables)
    store.retain(now=START + 5 * DAY_S)  # every live row moves while the export reads
    with pytest.raises(Unavailable, match="export again"):
        list(tables)
