"""Users' own code under attack (docs/SECURITY.md): archives with forged member names, entries
that name code outside their archive, an archive that is small to send and large to check, and
a platform with authentication off, where users' code is off unless its operator turns it on
(that platform's API runs without Serve: its access rules are what is under test)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiplatform.code_archives import CodeArchives
from aiplatform.storage import sha256_bytes, storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import FAILED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from tests.factories import TINY_CNN_PARAMS, platform_settings, wait_for_task
from tests.hostile import GOOD, refused

ZIP = {"Content-Type": "application/zip"}
OWN_CODE = {"users_pkg/__init__.py": b"", "users_pkg/train.py": b"def train_loop(config):\n    return config\n"}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def own_code(platform: dict[str, Any]) -> str:
    """The digest of a small project uploaded to the hostile platform."""
    uploaded = platform["api"].post("/v1/code", content=_zip(OWN_CODE), headers=ZIP)
    assert uploaded.status_code == 201, uploaded.text
    return str(uploaded.json()["digest"])


@pytest.mark.parametrize(
    "name",
    [
        "users_pkg/evil\n.py",
        "users_pkg/forged\r\nINFO all good.py",
        "users_pkg/\x1b[2Khidden.py",
        "users_pkg/\u202eyp.txt",
    ],
)
def test_member_names_with_control_characters_are_refused_by_their_escaped_name(
    platform: dict[str, Any], name: str
) -> None:
    archive = _zip({**OWN_CODE, name: b"x = 1\n"})
    body = refused(
        platform, "POST", "/v1/code", 400, "has a control character in its name", content=archive, headers=ZIP
    )
    assert repr(name) in body["message"] and "\n" not in body["message"] and "\x1b" not in body["message"]
    assert platform["api"].get(f"/v1/code/{sha256_bytes(archive)}").status_code == 404  # not kept


@pytest.mark.parametrize(
    "params, message",
    [
        ({"entry": "subprocess:run", "config": {"/bin/sh": 1, "-c": 1, "id": 1}}, "code: Field required"),
        ({"entry": "users_pkg.train:train_loop"}, "code: Field required"),
        ({"entry": "subprocess:run", "code": "OWN"}, "module 'subprocess' is Python's own"),
        ({"entry": "aiplatform.sdk:publish", "code": "OWN"}, "module 'aiplatform.sdk' is not in code archive"),
        ({"entry": "users_pkg.missing:fn", "code": "OWN"}, "module 'users_pkg.missing' is not in code archive"),
    ],
)
def test_a_user_code_task_names_an_entry_of_its_own_archive(
    platform: dict[str, Any], own_code: str, params: dict[str, Any], message: str
) -> None:
    params = {**params, **({"code": own_code} if params.get("code") == "OWN" else {})}
    refused(
        platform, "POST", "/v1/tasks", 400, message, json={"template": "user-code", "params": params, "start": True}
    )
    sweep = {
        "template": "user-code",
        "params": params,
        "metric": "val_accuracy",
        "mode": "max",
        "trials": 2,
        "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}},
        "scheduler": {"type": "none"},
    }
    refused(platform, "POST", "/v1/sweeps", 400, message, json=sweep)


def _inflating_archive(megabytes: int) -> bytes:
    """~1 KiB per MiB it unpacks to: members of 1 MiB of zeros, each under the ZIP-bomb ratio
    check (it looks at members over 1 MiB), so each check decompresses all of it."""
    members = {"heavy_pkg/__init__.py": b"def fn(config):\n    pass\n"}
    members.update({f"heavy_pkg/blob{index:03d}.bin": b"\0" * 2**20 for index in range(megabytes - 1)})
    return _zip(members)


def test_an_archive_small_to_send_and_large_to_check(platform: dict[str, Any]) -> None:
    """280 KiB that unpack to 255 MiB, kept by another replica (this one has not checked it): tasks
    naming a module it lacks are refused after its check, several at once, while the replica keeps
    answering predictions; describing it lists it (checked once per digest, off the event loop:
    tests/unit/test_code_archives.py)."""
    data = _inflating_archive(255)
    assert len(data) < 300 * 1024
    digest = sha256_bytes(data)
    storage_from_settings(platform["settings"]).put_bytes(f"code/{digest}.zip", data)
    api = platform["api"]
    task = {"template": "user-code", "params": {"entry": "heavy_pkg.missing:fn", "code": digest}}
    with ThreadPoolExecutor(4) as pool:
        creations = [pool.submit(api.post, "/v1/tasks", json=task) for _ in range(3)]
        predictions = [pool.submit(api.post, "/v1/models/probe/predict", json=GOOD) for _ in range(3)]
        assert all(p.result().status_code == 200 for p in predictions)
        for answer in (c.result() for c in creations):
            assert (
                answer.status_code == 400
                and "module 'heavy_pkg.missing' is not in code archive" in answer.json()["message"]
            ), answer.text
    refused(platform, "POST", "/v1/tasks", 400, "is not in code archive", json=task)
    described = [api.get(f"/v1/code/{digest}").json() for _ in range(3)]
    assert described[0] == described[-1] and described[0]["files"] == 255 and described[0]["truncated"] is False


# -- authentication off ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A platform with AIP_API_AUTH=off and AIP_USER_CODE unset (its REST API in this process,
    its scheduler and head actors on the session's Ray), and a task manager of the same platform
    as it was while users' code was on (what tasks created then look like)."""
    from aiplatform.api.app import create_api_app
    from aiplatform.api.deps import Platform, set_platform

    with platform_settings(tmp_path_factory.mktemp("authoff"), "authoff", task_poll_interval_s=0.5) as settings:
        assert settings.api_auth == "off" and settings.user_code is False
        app = create_api_app()
        set_platform(app, Platform.connect(settings, warm=lambda _: None))
        was_on = settings.model_copy(update={"user_code": True})
        storage = storage_from_settings(settings)
        earlier = TaskManager(TaskClient.connect(settings), RayJobs(settings), was_on, storage=storage)
        code = CodeArchives(storage).put(_zip(OWN_CODE)).digest
        with TestClient(app, base_url="http://127.0.0.1") as api:
            yield {
                "api": api,
                "settings": settings,
                "earlier": earlier,
                "code": code,
                "queue": TaskClient.connect(settings),
            }


