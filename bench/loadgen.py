"""A closed-loop HTTP/1.1 load generator cheap enough to share 2 cores with the server it measures.

Each of ``concurrency`` keep-alive connections sends the same pre-encoded request, waits for the
whole answer, and sends the next; the request bytes are built once, so the client costs little
more than the socket calls. Used by every serving benchmark so that all targets see one client.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """What one load run measured: completed requests, failures by status and latencies in ms."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def summary(self) -> dict[str, float]:
        return {
            "rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "failed": self.failed,
        }


def encode_request(url: str, body: bytes, content_type: str = "application/json") -> tuple[str, int, bytes]:
    """(host, port, request bytes) for a POST of ``body`` to ``url`` on a kept-alive connection."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Reads one response (Content-Length or chunked body); returns its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _connection(
    host: str, port: int, request: bytes, stop_at: float, result: LoadResult, record_from: float
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                writer.write(request)
                status = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                result.failures[type(exc).__name__] = result.failures.get(type(exc).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if started < record_from:
                continue
            if status == 200:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                result.failures[str(status)] = result.failures.get(str(status), 0) + 1
    finally:
        writer.close()


async def run_http_load(
    urls: str | list[str], body: bytes, concurrency: int, seconds: float, warmup_s: float = 1.0
) -> LoadResult:
    """``concurrency`` closed-loop connections for ``warmup_s + seconds``; only the last
    ``seconds`` are recorded. Several URLs (replicas of one service) share the connections
    round-robin, as an L4 load balancer would spread them."""
    targets = [encode_request(url, body) for url in ([urls] if isinstance(urls, str) else urls)]
    now = time.perf_counter()
    result = LoadResult(seconds=seconds)
    await asyncio.gather(
        *(
            _connection(*targets[i % len(targets)], now + warmup_s + seconds, result, now + warmup_s)
            for i in range(concurrency)
        )
    )
    return result


async def run_call_load(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float, warmup_s: float = 1.0
) -> LoadResult:
    """The same closed loop over an in-process coroutine instead of HTTP."""
    now = time.perf_counter()
    stop_at, record_from = now + warmup_s + seconds, now + warmup_s
    result = LoadResult(seconds=seconds)

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call()
            if started >= record_from:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def median_summary(runs: list[LoadResult]) -> dict[str, float]:
    """Median of each figure over repeated runs (the machine is noisy)."""
    summaries = [r.summary() for r in runs]
    return {key: round(statistics.median(s[key] for s in summaries), 2) for key in summaries[0]}
