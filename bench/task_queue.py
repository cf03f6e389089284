"""Benchmark: task creation through the platform's REST API, and submit -> RUNNING latency.

    python bench/task_queue.py --repeats 3 [--tasks 1000] [--clients 32]

(a) baseline: the same work in-process (template validation + an fsync'd SQLite insert into the
    task store), from the same number of threads: the cost floor of a durable create;
(b) the platform: POST /v1/tasks to the Serve gateway (throughput-optimized Serve, as `aip up`
    runs it) -> task manager -> queue actor -> SQLite, from concurrent HTTP clients.
Prints p50/p99 create latency, throughput, the ratio (b)/(a), and checks that every task is
present exactly once. Then, on the idle cluster, the time from a POST with start=true until the
task is RUNNING (its Ray job submitted), median of --starts tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import httpx

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"

from loadgen import LoadResult
from serve import gateway_urls

PARAMS = {"epochs": 1, "max_rows": 600, "conv_channels": [4], "hidden_units": 16}


def baseline(tasks: int, clients: int) -> LoadResult:
    """(a): validation + TaskStore.create in this process, ``clients`` threads."""
    from aiplatform.tasks.queue import TaskStore
    from aiplatform.training.catalog import get_template

    store = TaskStore(Path(tempfile.mkdtemp(prefix="aip-bench-queue-")) / "tasks.sqlite")
    template = get_template("cnn-classification")
    result = LoadResult(seconds=0.0)
    lock = threading.Lock()

    def create(i: int) -> None:
        started = time.perf_counter()
        params = template.parse_params(PARAMS).model_dump(mode="json")
        store.create(template.name, params, idempotency_key=f"base-{i}")
        with lock:
            result.latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, range(tasks)))
    result.seconds = time.perf_counter() - started
    assert store.counts()["total"] == tasks
    return result


async def create_over_http(url: str, tasks: int, clients: int, run: str) -> LoadResult:
    """(b): ``clients`` concurrent HTTP clients share ``tasks`` creations. Each client is made and
    connected before the clock starts (making an httpx client costs ~20 ms of CPU: 32 of them
    would otherwise show up as the slowest requests)."""
    result = LoadResult(seconds=0.0)
    next_index = iter(range(tasks))
    https = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(clients)]
    await asyncio.gather(*(http.get("/v2/health/live") for http in https))

    async def client(http: httpx.AsyncClient) -> None:
        for i in next_index:
            started = time.perf_counter()
            response = await http.post(
                "/v1/tasks", json={"template": "cnn-classification", "params": PARAMS, "idempotency_key": f"{run}-{i}"}
            )
            if response.status_code == 201:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                result.failures[str(response.status_code)] = result.failures.get(str(response.status_code), 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(http) for http in https))
    result.seconds = time.perf_counter() - started
    await asyncio.gather(*(http.aclose() for http in https))
    return result


def check_once(url: str, run: str, tasks: int, since: float) -> None:
    listed = httpx.get(f"{url}/v1/tasks", params={"since": since, "limit": 1000}, timeout=60).json()["tasks"]
    keys = [t["idempotency_key"] for t in listed if (t["idempotency_key"] or "").startswith(f"{run}-")]
    assert len(keys) == tasks and len(set(keys)) == tasks, (len(keys), len(set(keys)))
    assert len({t["id"] for t in listed}) == len(listed)


def submit_to_running(url: str, starts: int) -> list[float]:
    """POST with start=true, then poll until RUNNING; each task is cancelled, and the cluster idle
    again, before the next."""
    import ray

    latencies = []
    idle_cpus = ray.available_resources().get("CPU", 0)
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(starts):
            deadline = time.time() + 60  # idle: the previous task's workers have given their CPUs back
            while ray.available_resources().get("CPU", 0) < idle_cpus and time.time() < deadline:
                time.sleep(0.2)
            started = time.perf_counter()
            task = http.post(
                "/v1/tasks", json={"template": "cnn-classification", "params": PARAMS, "start": True}
            ).json()
            while http.get(f"/v1/tasks/{task['id']}").json()["state"] != "RUNNING":
                time.sleep(0.005)
            latencies.append((time.perf_counter() - started) * 1000)
            http.post(f"/v1/tasks/{task['id']}/cancel")
    return latencies


def summary(result: LoadResult) -> dict[str, float]:
    return {
        "tasks_per_s": round(len(result.latencies_ms) / result.seconds, 1),
        "p50_ms": round(result.percentile(50), 2),
        "p99_ms": round(result.percentile(99), 2),
        "failed": sum(result.failures.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    import ray
    from ray import serve

    from aiplatform.runtime import connect
    from aiplatform.settings import Settings
    from aiplatform.tasks.scheduler import ensure_scheduler
    from serve_apps.app import start_app
    from tests.factories import free_port

    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="aip-bench-queue-")),
        ray_num_cpus=2,
        ray_namespace=f"bench-{uuid.uuid4().hex[:8]}",
        api_auth="off",
        grpc_port=free_port(),
        ray_temp_dir=Path(f"/tmp/aip-bench-ray-{os.getpid()}"),
    )
    connect(settings)
    runs: dict[str, list[dict[str, float]]] = {"in-process": [], "api": []}
    try:
        ensure_scheduler(settings)
        start_app(settings, free_port())
        url = gateway_urls("direct", 0, settings.serve_app_name, 1)[0]
        print(f"gateway at {url}", flush=True)
        asyncio.run(create_over_http(url, 50, 8, "warmup"))
        for repeat in range(args.repeats):
            runs["in-process"].append(summary(baseline(args.tasks, args.clients)))
            run, since = f"r{repeat}-{uuid.uuid4().hex[:6]}", time.time()
            runs["api"].append(summary(asyncio.run(create_over_http(url, args.tasks, args.clients, run))))
            check_once(url, run, args.tasks, since)
            print(
                f"repeat {repeat + 1}: {json.dumps({k: v[-1] for k, v in runs.items()})}; "
                f"{args.tasks} tasks present once",
                flush=True,
            )
        to_running = submit_to_running(url, args.starts)
    finally:
        serve.shutdown()
        ray.shutdown()

    medians = {
        target: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for target, rows in runs.items()
    }
    print(f"\nmedians over {args.repeats} runs of {args.tasks} creations from {args.clients} clients:")
    for target, row in medians.items():
        print(f"  {target:<11} {row}")
    print(f"api/in-process throughput: {medians['api']['tasks_per_s'] / medians['in-process']['tasks_per_s']:.2f}x")
    print(f"api p99 create latency: {medians['api']['p99_ms']:.1f} ms (target <= 100 ms)")
    print(
        f"submit -> RUNNING on an idle cluster: median {statistics.median(to_running):.0f} ms "
        f"(runs: {', '.join(f'{x:.0f}' for x in to_running)})"
    )
    print(json.dumps({"medians": medians, "submit_to_running_ms": to_running}))


if __name__ == "__main__":
    main()
