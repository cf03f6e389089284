"""`aip down` and `aip up` in the middle of a retraining run, as a user runs them in a shell: the
penguins production of test_loops.py on a platform `aip up` started (a Ray of its own), its
predictions labeled, a run by hand; the whole platform goes down while the run's training task
runs (its Ray job is lost with the cluster) and comes up again on the same home. The run carries on
from its recorded step: the same training task, queued again once by the task queue, never a
second task or a second data build; it ends promoted, and the new version's registry lineage names
the run, the trigger and the decision."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import free_port, wait_for
from tests.integration.test_loops import MODEL, RUN_S, SMALL, _label_traffic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Aip = Callable[..., subprocess.CompletedProcess[str]]


@contextlib.contextmanager
def aip_platform(home: Path) -> Iterator[tuple[Aip, str]]:
    """`aip` as a user runs it, on a platform of its own under ``home`` (started by the test with
    `aip up`; `aip down` afterwards whatever happened), with its base URL. The loop engine and the
    scheduler look every 0.5 s; alerts are evaluated only when asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIP_", "RAY_ADDRESS"))}
    http_port = free_port()
    env.update(
        {
            "AIP_HOME": str(home),
            "AIP_RAY_PORT": str(free_port()),
            "AIP_DASHBOARD_PORT": str(free_port()),
            "AIP_DASHBOARD_AGENT_PORT": str(free_port()),
            "AIP_HTTP_PORT": str(http_port),
            "AIP_GRPC_PORT": str(free_port()),
            "AIP_PROMETHEUS_PORT": "0",  # none: this test reads no metrics
            "AIP_RAY_NUM_CPUS": "2",
            "AIP_RAY_TEMP_DIR": f"/tmp/aip-loop-up-{os.getpid()}",
            "AIP_LOOP_INTERVAL_S": "0.5",
            "AIP_TASK_POLL_INTERVAL_S": "0.5",
            "AIP_ALERT_INTERVAL_S": "3600",
            "RAY_AUTH_TOKEN_PATH": str(home / "token"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )

    def aip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aip", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        yield aip, f"http://127.0.0.1:{http_port}"
    finally:
        down = aip("down")
        assert down.returncode == 0, down.stderr[-2000:]


def _api(url: str, home: Path) -> httpx.Client:
    token = (home / "state" / "api_token").read_text().strip()
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"})


def _get(api: httpx.Client, path: str) -> dict[str, Any] | None:
    """``path``'s JSON, or None while the platform is not answering yet (starting again)."""
    try:
        answer = api.get(path)
    except httpx.TransportError:
        return None
    if answer.status_code == 503:
        return None
    assert answer.status_code == 200, answer.text
    return answer.json()


def _finished_task(api: httpx.Client, task_id: str) -> dict[str, Any] | None:
    task = _get(api, f"/v1/tasks/{task_id}")
    return task if task is not None and task["finished_at"] is not None else None


def test_a_run_carries_on_through_aip_down_and_up_while_it_trains(tmp_path: Path) -> None:
    with aip_platform(tmp_path) as (aip, url):
        up = aip("up")
        assert up.returncode == 0, up.stderr[-3000:]
        with _api(url, tmp_path) as api:
            created = api.post(
                "/v1/tasks",
                json={"template": "tabular-classification", "model_name": MODEL, "start": True, "params": SMALL},
            )
            assert created.status_code == 201, created.text
            done = wait_for(lambda: _finished_task(api, created.json()["id"]), RUN_S, "production's training")
            assert done["state"] == "SUCCEEDED", done
            production = int(done["result"]["version"])
            promoted = api.post(f"/v1/models/{MODEL}/promote", json={"version": production, "force": True})
            assert promoted.status_code == 200, promoted.text
            _label_traffic({"api": api})
            policy = {
                "model": MODEL,
                "cooldown_s": 0,
                "data": {"holdout_fraction": 0.3, "seed": 1},
                "gate": {"margin": 0.0},
                "canary": {"weight": 20, "watch_s": 1},
            }
            assert api.post("/v1/loops", json=policy).status_code == 201
            started = api.post(f"/v1/loops/{MODEL}/trigger", json={"detail": "through a restart"})
            assert started.status_code == 202 and started.json()["run"] is not None, started.text
            run_id = started.json()["run"]["id"]

            # Down while the run's training task runs (or, on a fast machine, has just ended).
            task_id = wait_for(
                lambda: (_get(api, f"/v1/loops/runs/{run_id}") or {}).get("context", {}).get("task_id"),
                RUN_S,
                "the run's data and its training task",
            )
            before = wait_for(
                lambda: (t := _get(api, f"/v1/tasks/{task_id}")) and t["state"] not in ("CREATED", "QUEUED") and t,
                RUN_S,
                "the training task's job",
            )
        assert aip("down").returncode == 0
        again = aip("up")
        assert again.returncode == 0, again.stderr[-3000:]

        with _api(url, tmp_path) as api:

            def ended() -> dict[str, Any] | None:
                run = _get(api, f"/v1/loops/runs/{run_id}")
                return run if run is not None and run["finished_at"] is not None else None

            run = wait_for(ended, RUN_S, "the run's end after `aip up`")
            steps = [s["step"] for s in run["steps"]]
            assert run["state"] == "promoted", run
            assert steps == ["triggered", "data", "train", "gate", "canary", "decide"]  # each step once
            train = run["steps"][2]
            assert train["task_id"] == task_id  # the engine followed its recorded task
            task = _get(api, f"/v1/tasks/{task_id}")
            assert task is not None and task["state"] == "SUCCEEDED", task
            if before["state"] == "RUNNING":  # its Ray job went with the cluster: queued again, once
                assert task["attempts"] == 2, task
            candidate = int(train["version"])
            versions = _get(api, f"/v1/models/{MODEL}")
            assert versions is not None and sorted(v["version"] for v in versions["versions"]) == sorted(
                {production, candidate}
            )  # no second training registered a second candidate
            assert versions["aliases"]["production"] == candidate
            lineage = _get(api, f"/v1/models/{MODEL}/versions/{candidate}/lineage")
            assert lineage is not None
            link = lineage["lineage"][0]["loop"]
            assert link["run"] == run_id and link["trigger"]["kind"] == "manual"
            assert link["decision"]["outcome"] == "promoted" and link["url"] == f"/v1/loops/runs/{run_id}"
            assert lineage["lineage"][0]["task_id"] == task_id
