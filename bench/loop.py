"""Benchmark: a retraining loop's own time, and the labeled-prediction query it reads (issue 35).

    python bench/loop.py [--parts loop,query] [--repeats 3] [--results 1000000] [--labeled-share 0.2]

``loop``: a real platform (embedded Ray, the task scheduler, the gateway, the loop engine, at the
settings' default loop and task-poll intervals) and, per repeat, a model of its own: the penguins
table model trained on 60 rows through the task queue and made production, every row of the
table predicted and labeled, a policy on the quality alert; the alert engine evaluated once, the
quality alert fires and starts a run, which builds its data, trains through the queue, passes
the gate and starts its canary. From the run's record: the alert firing (its ``started_at``) to
the canary serving (``canary_started_at``: the split set, the candidate's replica warm), minus
the training (the task's job, from running to finished), in seconds (target: under 60), with
each step's share. Medians over ``--repeats``.

``query``: a result store of ``--results`` predictions (20 models, 3 versions, one every 10 ms),
``--labeled-share`` of them labeled through the store's own labeling path; then a page of 1,000
of a model's labeled predictions since a day ago (``ResultStore.labeled``, the loop's data step
reads these, ``labeled_since`` pages through them), p50/p99 in ms over 200 calls (target p99 under
50 ms), against the store's plain indexed page of 1,000 of a model's results since the same time
(``ResultStore.query``) as the baseline, and the whole ``labeled_since`` read of one model.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from aiplatform.results.feedback import LabelRequest
from aiplatform.results.store import PredictionRecord, ResultStore, labeled_cursor, labeled_since, new_result_id

TARGET_LOOP_S = 60.0
TARGET_P99_MS = 50.0
MODELS = 20
QUERY_CALLS = 200
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
SMALL = {"max_rows": 60, "num_boost_round": 30, "early_stopping_rounds": 5}


# -- the labeled-prediction query ---------------------------------------------------------------
def percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2)}


def timed(call: Any, calls: int = QUERY_CALLS) -> dict[str, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def fill_store(store: ResultStore, rows: int, share: float, now: float) -> dict[str, float]:
    """``rows`` predictions, then ``share`` of them labeled (a random pick, 10,000 a call, as the
    API takes them); the seconds each took."""
    rng = random.Random(0)
    began, picked = time.perf_counter(), []
    for first in range(0, rows, 2000):
        batch = []
        for i in range(first, min(first + 2000, rows)):
            record = PredictionRecord(
                id=new_result_id(),
                model=f"model-{i % MODELS}",
                version=1 + i % 3,
                input_digest=f"{i:064x}",
                output={"label": str(i % 10), "probabilities": [0.1] * 10},
                latency_ms=3.0,
                created_at=now - (rows - i) * 0.01,
                input_uri=f"results/inputs/{i}.json",
                features={"mean": 0.5},
            )
            batch.append(record)
            if rng.random() < share:
                picked.append(record.id)
        store.record_batch(batch)
    written = time.perf_counter() - began
    allowed = {(f"model-{m}", v): [str(c) for c in range(10)] for m in range(MODELS) for v in (1, 2, 3)}
    began = time.perf_counter()
    for first in range(0, len(picked), 10_000):
        requests = [LabelRequest(label=str(rng.randrange(10)), id=i) for i in picked[first : first + 10_000]]
        store.label(requests, allowed, by="bench")
    return {"write_s": round(written, 1), "label_s": round(time.perf_counter() - began, 1), "labeled": len(picked)}


def query_part(rows: int, share: float, repeats: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="aip-bench-loop-query-"))
    store, now = ResultStore(root / "results.sqlite"), time.time()
    filled = fill_store(store, rows, share, now)
    print(f"store: {rows:,} results, {filled}", flush=True)
    since = now - 86_400
    model = lambda: f"model-{random.randrange(MODELS)}"
    with sqlite3.connect(root / "results.sqlite") as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM feedback WHERE model = ? AND created_at >= ?"
            " ORDER BY created_at, result_id LIMIT 1000",
            ("model-0", since),
        ).fetchall()
    print("plan of a labeled page:", "; ".join(row[-1] for row in plan), flush=True)
    runs: dict[str, list[dict[str, float]]] = {"labeled": [], "labeled_deep": [], "baseline_query": []}
    whole = []
    pages = [store.labeled(model="model-0", since=since, limit=1000)]
    while len(pages) < 5 and len(pages[-1]) == 1000:  # a cursor 5 pages in: where labeled_since goes on
        pages.append(store.labeled(model="model-0", since=since, after=labeled_cursor(pages[-1])))
    cursor = labeled_cursor(pages[-1] or pages[0])
    for repeat in range(repeats):
        runs["labeled"].append(timed(lambda: store.labeled(model=model(), since=since, limit=1000)))
        runs["labeled_deep"].append(timed(lambda: store.labeled(model="model-0", since=since, after=cursor)))
        runs["baseline_query"].append(timed(lambda: store.query(model=model(), since=since, limit=1000)))
        began = time.perf_counter()
        count = sum(1 for _ in labeled_since(store, "model-3", since))
        whole.append((time.perf_counter() - began) * 1000)
        print(f"repeat {repeat + 1}: {json.dumps({k: v[-1] for k, v in runs.items()})}", flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    store.close()
    return {
        "rows": rows,
        "labeled": filled["labeled"],
        "medians": medians,
        "labeled_since_one_model_ms": round(statistics.median(whole), 1),
        "labeled_since_rows": count,
    }


# -- the loop ------------------------------------------------------------------------------------
def penguin_rows() -> list[dict[str, Any]]:
    from aiplatform.datasets.tabular_sources import penguins_file

    with open(penguins_file(), newline="") as handle:
        table = list(csv.DictReader(handle))
    return [
        {
            "features": {
                n: None if r[n] == "NA" else (r[n] if n in ("island", "sex") else float(r[n])) for n in FEATURES
            },
            "species": r["species"],
        }
        for r in table
    ]


def wait(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def one_loop(api: Any, queue: Any, registry: Any, model: str) -> dict[str, float]:
    """One model made production, its traffic labeled, its quality alert's run to the canary."""
    from aiplatform.tasks.queue import SUCCEEDED

    created = api.post(
        "/v1/tasks", json={"template": "tabular-classification", "model_name": model, "start": True, "params": SMALL}
    )
    assert created.status_code == 201, created.text
    task = wait(lambda: (t := queue.get(created.json()["id"])).finished and t, 900, "production's training")
    assert task.state == SUCCEEDED, task.error
    registry.set_alias(model, "production", int(task.result["version"]))
    rows, labels = penguin_rows(), []
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        answer = api.post(f"/v1/models/{model}/predict", json={"rows": [r["features"] for r in chunk]})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        labels += [{"request_id": request_id, "index": i, "label": r["species"]} for i, r in enumerate(chunk)]
    last = f"{labels[-1]['request_id']}-{labels[-1]['index']}"
    wait(lambda: api.get(f"/v1/results/{last}").status_code == 200, 120, "the predictions stored")
    assert api.post("/v1/results/feedback", json=labels).status_code == 200
    policy = {
        "model": model,
        "on_alerts": ["quality-low"],
        "cooldown_s": 0,
        "data": {"holdout_fraction": 0.3, "seed": 1},
        "gate": {"margin": 0.0},
        "canary": {"weight": 20, "watch_s": 1},  # promoted at once: one deployment per model left
    }
    assert api.post("/v1/loops", json=policy).status_code == 201
    fired = [
        a
        for a in api.post("/v1/alerts/evaluate").json()["fired"]
        if a["rule"] == "quality-low" and a["labels"].get("model") == model
    ]
    assert fired, f"no quality alert for {model}"
    runs = wait(lambda: api.get(f"/v1/loops/{model}/runs").json()["runs"], 300, "the alert's run")
    run_id = runs[0]["id"]

    def at_canary() -> dict[str, Any] | None:
        answer = api.get(f"/v1/loops/runs/{run_id}")
        if answer.status_code != 200:
            return None
        run = answer.json()
        assert run["state"] not in ("failed", "rejected", "rolled_back"), run
        return run if "canary_started_at" in run["context"] else None

    # The canary serves once the run notes it (after the split is set and its replica warm); a
    # step's recorded time is its tick's start, so the canary's moment is taken here, by polling.
    run = wait(at_canary, 900, "the run's canary")
    serving_at = time.time()
    steps = {s["step"]: s for s in run["steps"]}
    training = queue.get(run["context"]["task_id"])
    fired_at, opened_at = float(fired[0]["started_at"]), float(steps["triggered"]["at"])
    train_s = float(training.finished_at) - float(training.started_at)
    total = serving_at - fired_at
    wait(
        lambda: (r := api.get(f"/v1/loops/runs/{run_id}")).status_code == 200 and r.json()["finished_at"],
        300,
        "the run's end",
    )
    return {
        "alert_to_canary_s": round(total, 2),
        "training_s": round(train_s, 2),
        "without_training_s": round(total - train_s, 2),
        "alert_to_run_s": round(opened_at - fired_at, 2),
        "data_and_task_s": round(float(training.created_at) - opened_at, 2),
        "queue_to_running_s": round(float(training.started_at) - float(training.created_at), 2),
        "finished_to_seen_s": round(float(steps["train"]["at"]) - float(training.finished_at), 2),
        "gate_and_canary_s": round(serving_at - float(steps["train"]["at"]), 2),
    }


