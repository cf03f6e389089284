"""Users' own training code as tasks, on the session's Ray with the platform's scheduler and
gateway: the example project through the API, run again by its digest, served on ONNX Runtime
with the PyTorch model's answers; and broken code failing with the user's own error. (`ray job
submit --working-dir` with that project runs against `aip up` in tests/e2e/test_aip_cli.py.)"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray.train
import torch

from aiplatform.code_archives import pack_directory
from aiplatform.datasets import DatasetManager
from aiplatform.errors import AIPError, Forbidden
from aiplatform.registry import RegistryClient
from aiplatform.storage import sha256_bytes, storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import FAILED, SUCCEEDED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.training.user_code import UserCodeParams, run_user_code
from tests.factories import make_digit_images, platform_settings, wait_for_task

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-mlp"
ENTRY = "digits_mlp.train:train_loop"
SMALL = {"dataset": "mnist", "max_rows": 1200}


@pytest.fixture(scope="module")
def platform(shared_platform: dict[str, Any]) -> dict[str, Any]:
    # Authentication off turns users' code off unless it is set on: the shared platform sets it on.
    assert shared_platform["settings"].user_code
    return shared_platform


def _finished(platform: dict[str, Any], task_id: str) -> Any:
    done = wait_for_task(platform["queue"], task_id, lambda t: t.finished, timeout_s=300)
    return done


def _logs(client: httpx.Client, task_id: str) -> str:
    return client.get(f"/v1/tasks/{task_id}/logs").json().get("logs", "")


def test_the_example_project_trains_registers_its_code_serves_as_onnx_and_runs_again(platform: dict[str, Any]) -> None:
    archive = pack_directory(EXAMPLE)
    with httpx.Client(base_url=platform["url"], timeout=120) as client:
        uploaded = client.post("/v1/code", content=archive, headers={"Content-Type": "application/zip"})
        assert uploaded.status_code == 201, uploaded.text
        digest = uploaded.json()["digest"]
        assert digest == sha256_bytes(archive) and uploaded.json()["files"] >= 4
        assert "digits_mlp/train.py" in client.get(f"/v1/code/{digest}").json()["members"]
        created = client.post(
            "/v1/tasks",
            json={
                "template": "user-code",
                "model_name": "api-mlp",
                "start": True,
                "params": {"entry": ENTRY, "code": digest, **SMALL, "config": {"epochs": 2, "hidden": 32}},
            },
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        done = _finished(platform, task_id)
        assert done.state == SUCCEEDED, (done.error, _logs(client, task_id)[-3000:])
        history = client.get(f"/v1/tasks/{task_id}/metrics").json()["history"]
        assert [m["epoch"] for m in history] == [1, 2] and all(0 <= m["val_accuracy"] <= 1 for m in history)
        assert done.progress["epochs"] == 2 and done.result["code_digest"] == digest

        version = RegistryClient.connect(platform["settings"]).get_version("api-mlp", done.result["version"])
        assert version.template == "user-code"
        assert {k: version.lineage[k] for k in ("method", "task_id", "code_digest", "entry")} == {
            "method": "sdk",
            "task_id": task_id,
            "code_digest": digest,
            "entry": ENTRY,
        }
        assert version.lineage["dataset"] == done.result["dataset"]
        assert version.metrics["val_accuracy"] == pytest.approx(history[-1]["val_accuracy"])

        # Served on ONNX Runtime with the answers of the PyTorch model the function trained.
        sys.path.insert(0, str(EXAMPLE))
        try:
            from digits_mlp.model import DigitsMLP
        finally:
            sys.path.remove(str(EXAMPLE))
        storage = storage_from_settings(platform["settings"])
        checkpoint = ray.train.Checkpoint(done.result["checkpoint"], filesystem=storage.arrow_filesystem())
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "user_state.pt", weights_only=True)
        net = DigitsMLP(784, 32, 10)
        net.load_state_dict(state["model"])
        images, _ = make_digit_images(4, seed=5)
        with torch.inference_mode():
            expected = torch.softmax(net(torch.from_numpy(images).float().div(255).unsqueeze(1)), dim=1).numpy()
        meta = client.get(f"/v2/models/api-mlp/versions/{version.version}").json()
        assert meta["platform"] == "onnxruntime_onnx"
        infer = client.post(
            f"/v2/models/api-mlp/versions/{version.version}/infer",
            json={
                "inputs": [
                    {"name": "input", "shape": [4, 28, 28], "datatype": "UINT8", "data": images.reshape(-1).tolist()}
                ]
            },
        )
        assert infer.status_code == 200, infer.text
        np.testing.assert_allclose(np.array(infer.json()["outputs"][0]["data"]).reshape(4, 10), expected, atol=1e-4)

        # Run again: exactly the same code (by digest), parameters and model name (created here
        # without starting: what it would run is what just ran).
        again = client.post(f"/v1/tasks/{task_id}/rerun", json={"start": False})
        assert again.status_code == 201, again.text
        rerun = again.json()
        assert (rerun["rerun_of"], rerun["state"], rerun["model_name"]) == (task_id, "CREATED", "api-mlp")
        assert rerun["params"] == done.params and rerun["params"]["code"] == digest

        # What a task may not name.
        for params, status, message in [
            ({"entry": ENTRY, "code": "f" * 64}, 404, "Code archive f+ not found"),
            ({"entry": "digits_mlp/train.py", "code": digest}, 400, "package.module:function"),
        ]:
            refused = client.post("/v1/tasks", json={"template": "user-code", "params": params})
            assert refused.status_code == status and message.split(" f+")[0] in refused.json()["message"], refused.text
        for body, headers, message in [
            (b"PK\x03\x04 not really", {"Content-Type": "application/zip"}, "not a ZIP file"),
            (archive, {"Content-Type": "text/plain"}, "Content-Type application/zip"),
        ]:
            bad = client.post("/v1/code", content=body, headers=headers)
            assert bad.status_code == 400 and message in bad.json()["message"], bad.text


BROKEN = {
    "broken/__init__.py": "",
    "broken/train.py": textwrap.dedent("""
        from aiplatform import sdk

        def raises(config):
            sdk.report({"loss": 1.0})
            raise ValueError("the learning rate must be positive, got " + str(config["lr"]))

        def silent(config):
            return None

        def unexportable(config):
            import torch
            class Strange(torch.nn.Module):
                def forward(self, x):
                    return torch.from_numpy(x.numpy().reshape(len(x), -1)[:, :3] * 2)
            sdk.report({"loss": 1.0})
            sdk.publish(Strange(), kind="image", labels=["a", "b", "c"], example_input=torch.rand(2, 1, 28, 28))
    """),
}


def test_broken_user_code_fails_its_task_with_the_users_error(platform: dict[str, Any], tmp_path: Path) -> None:
    for name, text in BROKEN.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with httpx.Client(base_url=platform["url"], timeout=120) as client:
        digest = client.post(
            "/v1/code", content=pack_directory(tmp_path), headers={"Content-Type": "application/zip"}
        ).json()["digest"]
        # A module the archive lacks is refused when the task is created, before any job starts.
        missing = client.post(
            "/v1/tasks",
            json={
                "template": "user-code",
                "params": {"entry": "broken.missing:fn", "code": digest, "dataset": "mnist"},
            },
        )
        assert missing.status_code == 400 and "module 'broken.missing' is not in code archive" in missing.text, (
            missing.text
        )
        # Raising: the task fails with the user's error in one line, the whole story in its log.
        created = client.post(
            "/v1/tasks",
            json={
                "template": "user-code",
                "start": True,
                "params": {
                    "entry": "broken.train:raises",
                    "code": digest,
                    "dataset": "mnist",
                    "max_rows": 300,
                    "max_failures": 0,
                    "config": {"lr": -1},
                },
            },
        )
        assert created.status_code == 201, created.text
        # While its job runs: returning without a report, or a model ONNX cannot export, run as
        # that task's job runs them (run_user_code), here rather than as two more jobs.
        settings = platform["settings"]
        storage = storage_from_settings(settings)
        for entry, message in [
            ("broken.train:silent", "returned without reporting"),
            ("broken.train:unexportable", "does not export to ONNX"),
        ]:
            params = UserCodeParams(
                entry=entry, code=digest, dataset="mnist", max_rows=300, max_failures=0, config={"lr": -1}
            )
            with pytest.raises(AIPError, match=message) as failed:
                run_user_code(
                    params,
                    settings=settings,
                    storage=storage,
                    datasets=DatasetManager(storage),
                    run_name=f"broken-{entry.rsplit(':', 1)[1]}",
                    task_id=None,
                    model_name="broken",
                )
            assert "\n" not in failed.value.message, failed.value.message
        done = _finished(platform, created.json()["id"])
        message = "ValueError: the learning rate must be positive, got -1 (train.py:6)"
        assert done.state == FAILED and message in (done.error or ""), done.error
        assert "\n" not in done.error.split("error: ")[-1], done.error  # one line: the reason
        assert "Traceback" in _logs(client, done.id)
        assert client.get("/v1/models/broken").status_code == 404  # nothing half-registered


def test_a_platform_that_does_not_run_callers_code_refuses_the_template(ray_session: None, tmp_path: Path) -> None:
    with platform_settings(tmp_path, "nocode", user_code=False) as settings:
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        with pytest.raises(Forbidden, match="AIP_USER_CODE=false"):
            manager.create("user-code", {"entry": ENTRY})
