"""Benchmark: what grows with use. The head-node stores (results, tasks, registry) at 10-100x
today's sizes, with the stores' own classes in-process, as their actors hold them.

    python bench/scale.py [--results 100000,1000000] [--tasks 1000,10000,100000] [--versions 10000]

For each size: the insert rate, then the p50/p99 of every query the API and UI make (200 each,
random arguments). The target is p99 <= 50 ms for each at 10M results and 100k tasks; every
figure is also printed against the same query at the smallest size (1.0x: flat in size).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)

from aiplatform.registry.store import RegistryStore
from aiplatform.results.store import PredictionRecord, ResultStore, new_result_id, next_cursor
from aiplatform.runtime import freeze_startup_heap
from aiplatform.sqlite import transaction
from aiplatform.storage import LocalStorage
from aiplatform.tasks.queue.store import STATES, TaskStore

REPEATS = 200
MODELS = 20
WRITER_BATCH = 512  # what the gateway's result writer sends per call
TARGET_P99_MS = 50.0
RANDOM_IDS = False


def timed(query: Callable[[], Any], repeats: int = REPEATS) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        query()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[int(len(samples) * 0.99) - 1]}


def grow_results(store: ResultStore, start: int, stop: int, now: float) -> float:
    """Rows ``start``..``stop`` (20 models, 3 versions each, one every 10 ms of the last days),
    with ids as the gateway makes them (or uuid4 with ``--random-ids``); rows/s."""
    make_id = (lambda: uuid.uuid4().hex) if RANDOM_IDS else new_result_id
    began = time.perf_counter()
    for first in range(start, stop, WRITER_BATCH):
        batch = [
            PredictionRecord(
                id=make_id(),
                model=f"model-{i % MODELS}",
                version=1 + i % 3,
                input_digest=f"{i:064x}",
                output={"label": str(i % 10), "probabilities": [0.1] * 10},
                latency_ms=3.0,
                created_at=now - (stop - i) * 0.01,
                features={"mean": 0.5},
            )
            for i in range(first, min(first + WRITER_BATCH, stop))
        ]
        store.record_batch(batch)
    return (stop - start) / (time.perf_counter() - began)


def result_queries(store: ResultStore, now: float) -> dict[str, Callable[[], Any]]:
    model = lambda: f"model-{random.randrange(MODELS)}"
    deep = store.query(model="model-0", limit=1000)
    for _ in range(20):  # a cursor 20 pages of 1,000 back
        deep = store.query(model="model-0", before=next_cursor(deep), limit=1000) or deep
    cursor = next_cursor(deep)
    ids = [r.id for r in store.query(limit=1000)] + [r.id for r in deep]
    return {
        "newest page (Inference page)": lambda: store.query(limit=50),
        "a model's newest page": lambda: store.query(model=model(), limit=50),
        "a version's newest page": lambda: store.query(model=model(), version=random.randint(1, 3), limit=50),
        "a page 20,000 results back": lambda: store.query(model="model-0", before=cursor, limit=50),
        "a model's last hour": lambda: store.query(model=model(), since=now - 3600, limit=50),
        "one result by id": lambda: store.get(random.choice(ids)),
        "drift's sample (1,000 newest)": lambda: store.query(model=model(), limit=1000),
        "an export page (1,000 oldest)": lambda: store.scan(model=model(), limit=1000),
        "retention: next due": lambda: store.next_due(now - 30 * 86_400, {}),
    }


def bench_results(sizes: list[int], root: Path) -> list[dict[str, Any]]:
    store = ResultStore(root / "results.sqlite")
    now, rows, out = time.time(), 0, []
    for size in sizes:
        rate = grow_results(store, rows, size, now)
        rows = size
        file_mb = (root / "results.sqlite").stat().st_size / 1e6
        queries = {name: timed(q) for name, q in result_queries(store, now).items()}
        out.append({"rows": size, "insert_rows_per_s": rate, "file_mb": file_mb, "queries": queries})
        print(json.dumps(out[-1]), flush=True)
    return out


def grow_tasks(store: TaskStore, start: int, stop: int) -> float:
    """Tasks ``start``..``stop`` as the queue holds them after a busy year: mostly finished,
    a few queued and running, 10 templates (one of them rare)."""
    began = time.perf_counter()
    now = time.time()
    rows = []
    for i in range(start, stop):
        state = STATES[3 + i % 3] if i % 50 else STATES[1 + i % 2]  # SUCCEEDED/FAILED/CANCELLED; some QUEUED/RUNNING
        template = "rare-template" if i % 100 == 7 else f"template-{i % 9}"
        rows.append(
            (
                uuid.uuid4().hex[:16],
                template,
                json.dumps({"epochs": 1 + i % 5}),
                i % 10,
                state,
                "api",
                0,
                1,
                now - (stop - i),
                now - (stop - i),
            )
        )
    with transaction(store._db) as db:  # bench setup: one transaction (the store commits one task per call)
        db.executemany(
            "INSERT INTO tasks(id, template, params, priority, state, source, max_retries, attempts,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    return (stop - start) / (time.perf_counter() - began)


def task_queries(store: TaskStore) -> dict[str, Callable[[], Any]]:
    page = store.list(limit=100)
    for _ in range(min(50, max(0, store.counts()["total"] // 100 - 2))):
        page = store.list(limit=100, before=page[-1].id)
    deep_before, deep_offset = page[-1].id, 50 * 100
    ids = [t.id for t in page]
    return {
        "newest page (Tasks page)": lambda: store.list(limit=100),
        "per-state counts (every list)": store.counts,
        "SUCCEEDED page": lambda: store.list(states=["SUCCEEDED"], limit=100),
        "QUEUED+RUNNING page": lambda: store.list(states=["QUEUED", "RUNNING"], limit=100),
        "a rare template's page": lambda: store.list(template="rare-template", limit=100),
        "page 50 by cursor": lambda: store.list(limit=100, before=deep_before),
        "page 50 by offset (old way)": lambda: store.list(limit=100, offset=deep_offset),
        "queue order (scheduler)": lambda: store.queued(limit=100),
        "one task by id": lambda: store.get(random.choice(ids)),
    }


def bench_tasks(sizes: list[int], root: Path) -> list[dict[str, Any]]:
    store = TaskStore(root / "tasks.sqlite")
    rows, out = 0, []
    for size in sizes:
        grow_tasks(store, rows, size)
        rows = size
        queries = {name: timed(q) for name, q in task_queries(store).items()}
        out.append({"tasks": size, "queries": queries})
        print(json.dumps(out[-1]), flush=True)
    return out


def bench_registry(versions: int, root: Path) -> dict[str, Any]:
    store = RegistryStore(root / "registry.sqlite", LocalStorage(root / "artifacts"))
    now = time.time()
    with transaction(store._db) as db:  # bench setup, as above
        db.executemany("INSERT INTO models(name, created_at) VALUES (?, ?)", [(f"model-{m}", now) for m in range(100)])
        db.executemany(
            "INSERT INTO versions(name, version, package_key, package_uri, sha256, size, template, metrics, lineage,"
            " created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    "big",
                    v,
                    f"models/big/{v}.zip",
                    f"file:///x/{v}.zip",
                    "0" * 64,
                    1000,
                    "cnn-classification",
                    json.dumps({"accuracy": 0.9}),
                    json.dumps({"task_id": f"t{v}"}),
                    now,
                )
                for v in range(1, versions + 1)
            ]
            + [(f"model-{m}", 1, "k", "u", "0" * 64, 1, "t", "{}", "{}", now) for m in range(100)],
        )
        db.execute("INSERT INTO models(name, created_at) VALUES ('big', ?)", (now,))
        db.executemany(
            "INSERT INTO alias_events(name, alias, version, previous_version, at) VALUES (?,?,?,?,?)",
            [("big", "production", v, v - 1, now) for v in range(1, versions + 1)],
        )
        db.execute(
            "INSERT INTO aliases(name, alias, version, updated_at) VALUES ('big', 'production', ?, ?)", (versions, now)
        )
    queries = {
        "a model's newest 100 versions": lambda: store.list_versions("big", limit=100),
        "100 versions, half-way back": lambda: store.list_versions("big", limit=100, before=versions // 2),
        "every model (Models page)": store.list_models,
        "resolve an alias (router, uncached)": lambda: store.resolve("big", "production"),
        "an alias's last move (rollback)": lambda: store.alias_history("big", "production", limit=1),
        "an alias's whole history": lambda: store.alias_history("big", "production"),
    }
    out = {"versions": versions, "queries": {name: timed(q) for name, q in queries.items()}}
    print(json.dumps(out), flush=True)
    return out


def report(results: list[dict[str, Any]], tasks: list[dict[str, Any]], registry: dict[str, Any]) -> None:
    def table(title: str, size_key: str, runs: list[dict[str, Any]]) -> None:
        print(f"\n{title}")
        base = runs[0]["queries"]
        print("| query | " + " | ".join(f"p99 ms at {r[size_key]:,}" for r in runs) + " | vs smallest |")
        print("| --- | " + " | ".join("---" for _ in runs) + " | --- |")
        for name in base:
            values = [r["queries"][name]["p99_ms"] for r in runs]
            flag = "" if values[-1] <= TARGET_P99_MS else " (over target)"
            print(
                f"| {name} | "
                + " | ".join(f"{v:.2f}" for v in values)
                + f" | {values[-1] / max(base[name]['p99_ms'], 1e-3):.1f}x{flag} |"
            )

    if results:
        table("Result store", "rows", results)
        print(
            "insert rows/s per step: "
            + ", ".join(f"{r['rows']:,}: {r['insert_rows_per_s']:,.0f} ({r['file_mb']:,.0f} MB)" for r in results)
        )
    if tasks:
        table("Task queue", "tasks", tasks)
    if registry:
        table("Registry", "versions", [registry])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="100000,1000000", help="result-store sizes, comma-separated (0: skip)")
    parser.add_argument("--tasks", default="1000,10000,100000", help="task-queue sizes (0: skip)")
    parser.add_argument("--versions", type=int, default=10_000, help="versions of one model (0: skip)")
    parser.add_argument("--random-ids", action="store_true", help="uuid4 result ids (before time-ordered ones)")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: a temporary folder)")
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave start-up objects to the garbage collector (as before the head actors froze them)",
    )
    args = parser.parse_args()
    if not args.no_freeze:
        freeze_startup_heap()  # what each head actor does once built
    global RANDOM_IDS
    RANDOM_IDS = args.random_ids
    sizes = lambda text: [int(x) for x in text.split(",") if int(x) > 0]
    random.seed(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        root = Path(folder)
        results = bench_results(sizes(args.results), root)
        tasks = bench_tasks(sizes(args.tasks), root)
        registry = bench_registry(args.versions, root) if args.versions else {}
        report(results, tasks, registry)


if __name__ == "__main__":
    main()