def loop_part(repeats: int) -> dict[str, Any]:
    import httpx
    import ray
    from ray import serve

    from aip.local import deploy_platform
    from aiplatform.registry import RegistryClient
    from aiplatform.runtime import connect
    from aiplatform.settings import Settings
    from aiplatform.tasks.queue import TaskClient
    from tests.factories import free_port

    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="aip-bench-loop-")),
        ray_num_cpus=2,
        ray_namespace=f"bench-{uuid.uuid4().hex[:8]}",
        api_auth="off",
        grpc_port=free_port(),
        http_port=free_port(),
        ray_temp_dir=Path(f"/tmp/aip-bench-ray-{os.getpid()}"),
        alert_interval_s=3600,  # evaluated when the bench asks: the alert's own time is its start
        alert_quality_accuracy=0.999,  # production from 60 rows errs on the whole table
    )
    print(f"loop every {settings.loop_interval_s} s, task poll every {settings.task_poll_interval_s} s", flush=True)
    connect(settings)
    runs = []
    try:
        deploy_platform(settings)  # as `aip up` does: head actors, loop engine, gateway
        url = f"http://127.0.0.1:{settings.http_port}"
        with httpx.Client(base_url=url, timeout=300) as api:
            queue, registry = TaskClient.connect(settings), RegistryClient.connect(settings)
            for repeat in range(repeats):
                runs.append(one_loop(api, queue, registry, f"bench-loop-{repeat}"))
                print(f"repeat {repeat + 1}: {json.dumps(runs[-1])}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="loop,query")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--labeled-share", type=float, default=0.2)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    out: dict[str, Any] = {}
    if "query" in parts:
        out["query"] = query_part(args.results, args.labeled_share, args.repeats)
        m = out["query"]["medians"]
        print(f"\nat {args.results:,} results, {out['query']['labeled']:,} labeled, medians over {args.repeats}:")
        for name, figures in m.items():
            print(f"  {name:<16} p50 {figures['p50_ms']:.2f} ms  p99 {figures['p99_ms']:.2f} ms")
        print(
            f"labeled/baseline p99: {m['labeled']['p99_ms'] / m['baseline_query']['p99_ms']:.2f}x; "
            f"labeled p99 {m['labeled']['p99_ms']:.1f} ms (target < {TARGET_P99_MS:.0f} ms); "
            f"labeled_since of one model ({out['query']['labeled_since_rows']:,} rows): "
            f"{out['query']['labeled_since_one_model_ms']:.0f} ms",
            flush=True,
        )
    if "loop" in parts:
        out["loop"] = loop_part(args.repeats)
        loop = out["loop"]
        print(f"\nmedians over {args.repeats} runs (s):")
        for key, value in loop.items():
            if key != "runs":
                print(f"  {key:<20} {value:.2f}")
        print(
            f"alert -> canary serving minus training: {loop['without_training_s']:.1f} s "
            f"(target < {TARGET_LOOP_S:.0f} s; with training {loop['alert_to_canary_s']:.1f} s)"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
