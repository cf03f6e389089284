"""What the hostile-input suite (tests/integration/hostile/) shares: the platform it attacks and the
check every refused request goes through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np

from tests.factories import (
    make_text_package,
    platform_settings,
    register_bytes,
    register_versions,
    served_platform,
    wait_for,
)

TOKEN = "hostile-suite-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"array": np.zeros((8, 8)).tolist()}
MAX_TEXT_CHARS = 20_000


def hostile_platform(home: Any) -> Iterator[dict[str, Any]]:
    """The real gateway and API on the session's Ray with the platform's defaults (token
    authentication on) and small request limits; yields what the tests need to reach it."""
    from aiplatform.registry import RegistryClient
    from aiplatform.results import ResultClient
    from aiplatform.tasks.queue import TaskClient

    (home / "data").mkdir()
    with platform_settings(
        home, "hostile", api_token=TOKEN, max_request_rows=16, max_text_chars=MAX_TEXT_CHARS
    ) as settings:
        register_versions(settings, "tiny", count=2)
        register_versions(settings, "probe")  # the good request after each hostile one
        register_bytes(settings, "words", make_text_package("words"), template="text-classification")
        RegistryClient.connect(settings).set_alias("words", "production", 1)
        with served_platform(settings) as url, httpx.Client(base_url=url, timeout=60, headers=AUTH) as api:
            yield {
                "api": api,
                "url": url,
                "settings": settings,
                "queue": TaskClient.connect(settings),
                "results": ResultClient.connect(settings),
                "registry": RegistryClient.connect(settings),
            }


def stored(platform: dict[str, Any]) -> tuple[int, int, Any]:
    """Tasks, results (the probe's aside) and model versions: what a refused request must leave
    as it was. Results are written in the background: they are counted once they settle."""
    registry, results = platform["registry"], platform["results"]
    versions = {m["name"]: [v.version for v in registry.list_versions(m["name"])] for m in registry.list_models()}
    counted = wait_for(lambda: _settled(results), 30, "the result store to settle")
    return platform["queue"].counts()["total"], counted, versions


def _settled(results: Any) -> int | None:
    first = results.count() - results.count("probe")
    time.sleep(0.3)
    second = results.count() - results.count("probe")
    return second + 1 if first == second else None  # + 1: 0 results is a settled count too


def refused(
    platform: dict[str, Any], method: str, path: str, status: int, message: str, **request: Any
) -> dict[str, Any]:
    """Send a hostile request: ``status`` with ``message`` in its body, nothing stored changed, and
    the replica answers a good prediction next."""
    api = platform["api"]
    before = stored(platform)
    answer = api.request(method, path, **request)
    body = answer.json()
    text = body.get("message") or body.get("error")
    assert answer.status_code == status and message in text, (answer.status_code, body)
    assert api.post("/v1/models/probe/predict", json=GOOD).status_code == 200
    assert stored(platform) == before
    return body
