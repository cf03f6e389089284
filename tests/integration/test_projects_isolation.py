"""Projects on a real platform, over real HTTP: a member of project A sees A's tasks, sweeps and
models and nothing of B's (404 by id and by name, absent from listings and counts), a viewer of B
reads B but creates nothing there, a service key of B calls B's model with no project named (as a
standard OIP client does), and the bootstrap token sees every project it names. A job submitted
straight to Ray (as ``ray job submit`` does) with a member's key of B registers its model, task and
dataset in B; without a key it registers nothing and its log says why."""

from __future__ import annotations

import shlex
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from aiplatform.settings import Settings
from tests.factories import (
    TINY_CNN_PARAMS,
    platform_settings,
    register_versions,
    served_grpc_address,
    served_platform,
    wait_for,
)

TOKEN = "bootstrap-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = np.zeros((8, 8, 1), dtype=int).tolist()
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "UINT8", "data": [0] * 64}]}


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    from aiplatform.registry import RegistryClient

    with platform_settings(tmp_path_factory.mktemp("projects"), "projects", api_token=TOKEN) as settings:
        registry = RegistryClient.connect(settings)
        for name, project in (("model-a", "a"), ("model-b", "b")):
            registry.claim_model(name, project)  # as a task of the project does when it is created
            register_versions(settings, name, count=1)
        with served_platform(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client, settings


def _user(client: httpx.Client, name: str, project: str, role: str, **key: Any) -> dict[str, str]:
    """A user with ``role`` in ``project`` only (none in default) and a key of theirs."""
    assert client.post("/v1/users", json={"name": name}, headers=ADMIN).status_code == 201
    assert client.delete(f"/v1/projects/default/members/{name}", headers=ADMIN).status_code == 200
    added = client.put(f"/v1/projects/{project}/members/{name}", json={"role": role}, headers=ADMIN)
    assert added.status_code == 200, added.text
    made = client.post(f"/v1/users/{name}/keys", json={"name": "main", "project": project, **key}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def _task(client: httpx.Client, project: str, **extra: Any) -> httpx.Response:
    body = {"template": "cnn-classification", "params": TINY_CNN_PARAMS, "start": False, **extra}
    return client.post("/v1/tasks", json=body, headers={**ADMIN, "X-AIP-Project": project})


def test_each_project_sees_only_its_own(platform: tuple[httpx.Client, Settings]) -> None:
    client, _ = platform
    for project in ("a", "b"):
        assert client.post("/v1/projects", json={"name": project}, headers=ADMIN).status_code == 201
    task_a = _task(client, "a", model_name="model-a").json()
    task_b = _task(client, "b", model_name="model-b").json()
    assert (task_a["project"], task_b["project"]) == ("a", "b")
    taken = _task(client, "b", model_name="model-a")
    assert taken.status_code == 409 and "belongs to another project" in taken.json()["message"]
    ann = _user(client, "ann", "a", "member")
    vic = _user(client, "vic", "b", "viewer")

    # ann, member of a (her key's project): a's tasks and models, nothing of b's
    listed = client.get("/v1/tasks", headers=ann).json()
    assert [t["id"] for t in listed["tasks"]] == [task_a["id"]]
    assert listed["counts"]["total"] == 1
    assert client.get("/v1/tasks/counts", headers=ann).json()["total"] == 1
    assert client.get(f"/v1/tasks/{task_a['id']}", headers=ann).status_code == 200
    for path in (f"/v1/tasks/{task_b['id']}", f"/v1/tasks/{task_b['id']}/logs", f"/v1/sweeps/{task_b['id']}"):
        hidden = client.get(path, headers=ann)
        assert hidden.status_code == 404 and task_b["id"] in hidden.json()["message"], (path, hidden.text)
    assert client.post(f"/v1/tasks/{task_b['id']}/cancel", headers=ann).status_code == 404
    assert client.post("/v1/runs/compare", json={"ids": [task_b["id"]]}, headers=ann).status_code == 404
    assert [m["name"] for m in client.get("/v1/models", headers=ann).json()["models"]] == ["model-a"]
    for path in ("/v1/models/model-b", "/v1/models/model-b/versions/1", "/v2/models/model-b"):
        hidden = client.get(path, headers={**ann, "X-AIP-Project": "a"})
        assert hidden.status_code == 404, (path, hidden.text)
    assert client.post("/v1/models/model-b/predict", json={"array": IMAGE}, headers=ann).status_code == 404
    assert client.post("/v1/models/model-a/predict", json={"array": IMAGE}, headers=ann).status_code == 200
    other = client.get("/v1/tasks", headers={**ann, "X-AIP-Project": "b"})
    assert other.status_code == 404 and "Project 'b' not found" in other.json()["message"]
    assert client.get("/v1/tasks", headers={**ann, "X-AIP-Project": "default"}).status_code == 404
    assert (
        client.post(
            "/v1/tasks", json={"template": "cnn-classification", "params": TINY_CNN_PARAMS}, headers=ann
        ).json()["project"]
        == "a"
    )

    # vic, viewer of b: reads b, creates nothing, predicts nothing
    assert [t["id"] for t in client.get("/v1/tasks", headers=vic).json()["tasks"]] == [task_b["id"]]
    assert client.get("/v1/models/model-b", headers=vic).status_code == 200
    assert [m["name"] for m in client.get("/v1/models", headers=vic).json()["models"]] == ["model-b"]
    refused = client.post("/v1/tasks", json={"template": "cnn-classification", "params": TINY_CNN_PARAMS}, headers=vic)
    assert refused.status_code == 403 and "project 'b'" in refused.json()["message"]
    assert client.post("/v1/models/model-b/predict", json={"array": IMAGE}, headers=vic).status_code == 403
    assert client.get("/v1/models/model-a", headers=vic).status_code == 404

    # a service key of b: its model by name alone (an unchanged OIP client), nothing else
    service = client.post(
        "/v1/users/vic/keys", json={"name": "app", "project": "b", "models": ["model-b", "model-a"]}, headers=ADMIN
    ).json()["secret"]
    app = {"Authorization": f"Bearer {service}"}
    assert client.post("/v2/models/model-b/infer", json=V2_BODY, headers=app).status_code == 200
    assert client.post("/v2/models/model-a/infer", json=V2_BODY, headers=app).status_code == 404
    import tritonclient.grpc as oip
    from tritonclient.utils import InferenceServerException

    grpc = oip.InferenceServerClient(url=served_grpc_address())
    tensor = oip.InferInput("input", [1, 8, 8], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8), dtype=np.uint8))
    assert grpc.infer("model-b", [tensor], headers={"authorization": app["Authorization"]}) is not None
    for caller, model in ((app, "model-a"), (ann, "model-b")):
        with pytest.raises(InferenceServerException) as hidden:
            grpc.infer(model, [tensor], headers={"authorization": caller["Authorization"]})
        assert hidden.value.status() == "StatusCode.NOT_FOUND", (model, hidden.value)

    # the bootstrap token: default when it names nothing, any project it names
    default_ids = {t["id"] for t in client.get("/v1/tasks", headers=ADMIN).json()["tasks"]}
    assert not default_ids & {task_a["id"], task_b["id"]}
    in_b = client.get("/v1/tasks", headers={**ADMIN, "X-AIP-Project": "b"}).json()["tasks"]
    assert [t["id"] for t in in_b] == [task_b["id"]]
    assert client.get("/v1/models/model-b", headers=ADMIN).status_code == 200
    assert client.get("/v1/tasks", headers={**ADMIN, "X-AIP-Project": "nope"}).status_code == 404


