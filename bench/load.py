"""Load test: a bounded mixed load on the platform's HTTP surface for a fixed time.

    python bench/load.py --seconds 20 --concurrency 16 [--repeats 3] [--url http://127.0.0.1:8000] [--faults]

Mix (per request, drawn with a fixed seed): 70% predictions (a real MNIST digit as a PNG upload
to a registered CNN), 10% task creations (queued, not started), 20% queries (task list, results,
models). Without --url it starts its own platform on an embedded loopback Ray. Prints throughput,
latency percentiles and errors per kind of request, and, as the baseline measured in the same
run, the throughput of the health endpoint (the cost floor of one request through the gateway);
the mix is given as a ratio of it. With --faults (on its own platform), the load is measured, then
the fault table's platform faults are injected into that running platform (the queue, registry,
result-store and alert actors killed and restarted by Ray, one model-server replica killed and
replaced by Serve), and the same load is measured again: the "after" figures as ratios of the
"before" ones show what the recovered platform still does (docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import httpx

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")

MIX = (("predict", 0.70), ("create_task", 0.10), ("query", 0.20))
MODEL = "load-cnn"


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def summary(self, seconds: float) -> dict[str, dict[str, float]]:
        rows = {}
        for kind in sorted(set(self.latencies) | set(self.errors)):
            values = sorted(self.latencies[kind])
            errors = sum(self.errors[kind].values())
            rows[kind] = {
                "rps": len(values) / seconds,
                "p50_ms": _pct(values, 50),
                "p95_ms": _pct(values, 95),
                "p99_ms": _pct(values, 99),
                "errors": errors,
                "error_share": errors / max(1, errors + len(values)),
                "by_status": dict(self.errors[kind]),
            }
        return rows


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


async def _mixed(client: httpx.AsyncClient, recorder: Recorder, png: bytes, stop_at: float, seed: int) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX)
    while time.perf_counter() < stop_at:
        kind = rng.choices(kinds, weights)[0]
        started = time.perf_counter()
        try:
            if kind == "predict":
                response = await client.post(f"/v1/models/{MODEL}/predict", files={"file": ("d.png", png, "image/png")})
            elif kind == "create_task":
                response = await client.post(
                    "/v1/tasks", json={"template": "cnn-classification", "params": {"epochs": 1}, "start": False}
                )
            else:
                path = rng.choice(["/v1/tasks?limit=20", f"/v1/results?model={MODEL}&limit=20", "/v1/models"])
                response = await client.get(path)
            status = response.status_code
        except httpx.HTTPError as exc:
            recorder.errors[kind][type(exc).__name__] += 1
            continue
        if status < 300:
            recorder.latencies[kind].append((time.perf_counter() - started) * 1000)
        else:
            recorder.errors[kind][str(status)] += 1


async def _health(client: httpx.AsyncClient, recorder: Recorder, stop_at: float) -> None:
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        response = await client.get("/v2/health/live")
        if response.status_code == 200:
            recorder.latencies["health"].append((time.perf_counter() - started) * 1000)
        else:
            recorder.errors["health"][str(response.status_code)] += 1


async def run(url: str, png: bytes, concurrency: int, seconds: float, *, health: bool) -> Recorder:
    recorder = Recorder()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        stop_at = time.perf_counter() + seconds
        if health:
            await asyncio.gather(*(_health(client, recorder, stop_at) for _ in range(concurrency)))
        else:
            await asyncio.gather(*(_mixed(client, recorder, png, stop_at, seed) for seed in range(concurrency)))
    return recorder


def start_platform() -> tuple[str, Any, Any]:
    """The platform on an embedded Ray, with one small MNIST CNN in production."""
    import ray

    from aip.local import deploy_platform
    from aiplatform.runtime import local_runtime_env  # Serve's gRPC proxy on loopback, bounded
    from aiplatform.settings import Settings
    from tests.factories import free_port, register_versions

    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="aip-bench-load-")),
        ray_namespace=f"load-{uuid.uuid4().hex[:8]}",
        http_port=free_port(),
        grpc_port=free_port(),
        alert_interval_s=10,
        api_auth="off",
    )
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(("RAY_SERVE_", "RAY_ENABLE_WINDOWS"))}
    ray.init(
        address="local",
        num_cpus=2,
        namespace=settings.ray_namespace,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        log_to_driver=False,
        runtime_env=local_runtime_env(env_vars),
        _temp_dir=f"/tmp/aip-bench-ray-{os.getpid()}",
    )
    deploy_platform(settings)
    register_versions(settings, MODEL, count=1)
    return settings.resolved_api_url, ray, settings


def inject_faults(url: str, png: bytes, settings: Any) -> list[str]:
    """Kill each head actor (Ray restarts it) and one model-server replica (Serve replaces it),
    then wait until predictions, task creation and queries all answer again; returns what was done."""
    import ray

    from aiplatform.alerting.actor import ALERT_ACTOR_NAME
    from aiplatform.registry.actor import REGISTRY_ACTOR_NAME
    from aiplatform.results.actor import RESULT_STORE_ACTOR_NAME
    from aiplatform.tasks.queue.actor import QUEUE_ACTOR_NAME
    from tests.factories import model_server_replicas

    done = []
    for name in (QUEUE_ACTOR_NAME, REGISTRY_ACTOR_NAME, RESULT_STORE_ACTOR_NAME, ALERT_ACTOR_NAME):
        ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=False)
        done.append(f"{name} killed")
    ray.kill(model_server_replicas(settings.serve_app_name)[0], no_restart=True)
    done.append("a model-server replica killed")
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        while True:
            answers = [
                client.post(f"/v1/models/{MODEL}/predict", files={"file": ("d.png", png, "image/png")}),
                client.post(
                    "/v1/tasks", json={"template": "cnn-classification", "params": {"epochs": 1}, "start": False}
                ),
                client.get("/v1/tasks?limit=1"),
                client.get("/v1/models"),
            ]
            if all(a.status_code < 300 for a in answers):
                break
            if time.perf_counter() - started > 120:
                raise SystemExit(f"the platform did not recover in 120 s: {[a.status_code for a in answers]}")
            time.sleep(0.5)
    done.append(f"all answering again after {time.perf_counter() - started:.1f} s")
    return done


def digit_png() -> bytes:
    from aiplatform.datasets.sources import mnist_test_digits
    from tests.factories import png_bytes

    images, _ = mnist_test_digits(1, 0)
    return png_bytes(images[0])


def measure(url: str, png: bytes, args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """``args.repeats`` alternating runs of the health baseline and the mix; their summaries."""
    health, mixed = [], []
    for _ in range(args.repeats):
        health.append(asyncio.run(run(url, png, args.concurrency, args.seconds, health=True)).summary(args.seconds))
        mixed.append(asyncio.run(run(url, png, args.concurrency, args.seconds, health=False)).summary(args.seconds))
    return health, mixed


def print_table(title: str, health: list[Any], mixed: list[Any], args: argparse.Namespace) -> dict[str, float]:
    """Print one phase's medians; returns its req/s per kind (the mix's total under ``mixed``)."""
    base = statistics.median(h["health"]["rps"] for h in health)
    print(f"\n{title}: medians of {args.repeats} runs of {args.seconds:g} s at concurrency {args.concurrency}")
    print("| requests | req/s | p50 ms | p95 ms | p99 ms | errors (share) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| health (baseline) | {base:.0f} | {_median(health, 'health', 'p50_ms'):.1f} | "
        f"{_median(health, 'health', 'p95_ms'):.1f} | {_median(health, 'health', 'p99_ms'):.1f} | "
        f"{_median(health, 'health', 'errors'):.0f} |"
    )
    rates = {"health": base}
    for kind, _ in MIX:
        rates[kind] = _median(mixed, kind, "rps")
        print(
            f"| {kind} | {rates[kind]:.0f} | {_median(mixed, kind, 'p50_ms'):.1f} | {_median(mixed, kind, 'p95_ms'):.1f} | "
            f"{_median(mixed, kind, 'p99_ms'):.1f} | {_median(mixed, kind, 'errors'):.0f} "
            f"({_median(mixed, kind, 'error_share'):.2%}) |"
        )
    rates["mixed"] = sum(rates[kind] for kind, _ in MIX)
    statuses: dict[str, int] = defaultdict(int)
    for run_rows in mixed:
        for row in run_rows.values():
            for status, count in row["by_status"].items():
                statuses[status] += count
    print(
        f"\nmixed load: {rates['mixed']:.0f} req/s = {rates['mixed'] / base:.2f}x the health endpoint's; "
        f"errors by status over all runs: {dict(statuses) or 'none'}"
    )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running platform (default: start one)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--faults",
        action="store_true",
        help="measure, inject the fault table's platform faults, measure again (own platform only)",
    )
    args = parser.parse_args()
    if args.faults and args.url:
        parser.error("--faults needs the bench's own platform (leave out --url)")
    ray: Any | None = None
    url, settings = args.url, None
    if url is None:
        url, ray, settings = start_platform()
    png = digit_png()
    try:
        with httpx.Client(base_url=url, timeout=60) as warm:  # the model loads once, before measuring
            assert (
                warm.post(f"/v1/models/{MODEL}/predict", files={"file": ("d.png", png, "image/png")}).status_code == 200
            )
        before = measure(url, png, args)
        faults = inject_faults(url, png, settings) if args.faults else []
        after = measure(url, png, args) if args.faults else None
    finally:
        if ray is not None:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    rates = print_table("before the faults" if args.faults else "load", *before, args)
    if after is not None:
        print(f"\nfaults injected: {'; '.join(faults)}")
        rates_after = print_table("after the faults", *after, args)
        print(
            "\nafter / before (req/s): "
            + ", ".join(f"{kind} {rates_after[kind] / rates[kind]:.2f}x" for kind in rates if rates[kind])
        )


def _median(runs: list[dict[str, dict[str, float]]], kind: str, key: str) -> float:
    values = [r[kind][key] for r in runs if kind in r]
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    main()
