"""Load from `wrk` (Debian's C load generator), for the serving benchmarks.

A load generator written in Python shares the two cores it measures and steals what it measures;
wrk's event loop in C costs a small fraction of that. One wrk thread per URL; with several URLs
(gateway replicas under direct ingress) the connections are split between them and the results
added up.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    """What one wrk run measured (the same summary as ``loadgen.LoadResult``)."""

    rps: float
    p50_ms: float
    p99_ms: float
    failed: int

    def summary(self) -> dict[str, float]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "failed": self.failed,
        }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """wrk's report (run with ``--latency``) -> throughput, p50, p99 and failed requests."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    # wrk pads seconds with a trailing space ("99%    6.77s ")
    percentiles = dict(re.findall(r"^\s+(50|99)\.000%\s+(\S+)\s*$", output, re.MULTILINE)) or dict(
        re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE)
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    # wrk's rate counts every answer; only the successful ones count here (a fast 503 is no service)
    answered = rps * (total - min(failed, total)) / total if total else 0.0
    return WrkResult(answered, _ms(percentiles["50"]), _ms(percentiles["99"]), failed)


def run_wrk(
    urls: str | list[str],
    body: bytes,
    concurrency: int,
    seconds: float,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> WrkResult:
    """POST ``body`` to ``urls`` from ``concurrency`` kept-alive connections for ``seconds``
    (``method="GET"``: no body), with ``headers`` added (an ``Authorization`` token)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (scripts/install-system-packages.sh --bench)")
    urls = [urls] if isinstance(urls, str) else urls
    folder = Path(tempfile.mkdtemp(prefix="aip-wrk-"))
    (folder / "body.bin").write_bytes(body)
    script = folder / "post.lua"
    lines = [f'wrk.method = "{method}"']
    if method != "GET":
        lines += [
            'local f = io.open("' + str(folder / "body.bin") + '", "rb")',
            'wrk.body = f:read("*all")',
            "f:close()",
            f'wrk.headers["Content-Type"] = "{content_type}"',
        ]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in (headers or {}).items()]
    script.write_text("\n".join(lines) + "\n")
    shares = [concurrency // len(urls) + (1 if i < concurrency % len(urls) else 0) for i in range(len(urls))]

    def one(url: str, connections: int) -> WrkResult:
        # whole seconds (wrk takes no fractions); 30 s timeout, so slow answers count in p99
        done = subprocess.run(
            [
                binary,
                "-t1",
                f"-c{connections}",
                f"-d{math.ceil(seconds)}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 90,
        )
        return parse_wrk(done.stdout)

    targets = [(url, n) for url, n in zip(urls, shares) if n > 0]
    with ThreadPoolExecutor(len(targets)) as pool:
        results = list(pool.map(lambda target: one(*target), targets))
    weights = [r.rps for r in results]
    total = sum(weights) or 1.0
    return WrkResult(
        rps=sum(r.rps for r in results),
        p50_ms=sum(r.p50_ms * w for r, w in zip(results, weights)) / total,
        p99_ms=max(r.p99_ms for r in results),
        failed=sum(r.failed for r in results),
    )