SDK_SCRIPT = """
import torch
from aiplatform import sdk
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
sdk.publish(model, name="{name}", kind="image", labels=["a", "b"], example_input=torch.rand(2, 1, 8, 8))
"""


def _submit_straight(settings: Settings, model: str, key: str | None, *, script: bool = False) -> tuple[str, str]:
    """``ray job submit -- python -m jobs.train ...`` (or a script of one's own that publishes
    through the SDK) through Ray's job API, the platform's settings in its runtime environment
    and ``key`` as ``AIP_API_TOKEN``: (status, log)."""
    from ray.job_submission import JobSubmissionClient

    from aiplatform.runtime import ray_env_passthrough, storage_credentials_env
    from aiplatform.tasks.ray_jobs import dashboard_url

    env = {**ray_env_passthrough(), **settings.to_env(), **storage_credentials_env(settings)}
    if key is not None:
        env["AIP_API_TOKEN"] = key
    args = "--template tabular-classification --dataset penguins --max-rows 60 --param num_boost_round=5"
    command = (
        f"-c {shlex.quote(SDK_SCRIPT.format(name=model))}" if script else f"-m jobs.train {args} --model-name {model}"
    )
    client = JobSubmissionClient(dashboard_url(settings))
    job = client.submit_job(
        entrypoint=f"{shlex.quote(sys.executable)} {command}",
        runtime_env={"env_vars": env},
        entrypoint_num_cpus=0,
    )
    status = wait_for(
        lambda: (s := str(client.get_job_status(job))) in ("SUCCEEDED", "FAILED", "STOPPED") and s,
        timeout_s=600,
        what=f"job {job} to end",
    )
    return status, client.get_job_logs(job)


