"""A team's keys, roles, model projects and quotas through a gateway on a worker node: the
documented cluster's layout (docs/CLUSTER.md), a head with no CPUs, so that Serve's replicas run
on the worker node, where the state folder need not be mounted. The gateway asks the head's
access and registry actors (``aiplatform.access.actor``) instead of reading ``access.db`` and
``registry.sqlite``; the test checks its process has neither file open, and that what a team
does through it works: a user's key, a model's project, a quota, a revoked key refused.

Like tests/multinode/test_cluster.py this starts a Ray of its own (``ray.cluster_utils.Cluster``:
two nodes on this machine; tests/conftest.py runs the multinode tests first).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray

from aiplatform.access.actor import AccessClient
from aiplatform.registry import RegistryClient
from aiplatform.runtime import local_runtime_env
from aiplatform.settings import Settings
from tests.factories import (
    free_port,
    platform_settings,
    register_versions,
    served_grpc_address,
    served_platform,
    wait_for,
)

TOKEN = "bootstrap-token-off-head-0123456789"
TEAM_MODEL = "offhead-team-model"
BODY = {"array": [[0, 255], [255, 0]]}
STATE_FILES = ("access.db", "registry.sqlite")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.fail("the multi-node tests need a Ray of their own; run them first (tests/conftest.py orders them)")
    temp_dir = Path("/tmp") / f"aip-offhead-{os.getpid()}"
    os.makedirs(os.path.dirname(ray._common.utils.get_ray_address_file(None)), exist_ok=True)
    cluster = Cluster()
    try:
        cluster.add_node(  # the head: the platform's actors, no CPUs for replicas (docs/CLUSTER.md)
            num_cpus=0,
            temp_dir=str(temp_dir),
            object_store_memory=200 * 1024**2,
            include_dashboard=True,  # the state API: where each actor runs
            dashboard_host="127.0.0.1",
            dashboard_port=free_port(),
            dashboard_agent_listen_port=free_port(),
        )
        cluster.add_node(num_cpus=2, object_store_memory=200 * 1024**2)
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace="aiplatform-offhead",
            configure_logging=False,
            runtime_env=local_runtime_env(),
        )
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with platform_settings(tmp_path_factory.mktemp("offhead"), "offhead", api_token=TOKEN) as settings:
        yield settings


def _gateways(settings: Settings) -> list[Any]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False)
    return [a for a in actors if f"ServeReplica:{settings.serve_app_name}:Gateway" in a.class_name]


def _open_state_files(pid: int) -> list[str]:
    """The state folder's SQLite files process ``pid`` holds open."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if Path(target).name.split("-")[0] in STATE_FILES:  # the file, or its -wal / -shm
            found.append(target)
    return found


def test_a_gateway_on_a_worker_node_serves_a_team_through_the_heads_actors(cluster: Any, settings: Settings) -> None:
    registry = RegistryClient.connect(settings)
    registry.claim_model(TEAM_MODEL, "team")  # as a task of project team does when it is created
    with served_platform(settings) as url:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        gateways = _gateways(settings)
        head = cluster.head_node.node_id
        assert gateways and all(g.node_id != head for g in gateways), "a gateway replica runs on the head"

        # What an admin sets up, through the worker node's gateway.
        assert admin.post("/v1/projects", json={"name": "team"}).status_code == 201
        assert admin.post("/v1/users", json={"name": "ana", "role": "viewer"}).status_code == 201
        assert admin.post("/v1/projects/team/members", json={"user": "ana", "role": "member"}).status_code == 200
        created = admin.post("/v1/users/ana/keys", json={"name": "laptop", "project": "team"})
        assert created.status_code == 201, created.text
        key = created.json()
        ana = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key['secret']}"}, timeout=60)

        # Her key is known there (the head's access store, asked by the actor).
        whoami = ana.get("/v1/whoami")
        assert whoami.status_code == 200, whoami.text
        assert whoami.json()["name"] == "ana"
        # A model of her project is served to her: its project comes from the head's registry.
        register_versions(settings, TEAM_MODEL)
        answer = wait_for(
            lambda: (r := ana.post(f"/v1/models/{TEAM_MODEL}/predict", json=BODY)).status_code != 503 and r,
            120,
            "the team's model to be served",
        )
        assert answer.status_code == 200, answer.text
        # ... over gRPC too, with a standard client (the same keys and model projects).
        import tritonclient.grpc as oip
        from tritonclient.utils import InferenceServerException

        grpc = oip.InferenceServerClient(url=served_grpc_address())
        tensor = oip.InferInput("input", [1, 2, 2], "UINT8")
        tensor.set_data_from_numpy(np.array([[[0, 255], [255, 0]]], dtype=np.uint8))
        ana_metadata = {"authorization": f"Bearer {key['secret']}"}
        assert grpc.infer(TEAM_MODEL, [tensor], headers=ana_metadata) is not None
        # Another project's resources stay hidden from her: 404, not 403.
        assert admin.post("/v1/projects", json={"name": "other"}).status_code == 201
        assert ana.get("/v1/projects/other/quota").status_code == 404
        # A quota set through the gateway is stored on the head and read back.
        quota = admin.put("/v1/projects/team/quota", json={"cpus": 1.5, "queued": 4})
        assert quota.status_code == 200, quota.text
        read = ana.get("/v1/projects/team/quota")
        assert read.status_code == 200 and read.json()["cpus"] == 1.5 and read.json()["queued"] == 4, read.text

        # The changes made through the gateway are in the audit log, on the head.
        def audited() -> set[str]:
            audit = admin.get("/v1/audit", params={"principal": "platform", "limit": 50})
            assert audit.status_code == 200, audit.text
            return {"/v1/projects/team/quota", "/v1/users/ana/keys"} - {e["resource"] for e in audit.json()["entries"]}

        wait_for(lambda: not audited(), 30, "the audit entries (written behind each answer)")

        # No gateway replica opened the state folder's files: everything above came from the head.
        for gateway in gateways:
            assert _open_state_files(gateway.pid) == [], f"gateway {gateway.pid} reads the state folder"

        # A key revoked elsewhere (another replica, `aip keys revoke` through another node's
        # gateway: here the head's actor itself) is refused there within the cache's time.
        AccessClient.connect(settings).revoke_key("ana", key["id"], by="platform")
        revoked_at = time.monotonic()
        refused = wait_for(
            lambda: (r := ana.get("/v1/whoami")).status_code == 401 and r,
            settings.access_cache_ttl_s + 30,
            "the revoked key to be refused",
        )
        # Within the cache's time, plus the requests' own (generous: a slow machine's).
        assert time.monotonic() - revoked_at < settings.access_cache_ttl_s + 10
        assert "revoked" in refused.json()["message"], refused.text
        with pytest.raises(InferenceServerException) as revoked:
            grpc.infer(TEAM_MODEL, [tensor], headers=ana_metadata)
        assert revoked.value.status() == "StatusCode.UNAUTHENTICATED", revoked.value
