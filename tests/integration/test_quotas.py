"""Project quotas on a real platform (the served API and the real scheduler actor, real Ray
jobs): a task past its project's CPU quota waits saying so and starts when the running one ends,
the queued-task quota refuses a creation with 409 and stores nothing, as does a task needing more
than the whole quota, a quota below what runs is refused naming the task, members read the quota
and only platform admins set it, by API and CLI; every start is in the admission record with the quota it was checked against."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aiplatform.access.quotas import QuotaStore
from aiplatform.settings import Settings
from tests.factories import TINY_CNN_PARAMS, platform_settings, served_platform, wait_for

TOKEN = "bootstrap-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
IN_QA = {**ADMIN, "X-AIP-Project": "qa"}


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    home = tmp_path_factory.mktemp("quotas")
    # two tasks at once, so that only the project's quota holds the second one back
    with platform_settings(home, "quotas", api_token=TOKEN, task_max_running=2, task_poll_interval_s=0.5) as settings:
        with served_platform(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client, settings


def _task(client: httpx.Client, **params: Any) -> httpx.Response:
    body = {"template": "cnn-classification", "params": {**TINY_CNN_PARAMS, **params}, "start": True}
    return client.post("/v1/tasks", json=body, headers=IN_QA)


def _state(client: httpx.Client, task_id: str) -> dict[str, Any]:
    return client.get(f"/v1/tasks/{task_id}", headers=IN_QA).json()  # type: ignore[no-any-return]


def test_a_task_past_its_projects_quota_waits_and_starts_when_the_other_ends(
    platform: tuple[httpx.Client, Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, settings = platform
    assert client.post("/v1/projects", json={"name": "qa"}, headers=ADMIN).status_code == 201
    assert client.get("/v1/projects/qa/quota", headers=ADMIN).json()["cpus"] is None  # none set: unlimited
    quota = client.put("/v1/projects/qa/quota", json={"cpus": 0.5, "queued": 1}, headers=ADMIN)
    assert quota.status_code == 200 and quota.json()["weight"] == 1, quota.text

    # a member reads it; only a platform admin sets it; an unknown project is a 404
    assert client.post("/v1/users", json={"name": "mia"}, headers=ADMIN).status_code == 201
    assert client.put("/v1/projects/qa/members/mia", json={"role": "maintainer"}, headers=ADMIN).status_code == 200
    made = client.post("/v1/users/mia/keys", json={"name": "main", "project": "qa"}, headers=ADMIN)
    mia = {"Authorization": f"Bearer {made.json()['secret']}"}
    assert client.get("/v1/projects/qa/quota", headers=mia).json()["cpus"] == 0.5
    refused = client.put("/v1/projects/qa/quota", json={"cpus": 100}, headers=mia)
    assert refused.status_code == 403, refused.text
    missing = client.put("/v1/projects/nope/quota", json={"cpus": 1}, headers=ADMIN)
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    assert client.put("/v1/projects/qa/quota", json={"cpus": -1}, headers=ADMIN).status_code == 400
    # a task needing more than the whole quota could never start: refused at creation, naming it
    over = _task(client, workers=2)
    assert over.status_code == 409 and "more than its project's quota of 0.5 CPUs" in over.json()["message"], over.text

    # the first task takes the project's 0.5 CPU (one worker); the second waits and says why
    first = _task(client, epochs=50).json()  # long enough to be running while the checks below run
    wait_for(lambda: _state(client, first["id"])["state"] == "RUNNING", 120, "the first task to start")
    second = _task(client).json()
    waiting = wait_for(lambda: _state(client, second["id"])["waiting"], 30, "the second task's reason")
    assert waiting.startswith("project quota: 0.5 of 0.5 CPUs in use"), waiting
    assert _state(client, second["id"])["state"] == "QUEUED"

    # one queued already: a third is refused with 409 naming the quota, and nothing is stored
    counts = client.get("/v1/tasks/counts", headers=IN_QA).json()
    third = _task(client)
    assert third.status_code == 409 and "queued-task quota" in third.json()["message"], third.text
    assert client.get("/v1/tasks/counts", headers=IN_QA).json() == counts

    # a quota below what runs is refused naming the task; the quota stays
    below = client.put("/v1/projects/qa/quota", json={"cpus": 0, "queued": 1}, headers=ADMIN)
    assert below.status_code == 409 and first["id"] in below.json()["message"], below.text
    shown = client.get("/v1/projects/qa/quota", headers=ADMIN).json()
    assert shown["cpus"] == 0.5 and shown["in_use"] == {"cpus": 0.5, "gpus": 0.0, "queued": 1}

    # the CLI: show, set (fields not given stay), and a clear failure for an unknown project
    from aip.cli import main

    monkeypatch.setenv("AIP_HOME", str(settings.home))
    monkeypatch.setenv("AIP_API_URL", str(client.base_url).rstrip("/"))
    monkeypatch.setenv("AIP_API_TOKEN", TOKEN)
    monkeypatch.setenv("AIP_RAY_ADDRESS", "auto")  # so main() leaves this process's Ray environment alone
    assert main(["quotas", "show", "qa"]) == 0
    assert "cpus      0.5 in use of 0.5" in capsys.readouterr().out
    assert main(["quotas", "set", "qa", "--weight", "2"]) == 0
    out = capsys.readouterr().out
    assert "qa: weight 2" in out and "0.5 in use of 0.5" in out and "queued    1 of 1" in out
    assert main(["quotas", "set", "nope", "--cpus", "1"]) != 0
    assert "Project 'nope' not found" in capsys.readouterr().err

    # the first one ends: the second starts
    assert client.post(f"/v1/tasks/{first['id']}/cancel", headers=IN_QA).status_code == 200
    wait_for(lambda: _state(client, second["id"])["state"] != "QUEUED", 120, "the second task to start")
    admitted = QuotaStore.in_state_dir(settings.resolved_state_dir).admissions(project="qa")
    assert [(a.task_id, a.cpus, a.cpus_in_use, a.quota_cpus) for a in admitted] == [
        (first["id"], 0.5, 0.0, 0.5),
        (second["id"], 0.5, 0.0, 0.5),
    ]
    assert admitted[0].ended_at is not None and admitted[0].ended_at <= admitted[1].admitted_at
    client.post(f"/v1/tasks/{second['id']}/cancel", headers=IN_QA)