def test_a_job_submitted_straight_to_ray_registers_in_its_keys_project(
    platform: tuple[httpx.Client, Settings],
) -> None:
    client, settings = platform
    assert client.post("/v1/projects", json={"name": "b"}, headers=ADMIN).status_code in (201, 409)
    bea = _user(client, "bea", "b", "member")
    in_default = {**ADMIN, "X-AIP-Project": "default"}

    status, log = _submit_straight(settings, "straight-nokey", None)
    assert status == "FAILED" and "carries no platform key, so it registers nothing" in log, log[-2000:]
    assert "AIP_API_TOKEN" in log
    assert client.get("/v1/models/straight-nokey", headers=ADMIN).status_code == 404
    assert not [t for t in client.get("/v1/tasks", headers=in_default).json()["tasks"] if t["source"] == "ray-job"]

    bea_key = bea["Authorization"].split()[-1]
    status, log = _submit_straight(settings, "straight-b", bea_key)
    assert status == "SUCCEEDED", log[-3000:]
    model = client.get("/v1/models/straight-b", headers=bea)
    assert model.status_code == 200, model.text
    assert [m["name"] for m in client.get("/v1/models", headers=in_default).json()["models"]].count("straight-b") == 0
    runs = [t for t in client.get("/v1/tasks", headers=bea).json()["tasks"] if t["source"] == "ray-job"]
    assert [(t["project"], t["model_name"], t["state"]) for t in runs] == [("b", "straight-b", "SUCCEEDED")]

    # a script of one's own publishing through the SDK: b with bea's key, nothing without
    status, log = _submit_straight(settings, "script-b", bea_key, script=True)
    assert status == "SUCCEEDED", log[-3000:]
    assert client.get("/v1/models/script-b", headers=bea).status_code == 200
    assert "script-b" not in [m["name"] for m in client.get("/v1/models", headers=in_default).json()["models"]]

    # its dataset was built in b: listed there, not in default, and a 404 by name there
    datasets = client.get("/v1/datasets", headers=bea).json()["datasets"]
    assert [d["name"] for d in datasets] == ["penguins"]
    name, version = datasets[0]["name"], datasets[0]["version"]
    assert client.get(f"/v1/datasets/{name}/{version}", headers=bea).status_code == 200
    assert client.get("/v1/datasets", headers=in_default).json()["datasets"] == []
    assert client.get(f"/v1/datasets/{name}/{version}", headers=in_default).status_code == 404
    assert client.get(f"/v1/analysis/datasets/{name}/{version}", headers=bea).status_code == 200
    assert client.get(f"/v1/analysis/datasets/{name}/{version}", headers=in_default).status_code == 404
    # a code archive of b is b's alone
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bcode/train.py", "def train(config):\n    pass\n")
    made = client.post("/v1/code", content=buffer.getvalue(), headers={**bea, "Content-Type": "application/zip"})
    assert made.status_code == 201, made.text
    assert client.get(f"/v1/code/{made.json()['digest']}", headers=bea).status_code == 200
    assert client.get(f"/v1/code/{made.json()['digest']}", headers=in_default).status_code == 404
