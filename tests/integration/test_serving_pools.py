"""A project's serving-replica quota on a real platform, over real HTTP: setting it gives the project
model servers of its own (a Serve application autoscaled up to the quota, never past it) that its
models' requests and warm-ups go to, while other projects' models stay on the shared ones; 0 stops
serving its models with a 409 naming the quota; unset, its models go back to the shared servers
and the pool is deleted; a pool the stored quotas name but Serve lost comes back on reconcile."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from aiplatform.settings import Settings
from tests.factories import platform_settings, register_versions, served_platform, wait_for

TOKEN = "bootstrap-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = np.zeros((8, 8, 1), dtype=int).tolist()


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    from ray import serve

    from aiplatform.registry import RegistryClient
    from aiplatform.serving.pools import pool_app_name

    with platform_settings(tmp_path_factory.mktemp("pools"), "pools", api_token=TOKEN) as settings:
        registry = RegistryClient.connect(settings)
        registry.claim_model("team-model", "team")  # as a task of the project does when it is created
        register_versions(settings, "team-model", count=2)
        register_versions(settings, "shared-model", count=1)
        try:
            with served_platform(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
                yield client, settings
        finally:  # every pool the module made, whichever test stopped where
            for app in serve.status().applications:
                if app.startswith(pool_app_name(settings.serve_app_name, "")):
                    serve.delete(app)


def _pool_details(settings: Settings) -> dict | None:  # type: ignore[type-arg]
    """The pool's deployment as Serve's controller describes it (its config and replicas)."""
    from ray.serve.context import _get_global_client

    from aiplatform.serving.pools import pool_app_name

    details = _get_global_client().get_serve_details()
    app = details.get("applications", {}).get(pool_app_name(settings.serve_app_name, "team"))
    return None if app is None else app["deployments"].get("ModelServer")  # none while it is deleted


def _loaded(settings: Settings, app: str) -> list[str]:
    from ray import serve

    return serve.get_deployment_handle("ModelServer", app_name=app).stats.remote().result()["loaded"]  # type: ignore[no-any-return]


def _predict(client: httpx.Client, name: str) -> httpx.Response:
    return client.post(f"/v1/models/{name}/predict", json={"array": IMAGE}, headers=ADMIN)


def test_a_replica_quota_gives_the_project_model_servers_of_its_own_and_never_more(
    platform: tuple[httpx.Client, Settings],
) -> None:
    from aiplatform.serving.pools import POOL_TTL_S, pool_app_name

    client, settings = platform
    assert client.post("/v1/projects", json={"name": "team"}, headers=ADMIN).status_code == 201
    assert _predict(client, "team-model").status_code == 200  # no replica quota: the shared servers
    assert _pool_details(settings) is None

    refused = client.put("/v1/projects/team/quota", json={"replicas": -1}, headers=ADMIN)
    assert refused.status_code == 400 and "replicas" in refused.text
    assert _pool_details(settings) is None

    # a quota of 1: a pool of its own, running before the answer, autoscaled up to 1 and no further
    quota = client.put("/v1/projects/team/quota", json={"replicas": 1}, headers=ADMIN)
    assert quota.status_code == 200, quota.text
    assert quota.json()["replicas"] == 1 and quota.json()["in_use"]["replicas"] == 1
    pool = _pool_details(settings)
    assert pool is not None and pool["status"] == "HEALTHY"
    assert pool["deployment_config"]["autoscaling_config"]["max_replicas"] == 1
    assert client.get("/v1/projects/team/quota", headers=ADMIN).json()["in_use"]["replicas"] == 1
    app = pool_app_name(settings.serve_app_name, "team")

    # the team's requests and warm-ups go to its pool once the gateways have read the quota;
    # the default project's stay on the shared servers
    def on_pool() -> bool:
        return _predict(client, "team-model").status_code == 200 and "team-model:1" in _loaded(settings, app)

    wait_for(on_pool, 30 + 4 * POOL_TTL_S, "the team's requests to reach its pool")
    promoted = client.post("/v1/models/team-model/promote", json={"version": 2, "force": True}, headers=ADMIN)
    assert promoted.status_code == 200, promoted.text
    assert "team-model:2" in _loaded(settings, app)  # warmed on the pool before the alias moved
    assert _predict(client, "shared-model").status_code == 200
    assert not [m for m in _loaded(settings, app) if m.startswith("shared-model")]

    # many clients at once: every request answered, the pool never past its quota
    with ThreadPoolExecutor(16) as threads:
        statuses = list(threads.map(lambda _: _predict(client, "team-model").status_code, range(160)))
    assert statuses == [200] * 160
    replicas = _pool_details(settings)["replicas"]  # type: ignore[index]
    assert len([r for r in replicas if r["state"] != "STOPPING"]) == 1

    # resized: Serve's own maximum follows the quota, and the team's model is served on
    raised = client.put("/v1/projects/team/quota", json={"replicas": 2}, headers=ADMIN)
    assert raised.status_code == 200, raised.text
    assert _pool_details(settings)["deployment_config"]["autoscaling_config"]["max_replicas"] == 2  # type: ignore[index]
    assert _predict(client, "team-model").status_code == 200

    # 0: its models are not served, with a 409 naming the quota; the pool goes
    assert client.put("/v1/projects/team/quota", json={"replicas": 0}, headers=ADMIN).status_code == 200

    def refused_by_quota() -> bool:
        answer = _predict(client, "team-model")
        return answer.status_code == 409 and "may run 0 serving replicas" in answer.json()["message"]

    wait_for(refused_by_quota, 4 * POOL_TTL_S + 10, "a request on the team's model to be refused by its quota")
    wait_for(lambda: _pool_details(settings) is None, 60, "the pool of a quota of 0 replicas to be deleted")

    # unset: back on the shared servers
    assert client.put("/v1/projects/team/quota", json={}, headers=ADMIN).json()["replicas"] is None
    wait_for(lambda: _predict(client, "team-model").status_code == 200, 4 * POOL_TTL_S + 30, "the shared servers")


def test_a_pool_serve_lost_comes_back_from_the_stored_quota(platform: tuple[httpx.Client, Settings]) -> None:
    from ray import serve

    from aiplatform.serving.pools import ServePools, pool_app_name, pool_routes
    from serve_apps.model_server import model_server_app

    client, settings = platform
    assert client.post("/v1/projects", json={"name": "team"}, headers=ADMIN).status_code in (201, 409)
    assert client.put("/v1/projects/team/quota", json={"replicas": 1}, headers=ADMIN).status_code == 200
    app = pool_app_name(settings.serve_app_name, "team")
    serve.delete(app)  # as a fresh cluster after `aip down` and `aip up` has none
    pools = ServePools(
        settings.serve_app_name,
        functools.partial(model_server_app, settings),
        settings.serve_min_replicas,
        pool_routes(settings).replica_quotas,
    )
    assert pools.reconcile() == ["team"]
    assert pools.reconcile() == []  # running: nothing to do
    assert _pool_details(settings)["deployment_config"]["autoscaling_config"]["max_replicas"] == 1  # type: ignore[index]
    wait_for(lambda: _predict(client, "team-model").status_code == 200, 60, "the team's model served again")


def test_a_projects_pool_follows_its_rename_and_goes_with_it(platform: tuple[httpx.Client, Settings]) -> None:
    from ray import serve

    from aiplatform.serving.pools import pool_app_name

    client, settings = platform
    assert client.post("/v1/projects", json={"name": "spare"}, headers=ADMIN).status_code == 201
    assert client.put("/v1/projects/spare/quota", json={"replicas": 1}, headers=ADMIN).status_code == 200
    old, new = pool_app_name(settings.serve_app_name, "spare"), pool_app_name(settings.serve_app_name, "spare-2")
    assert old in serve.status().applications
    renamed = client.patch("/v1/projects/spare", json={"name": "spare-2"}, headers=ADMIN)
    assert renamed.status_code == 200, renamed.text
    assert client.get("/v1/projects/spare-2/quota", headers=ADMIN).json()["in_use"]["replicas"] == 1
    wait_for(lambda: old not in serve.status().applications, 60, "the old name's pool to be deleted")
    assert client.delete("/v1/projects/spare-2", headers=ADMIN).status_code == 200
    wait_for(lambda: new not in serve.status().applications, 60, "the deleted project's pool to be deleted")
