"""Users' own training code as tasks, on the session's Ray with the platform's scheduler and
gateway: the example project through the API and through `ray job submit --working-dir`, run
again by its digest, served on ONNX Runtime with the PyTorch model's answers; and broken code
failing with the user's own error."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
import ray.train
import torch

from aiplatform.code_archives import pack_directory
from aiplatform.errors import Forbidden
from aiplatform.registry import RegistryClient
from aiplatform.settings import Settings
from aiplatform.storage import sha256_bytes, storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import FAILED, SUCCEEDED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import make_digit_images, platform_settings, served_platform, wait_for_task

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-mlp"
ENTRY = "digits_mlp.train:train_loop"
SMALL = {"dataset": "mnist", "max_rows": 1200}


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with platform_settings(tmp_path_factory.mktemp("usercode"), "usercode", task_poll_interval_s=0.5) as settings:
        ensure_scheduler(settings)
        with served_platform(settings) as url:
            yield {"settings": settings, "url": url, "queue": TaskClient.connect(settings)}


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
        created = client.post("/v1/tasks", json={
            "template": "user-code", "model_name": "api-mlp", "start": True,
            "params": {"entry": ENTRY, "code": digest, **SMALL, "config": {"epochs": 2, "hidden": 32}}})
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
            "method": "sdk", "task_id": task_id, "code_digest": digest, "entry": ENTRY}
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
        infer = client.post(f"/v2/models/api-mlp/versions/{version.version}/infer", json={"inputs": [
            {"name": "input", "shape": [4, 28, 28], "datatype": "UINT8", "data": images.reshape(-1).tolist()}]})
        assert infer.status_code == 200, infer.text
        np.testing.assert_allclose(np.array(infer.json()["outputs"][0]["data"]).reshape(4, 10), expected, atol=1e-4)

        # Run again: exactly the same code (by digest), parameters and model name.
        again = client.post(f"/v1/tasks/{task_id}/rerun")
        assert again.status_code == 201, again.text
        assert again.json()["rerun_of"] == task_id and again.json()["params"] == done.params
        rerun = _finished(platform, again.json()["id"])
        assert rerun.state == SUCCEEDED, (rerun.error, _logs(client, rerun.id)[-3000:])
        assert (rerun.result["model"], rerun.result["version"], rerun.result["code_digest"]) == ("api-mlp", 2, digest)

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


def test_ray_job_submit_with_a_working_dir_keeps_that_code_by_digest(platform: dict[str, Any]) -> None:
    settings: Settings = platform["settings"]
    jobs = RayJobs(settings)
    submission_id = f"usercode-{uuid.uuid4().hex[:8]}"
    jobs.client.submit_job(
        entrypoint=f"{sys.executable} -m jobs.train --entry {ENTRY} --dataset mnist --max-rows 600 "
        "--param epochs=1 --param hidden=16 --model-name job-mlp",
        submission_id=submission_id, entrypoint_num_cpus=0,
        runtime_env={"working_dir": str(EXAMPLE), "env_vars": {**settings.to_env(),
                                                                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
    )
    queue = platform["queue"]
    task = wait_for_task_by_job(queue, submission_id)
    done = _finished(platform, task.id)
    assert done.state == SUCCEEDED, (done.error, jobs.logs(submission_id)[-3000:])
    assert (done.source, done.template, done.result["model"]) == ("ray-job", "user-code", "job-mlp")
    # The uploaded folder is the example: the same files, so the same digest as packing it here.
    assert done.params["code"] == sha256_bytes(pack_directory(EXAMPLE)) == done.result["code_digest"]
    assert queue.metrics_history(done.id)


def wait_for_task_by_job(queue: TaskClient, submission_id: str) -> Any:
    from tests.factories import wait_for

    return wait_for(lambda: next((t for t in queue.list(template="user-code") if t.ray_job_id == submission_id), None),
                    120, f"the task of job {submission_id} (see its log: ray job logs {submission_id})")


BROKEN = {
    "broken/__init__.py": "",
    "broken/train.py": textwrap.dedent('''
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
    '''),
}


def test_broken_user_code_fails_its_task_with_the_users_error(platform: dict[str, Any], tmp_path: Path) -> None:
    for name, text in BROKEN.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with httpx.Client(base_url=platform["url"], timeout=120) as client:
        digest = client.post("/v1/code", content=pack_directory(tmp_path),
                             headers={"Content-Type": "application/zip"}).json()["digest"]
        # A module the archive lacks is refused when the task is created, before any job starts.
        missing = client.post("/v1/tasks", json={"template": "user-code", "params": {
            "entry": "broken.missing:fn", "code": digest, "dataset": "mnist"}})
        assert missing.status_code == 400 and "module 'broken.missing' is not in code archive" in missing.text, missing.text
        cases = [("broken.train:raises", "ValueError: the learning rate must be positive, got -1 (train.py:6)"),
                 ("broken.train:silent", "returned without reporting"),
                 ("broken.train:unexportable", "does not export to ONNX")]
        ids = {}
        for entry, _ in cases:
            created = client.post("/v1/tasks", json={"template": "user-code", "start": True, "params": {
                "entry": entry, "code": digest, "dataset": "mnist", "max_rows": 300, "max_failures": 0,
                "config": {"lr": -1}}})
            assert created.status_code == 201, created.text
            ids[entry] = created.json()["id"]
        for entry, message in cases:
            done = _finished(platform, ids[entry])
            assert done.state == FAILED and message in (done.error or ""), (entry, done.error)
            assert "\n" not in done.error.split("error: ")[-1], done.error  # one line: the reason
        assert "Traceback" in _logs(client, ids["broken.train:raises"])  # the whole story is in the log
        assert client.get("/v1/models/broken").status_code == 404  # nothing half-registered


def test_a_platform_that_does_not_run_callers_code_refuses_the_template(ray_session: None, tmp_path: Path) -> None:
    with platform_settings(tmp_path, "nocode", user_code=False) as settings:
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        with pytest.raises(Forbidden, match="AIP_USER_CODE=false"):
            manager.create("user-code", {"entry": ENTRY})