def _refused_open(open_platform: dict[str, Any], method: str, path: str, message: str, **request: Any) -> str:
    """403 naming AIP_USER_CODE, the API still answering, no task created."""
    api, before = open_platform["api"], open_platform["queue"].counts()
    answer = api.request(method, path, **request)
    assert answer.status_code == 403 and message in answer.json()["message"], answer.text
    assert "AIP_USER_CODE" in answer.json()["message"]
    assert api.get("/v1/templates").status_code == 200
    assert open_platform["queue"].counts() == before
    return str(answer.json()["message"])


def test_with_authentication_off_callers_code_is_refused_unless_set_on(open_platform: dict[str, Any]) -> None:
    code, user_task = open_platform["code"], {"entry": "users_pkg.train:train_loop"}
    message = _refused_open(
        open_platform,
        "POST",
        "/v1/code",
        "POST /v1/code keeps code for user-code tasks",
        content=_zip(OWN_CODE),
        headers=ZIP,
    )
    assert "AIP_API_AUTH=off" in message and "AIP_USER_CODE=true" in message
    _refused_open(
        open_platform,
        "POST",
        "/v1/tasks",
        "Template 'user-code' runs the caller's own code",
        json={"template": "user-code", "params": {**user_task, "code": code}, "start": True},
    )
    _refused_open(
        open_platform,
        "POST",
        "/v1/sweeps",
        "Its trials run the caller's own code",
        json={
            "template": "user-code",
            "params": {**user_task, "code": code, "config": {"epochs": 1}},
            "metric": "val_accuracy",
            "mode": "max",
            "trials": 2,
            "scheduler": {"type": "none"},
            "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}},
        },
    )
    # The platform's own templates still train with authentication off.
    trains = open_platform["api"].post("/v1/tasks", json={"template": "cnn-classification", "params": TINY_CNN_PARAMS})
    assert trains.status_code == 201, trains.text


def test_tasks_created_while_users_code_was_on_do_not_run_after_it_is_off(open_platform: dict[str, Any]) -> None:
    earlier, code, queue = open_platform["earlier"], open_platform["code"], open_platform["queue"]
    params = {"entry": "users_pkg.train:train_loop", "code": code, "dataset": "mnist", "max_rows": 100}
    created = earlier.create("user-code", params)
    _refused_open(open_platform, "POST", f"/v1/tasks/{created.id}/start", f"Task {created.id} (template 'user-code')")
    assert queue.get(created.id).state == "CREATED"
    sweep = earlier.create(
        "sweep",
        {
            "template": "user-code",
            "params": {**params, "config": {"epochs": 1}},
            "metric": "val_accuracy",
            "mode": "max",
            "trials": 2,
            "scheduler": {"type": "none"},
            "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}},
        },
    )
    _refused_open(open_platform, "POST", f"/v1/sweeps/{sweep.id}/resume", f"Task {sweep.id} (template 'sweep')")
    _refused_open(
        open_platform,
        "POST",
        f"/v1/sweeps/{sweep.id}/extend",
        f"Task {sweep.id} (template 'sweep')",
        json={"trials": 1},
    )
    # Queued while it was on: the scheduler fails it without starting a job.
    queued = earlier.create("user-code", params, start=True)
    done = wait_for_task(queue, queued.id, lambda t: t.finished, timeout_s=120)
    assert (done.state, done.error_reason, done.ray_job_id) == (FAILED, "user_code_off", None), done
    assert "AIP_USER_CODE" in (done.error or "")


def test_a_job_that_starts_anyway_fails_naming_the_setting(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job reads the settings it is given (the task manager's, as AIP_* variables), not the
    moment its task was created. (A platform of its own, with no scheduler to race the job.)"""
    from jobs.train import main

    with platform_settings(tmp_path, "authoffjob") as settings:
        storage = storage_from_settings(settings)
        queue = TaskClient.connect(settings)
        earlier = TaskManager(
            queue, RayJobs(settings), settings.model_copy(update={"user_code": True}), storage=storage
        )
        params = {
            "entry": "users_pkg.train:train_loop",
            "code": CodeArchives(storage).put(_zip(OWN_CODE)).digest,
            "dataset": "mnist",
            "max_rows": 100,
        }
        task = earlier.create("user-code", params, start=True)
        queue.claim(task.id, f"aip-task-{task.id}-1")  # as the scheduler does before it submits the job
        for name, value in settings.to_env().items():
            monkeypatch.setenv(name, value)
        assert main(["--task-id", task.id]) == 2
        assert "AIP_USER_CODE" in capsys.readouterr().err
        failed = queue.get(task.id)
        assert (
            failed.state == FAILED
            and f"Task {task.id} (template 'user-code') runs the caller's own code" in (failed.error or "")
            and "AIP_USER_CODE" in (failed.error or "")
        ), failed
