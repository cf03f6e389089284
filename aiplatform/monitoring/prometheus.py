"""Prometheus as code: a scrape config that finds Ray's metrics endpoints through the
service-discovery file Ray's dashboard keeps up to date (every node's metrics agent, the
dashboard and the autoscaler), and a small client for Prometheus's HTTP query API.

Ray writes the file to ``<session dir>/prom_metrics_service_discovery.json`` and links it from
``<ray temp dir>/prom_metrics_service_discovery.json`` (``/tmp/ray/...`` by default): point
Prometheus at the link and it follows every new session and every node that joins.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from aiplatform.errors import InvalidArgument, Unavailable

SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"
DEFAULT_RAY_TEMP_DIR = Path("/tmp/ray")
QUERY_TIMEOUT_S = 10.0


def service_discovery_path(ray_temp_dir: Path | None = None) -> Path:
    return (ray_temp_dir or DEFAULT_RAY_TEMP_DIR) / SERVICE_DISCOVERY_FILE


def prometheus_config(
    discovery_file: Path,
    *,
    scrape_interval_s: float = 5.0,
    refresh_interval_s: float = 5.0,
    rule_files: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The config as data (``prometheus_yaml`` writes it); short intervals so a test or an
    operator sees new targets and values within seconds.

    A scrape may take the whole interval: a node's metrics agent is one Python process that
    answers with every series of every worker the node has run (hundreds of KB after a while),
    and on a busy node it has taken more than a second. Prometheus would otherwise cut a scrape
    at the smaller of the interval and 10 s and drop that target's samples."""
    if scrape_interval_s <= 0 or refresh_interval_s <= 0:
        raise InvalidArgument("scrape and refresh intervals must be positive")
    interval = f"{scrape_interval_s:g}s"
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "ray",
                "file_sd_configs": [{"files": [str(discovery_file)], "refresh_interval": f"{refresh_interval_s:g}s"}],
            }
        ],
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    return config


def prometheus_yaml(discovery_file: Path, **options: Any) -> str:
    return yaml.safe_dump(prometheus_config(discovery_file, **options), sort_keys=False)


class PrometheusClient:
    """PromQL over Prometheus's HTTP API; an unreachable server or a bad query is a clear error."""

    def __init__(self, url: str, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant vector: ``[{"metric": {labels}, "value": float}, ...]``."""
        params = {"query": promql, **({"time": str(at)} if at is not None else {})}
        data = self._get("/api/v1/query", params)
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data.get("result", [])]

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        data = self._get(
            "/api/v1/query_range", {"query": promql, "start": str(start), "end": str(end), "step": f"{step_s:g}"}
        )
        return [
            {"metric": r["metric"], "values": [(float(t), float(v)) for t, v in r["values"]]}
            for r in data.get("result", [])
        ]

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets", {}).get("activeTargets", []))

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=self.timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise Unavailable(f"Prometheus at {self.url} is not ready after {timeout_s:g} s")
            time.sleep(0.2)

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise Unavailable(f"Prometheus at {self.url} cannot be reached: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise Unavailable(f"Prometheus at {self.url} answered HTTP {response.status_code} without JSON") from exc
        if body.get("status") != "success":
            message = f"Prometheus refused {params.get('query', path)!r}: {body.get('error', response.text[:300])}"
            if response.status_code == 400:
                raise InvalidArgument(message)
            raise Unavailable(message)
        return dict(body["data"])
