"""Benchmark: what authorization costs the gateway, as `aip up` runs it (issue 32).

    python bench/authz.py --repeats 3 --seconds 5 [--before e4ade7e^]

Two platforms, each started by ``python -m aip up`` in a home of its own: one from the commit
before users, keys and roles (``--before``, extracted with ``git archive``), one from this
working tree. Both serve the same MNIST-sized CNN as model ``bench`` (production). On the new
one a user with the member role gets a key, and a service key is made for ``bench``. Then, round
by round (so both platforms see the same machine), wrk sends the same real digit at c=1 and c=32:

  before/token   the old gateway with the operator's token (its only way in);
  after/token    the new gateway with the operator's token (the platform admin);
  after/member   a user's key: digest lookup, role in the model's project, last-used time;
  after/service  a service key scoped to ``bench``.

Prints medians and each row's p50 gap and throughput ratio against ``before/token``, measured in
the same run. Target (issue 32): p50 at c=1 within +0.3 ms of before.

``--in-process`` measures the access guard alone, in this process: the real ``AccessGuard`` (with
a real ``access.db`` and ``registry.sqlite`` in a temporary state folder) around an ASGI app that
answers 200 at once, called for a predict request, against the same app without the guard. What
it prints is the guard's own cost per request (median of repeats), which wrk's end-to-end
figures on a shared 2-core machine cannot resolve to a tenth of a millisecond.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import httpx
from loadgen import LoadResult, median_summary
from serve import aip_up_platform, digit_body, mnist_package, wait_ok
from wrk import run_wrk

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCIES = (1, 32)


def extract_commit(commit: str) -> Path:
    """The tree of ``commit`` in a fresh folder (no git state touched)."""
    tree = Path(tempfile.mkdtemp(prefix="aip-authz-before-"))
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def make_keys(base: str, token: str) -> dict[str, str]:
    """A member's key and a service key for ``bench``, made through the REST API."""
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=admin, timeout=30) as client:
        client.post("/v1/users", json={"name": "bench-member", "role": "member"}).raise_for_status()
        member = client.post("/v1/users/bench-member/keys", json={"name": "bench"})
        member.raise_for_status()
        service = client.post("/v1/users/bench-member/keys", json={"name": "svc", "models": ["bench"]})
        service.raise_for_status()
    return {"member": member.json()["secret"], "service": service.json()["secret"]}


def guard_cost(calls: int, repeats: int) -> dict[str, float]:
    """Microseconds per predict request through the real guard, per credential (median of
    ``repeats`` runs of ``calls`` requests), and without the guard (``no guard``)."""
    import asyncio
    import statistics
    import time

    from aiplatform.access.store import AccessStore
    from aiplatform.api.security import AccessGuard, AccessPolicy
    from aiplatform.registry.store import RegistryStore
    from aiplatform.settings import Settings
    from aiplatform.storage import storage_from_settings

    state = Path(tempfile.mkdtemp(prefix="aip-authz-guard-"))
    token = "bench-token-" + "x" * 32
    settings = Settings(state_dir=state, api_token=token)
    RegistryStore(state / "registry.sqlite", storage_from_settings(settings)).claim_model("bench", "default")
    directory = AccessStore.in_state_dir(state)
    directory.create_user("bench-member", role="member", by="bench")
    _, member = directory.create_key("bench-member", name="bench", by="bench")
    _, service = directory.create_key("bench-member", name="svc", models=["bench"], by="bench")
    policy = AccessPolicy.from_settings(settings)
    open_policy = AccessPolicy.from_settings(Settings(state_dir=state, api_auth="off"))

    async def answer(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"refused: {message}")

    def scope_with(secret: str | None) -> dict:  # type: ignore[type-arg]
        headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
        if secret is not None:
            headers.append((b"authorization", f"Bearer {secret}".encode()))
        return {
            "type": "http",
            "method": "POST",
            "path": "/v1/models/bench/predict",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
        }

    cases = {
        "no guard": (answer, None),
        "guard, auth off": (AccessGuard(answer, lambda _: open_policy), None),
        "guard, token": (AccessGuard(answer, lambda _: policy), token),
        "guard, member key": (AccessGuard(answer, lambda _: policy), member),
        "guard, service key": (AccessGuard(answer, lambda _: policy), service),
    }

    async def per_call_us(app: object, secret: str | None) -> float:
        scope = scope_with(secret)
        start = time.perf_counter()
        for _ in range(calls):
            await app(dict(scope), receive, send)  # type: ignore[operator]
        return (time.perf_counter() - start) / calls * 1e6

    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (app, secret) in cases.items():
            runs[name].append(asyncio.run(per_call_us(app, secret)))
    return {name: statistics.median(values) for name, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--before", default="e4ade7e^", help="the commit before users, keys and roles")
    parser.add_argument("--in-process", action="store_true", help="the guard alone, in this process")
    args = parser.parse_args()
    if args.in_process:
        costs = guard_cost(calls=20_000, repeats=max(args.repeats, 3))
        for name, us in costs.items():
            print(f"  {name:<20} {us:7.1f} us a request  ({us - costs['no guard']:+.1f} us over no guard)")
        print(json.dumps({"guard_us": costs}))
        return

    package_path = Path(tempfile.mkdtemp(prefix="aip-authz-pkg-")) / "package.zip"
    package_path.write_bytes(mnist_package())
    body = digit_body()
    before_tree = extract_commit(args.before)
    with ExitStack() as stack:
        before_base, before_token = stack.enter_context(aip_up_platform(before_tree, package_path))
        after_base, after_token = stack.enter_context(aip_up_platform(ROOT, package_path))
        keys = make_keys(after_base, after_token)
        rows = {
            "before/token": (before_base, before_token),
            "after/token": (after_base, after_token),
            "after/member": (after_base, keys["member"]),
            "after/service": (after_base, keys["service"]),
        }
        for base, secret in rows.values():
            wait_ok(f"{base}/v1/models/bench/predict", body, headers={"Authorization": f"Bearer {secret}"})
        runs: dict[str, dict[int, list[LoadResult]]] = {row: {c: [] for c in CONCURRENCIES} for row in rows}
        for repeat in range(args.repeats):
            for c in CONCURRENCIES:
                for row, (base, secret) in rows.items():
                    result = run_wrk(
                        f"{base}/v1/models/bench/predict",
                        body,
                        c,
                        args.seconds,
                        headers={"Authorization": f"Bearer {secret}"},
                    )
                    runs[row][c].append(result)  # type: ignore[arg-type]
                    print(f"repeat {repeat + 1} {row} c={c}: {json.dumps(result.summary())}", flush=True)

    table = {row: {c: median_summary(runs[row][c]) for c in CONCURRENCIES} for row in rows}
    print(f"\nmedians over {args.repeats} runs (rps, p50_ms, p99_ms, failed):")
    base_row = table["before/token"]
    for row, by_c in table.items():
        for c, summary in by_c.items():
            gap = summary["p50_ms"] - base_row[c]["p50_ms"]
            ratio = summary["rps"] / base_row[c]["rps"]
            print(f"  {row:<14} c={c:<3} {summary}  vs before/token: p50 {gap:+.2f} ms, throughput {ratio:.2f}x")
    print(json.dumps({"before": args.before, "medians": table}))


if __name__ == "__main__":
    main()
