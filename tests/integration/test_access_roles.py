"""Users, keys and roles on a real platform, over real HTTP and gRPC: each role may do what its
action needs and no more, a service key calls inference on its own models only, revoked keys are
refused, keys are kept only as their digest, and the audit log names who did what."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
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
ROOT = Path(__file__).resolve().parents[2]
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "UINT8", "data": [0] * 64}]}


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    with platform_settings(tmp_path_factory.mktemp("access"), "access", api_token=TOKEN) as settings:
        register_versions(settings, "alpha", count=2)
        register_versions(settings, "beta", count=1)
        with served_platform(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client, settings


def _bearer(client: httpx.Client, user: str, role: str, **key: Any) -> dict[str, str]:
    """A new user with ``role`` (made by the bootstrap token) and a new key of theirs."""
    assert client.post("/v1/users", json={"name": user, "role": role}, headers=ADMIN).status_code == 201
    made = client.post(f"/v1/users/{user}/keys", json={"name": "main", **key}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def test_each_role_does_what_its_actions_need(platform: tuple[httpx.Client, Settings]) -> None:
    client, _ = platform
    viewer = _bearer(client, "vera", "viewer")
    member = _bearer(client, "mia", "member")
    maintainer = _bearer(client, "max", "maintainer")

    assert client.get("/v1/models", headers=viewer).status_code == 200
    assert client.get("/v1/tasks", headers=viewer).status_code == 200
    task = {"template": "cnn-classification", "params": TINY_CNN_PARAMS, "start": False}
    refused = client.post("/v1/tasks", json=task, headers=viewer)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert "member" in refused.json()["message"]
    assert client.post("/v1/models/alpha/predict", json={"array": IMAGE}, headers=viewer).status_code == 403

    created = client.post("/v1/tasks", json=task, headers=member)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert client.post(f"/v1/tasks/{task_id}/start", headers=member).status_code == 200
    assert client.post(f"/v1/tasks/{task_id}/cancel", headers=member).status_code == 200
    assert client.post("/v1/models/alpha/predict", json={"array": IMAGE}, headers=member).status_code == 200
    promote = {"version": 2, "force": True}
    assert client.post("/v1/models/alpha/promote", json=promote, headers=member).status_code == 403
    promoted = client.post("/v1/models/alpha/promote", json=promote, headers=maintainer)
    assert promoted.status_code == 200, promoted.text
    assert client.get("/v1/models/alpha", headers=viewer).json()["aliases"]["production"] == 2
    assert client.get("/v1/users", headers=maintainer).status_code == 403  # users are the platform admin's

    mine = client.get("/v1/audit", params={"principal": "mia"}, headers=ADMIN).json()["entries"]
    assert ("POST", "/v1/tasks", "ok", "create") in {
        (e["method"], e["resource"], e["outcome"], e["action"]) for e in mine
    }
    assert ("/v1/models/alpha/promote", "denied", 403) in {(e["resource"], e["outcome"], e["status"]) for e in mine}
    assert all(e["address"] == "127.0.0.1" for e in mine)
    assert not any(e["resource"].endswith("/predict") for e in mine)  # predictions are not audited
    by_max = client.get("/v1/audit", params={"principal": "max", "outcome": "ok"}, headers=ADMIN).json()
    assert [e["resource"] for e in by_max["entries"]] == ["/v1/models/alpha/promote"]


def test_a_service_key_calls_its_models_only_over_rest_and_grpc(platform: tuple[httpx.Client, Settings]) -> None:
    import tritonclient.grpc as oip
    from tritonclient.utils import InferenceServerException

    client, _ = platform
    service = _bearer(client, "checkout", "viewer", models=["alpha"])
    assert client.post("/v1/models/alpha/predict", json={"array": IMAGE}, headers=service).status_code == 200
    answer = client.post("/v2/models/alpha/infer", json=V2_BODY, headers=service)
    assert answer.status_code == 200, answer.text
    for path, body in (("/v1/models/beta/predict", {"array": IMAGE}), ("/v2/models/beta/infer", V2_BODY)):
        refused = client.post(path, json=body, headers=service)
        message = refused.json().get("message") or refused.json()["error"]  # OIP: {"error": message}
        assert refused.status_code == 403 and "alpha" in message, path
    for path in ("/v1/tasks", "/v1/models", "/v1/results"):
        assert client.get(path, headers=service).status_code == 403, path
    assert client.post("/v1/tasks", json={"template": "cnn-classification"}, headers=service).status_code == 403

    grpc = oip.InferenceServerClient(url=served_grpc_address())
    tensor = oip.InferInput("input", [1, 8, 8], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8), dtype=np.uint8))
    metadata = {"authorization": service["Authorization"]}
    assert grpc.infer("alpha", [tensor], headers=metadata).as_numpy("probabilities").shape == (1, 3)
    with pytest.raises(InferenceServerException) as other:
        grpc.infer("beta", [tensor], headers=metadata)
    assert other.value.status() == "StatusCode.PERMISSION_DENIED"

    keys = client.get("/v1/users/checkout/keys", headers=ADMIN).json()["keys"]
    assert keys[0]["kind"] == "service" and keys[0]["last_used_at"] is not None and "secret" not in keys[0]


def test_revoked_and_expired_keys_get_401_and_keys_are_stored_only_hashed(
    platform: tuple[httpx.Client, Settings],
) -> None:
    client, settings = platform
    bearer = _bearer(client, "rita", "member")
    secret = bearer["Authorization"].removeprefix("Bearer ")
    assert client.get("/v1/whoami", headers=bearer).json()["roles"] == {"default": "member"}
    key_id = client.get("/v1/users/rita/keys", headers=bearer).json()["keys"][0]["id"]  # her own keys
    assert client.delete(f"/v1/users/rita/keys/{key_id}", headers=ADMIN).status_code == 200
    revoked = client.get("/v1/models", headers=bearer)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]

    short = {"name": "short", "expires_in_days": 1 / 86400}  # one second
    expiring = client.post("/v1/users/rita/keys", json=short, headers=ADMIN).json()
    wait_for(
        lambda: client.get("/v1/models", headers={"Authorization": f"Bearer {expiring['secret']}"}).status_code == 401,
        30,
        "a key past its expiry to be refused",
    )
    refused = client.get("/v1/models", headers={"Authorization": f"Bearer {expiring['secret']}"})
    assert "expired" in refused.json()["message"]

    db = sqlite3.connect(settings.resolved_state_dir / "access.db")
    stored = [str(v) for row in db.execute("SELECT * FROM api_keys") for v in row]
    db.close()
    assert expiring["id"] in stored and secret not in stored and expiring["secret"] not in stored
    for body, status in (
        ({"name": "vera"}, 409),
        ({"name": "zed", "role": "owner"}, 400),
    ):
        answer = client.post("/v1/users", json=body, headers=ADMIN)
        assert answer.status_code == status and answer.json()["message"], answer.text
    bad = client.post("/v1/users/rita/keys", json={"name": "k", "expires_in_days": 0}, headers=ADMIN)
    assert bad.status_code == 400 and "expires_in_days" in bad.json()["message"]


def test_the_cli_manages_users_keys_and_reads_the_audit_log(platform: tuple[httpx.Client, Settings]) -> None:
    client, settings = platform
    member = _bearer(client, "cleo", "member")["Authorization"].removeprefix("Bearer ")
    env = {
        **os.environ,
        "AIP_API_URL": str(client.base_url).rstrip("/"),
        "AIP_HOME": str(settings.home),
        "AIP_RAY_NAMESPACE": settings.ray_namespace,
    }

    def aip(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "aip", *args]
        return subprocess.run(
            command, env={**env, "AIP_API_TOKEN": token}, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    me = aip(member, "whoami")
    assert me.returncode == 0 and "cleo" in me.stdout and "member in default" in me.stdout, me.stderr
    made = aip(member, "keys", "create", "laptop", "--expires-in-days", "7", "--json")  # her own
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["secret"].startswith("aip_")
    refused = aip(member, "users", "create", "someone")
    assert refused.returncode != 0 and "platform admin" in refused.stderr
    duplicate = aip(TOKEN, "users", "create", "cleo")
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    audit = aip(TOKEN, "audit", "--principal", "cleo")
    assert audit.returncode == 0 and "denied  403 POST   /v1/users" in audit.stdout, audit.stdout
