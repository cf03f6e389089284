"""Model-server pools: a project with a serving-replica quota has model servers of its own.

Projects without one share the platform app's ``ModelServer`` deployment (autoscaled between
``AIP_SERVE_MIN_REPLICAS`` and ``AIP_SERVE_MAX_REPLICAS``). A project whose quota names a replica
count N serves from a Serve application of its own, ``<app>-models-<project>``: one ``ModelServer``
deployment autoscaled up to N, so Serve's autoscaler never starts an N+1th replica and the quota
holds by construction. With N = 0 the project has no pool and a request on its models is refused
(409) naming the quota.

- **Routing** (:class:`PoolRoutes`, on the gateway's hot path): a model's name gives its project
  (``registry.ModelProjects``, cached), the project gives its pool (the quotas, re-read off the
  event loop every ``POOL_TTL_S``). With no replica quota set anywhere it costs one dict lookup.
- **Control** (:class:`ServePools`): the quota route deploys or resizes a project's pool and
  waits for it to run before it stores the quota (a resize is Serve's rolling update: the pool's
  replicas are replaced and load their models again on first use), then matches the pool to the
  quota as stored. Unsetting or zeroing N stores it first and deletes the pool once every gateway
  has moved off it (``2 * POOL_TTL_S + 1`` s later, and only if the quota still names no
  replicas then).
- **Recovery** (:meth:`ServePools.reconcile`): each gateway replica, when it starts, deploys the
  pools the stored quotas name that Serve does not run (a fresh cluster after ``aip down``/``aip
  up``, a head restarted without Redis), resizes those at another size and deletes those no quota
  names (left alone for ``RECONCILE_GRACE_S`` after they were deployed: a quota may be on its way);
  renaming or deleting a project does the same, and releases its pool under the old name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiplatform.errors import Conflict, Unavailable
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
POOL_TTL_S = 2.0
"""How long a gateway keeps the quotas it read before it reads them again."""
POOL_DEPLOYMENT = "ModelServer"
POOL_START_TIMEOUT_S = 180.0
"""How long a quota change waits for its pool to run before it is refused (a cluster without the
resources for a replica would otherwise hold the request for ever)."""
RECONCILE_GRACE_S = 60.0
"""A pool no quota names is left alone this long after it was deployed: its quota may be on its
way to the store (a pool is deployed before its quota is stored)."""

ReplicaQuotas = Callable[[], dict[str, int] | None]
"""The projects with a serving-replica quota set, and its value (``QuotaStore.replica_quotas``);
None where they cannot be known (no access store on this node)."""


def pool_app_name(app_name: str, project: str) -> str:
    """The Serve application of ``project``'s own model servers, beside the platform's ``app_name``."""
    return f"{app_name}-models-{project}"


class PoolRoutes:
    """Which model servers a model's calls go to: its project's pool, or the shared ones (None).

    ``background``: the quotas are read again off the caller's thread (the gateway's event loop
    must not wait on SQLite); the first read is made at once."""

    def __init__(
        self,
        app_name: str,
        project_of: Callable[[str], str | None],
        replica_quotas: ReplicaQuotas,
        ttl_s: float = POOL_TTL_S,
        background: bool = False,
        project_blocks: Callable[[str], bool] | None = None,
    ) -> None:
        """``project_blocks(name)``: whether ``project_of(name)`` would wait on another process
        (a gateway off the head node asks the registry's actor): the data plane then asks from a
        worker thread (:meth:`may_block`)."""
        self.app_name = app_name
        self.project_of = project_of
        self.project_blocks = project_blocks
        self.replica_quotas = replica_quotas
        self.ttl_s = ttl_s
        self.background = background
        self._quotas: dict[str, int] = {}
        self._read_at = -float("inf")
        self._reading = threading.Lock()
        if background:
            self._read(time.monotonic())

    def _read(self, now: float) -> None:
        try:
            # unknown (no access store on this node): every model on the shared servers
            self._quotas = self.replica_quotas() or {}
        except Exception:  # a locked database: route as before, say why once a TTL
            logger.warning("cannot read the serving-replica quotas; routing as before", exc_info=True)
        self._read_at = now

    def _read_in_background(self, now: float) -> None:
        try:
            self._read(now)
        finally:
            self._reading.release()

    def quotas(self, now: float | None = None) -> dict[str, int]:
        """The replica quotas, read again once ``ttl_s`` old (the last ones kept if a read fails)."""
        now = time.monotonic() if now is None else now
        if now - self._read_at >= self.ttl_s:
            if not self.background:
                self._read(now)
            elif self._reading.acquire(blocking=False):
                self._read_at = now  # one read at a time; this call routes by the last ones
                threading.Thread(
                    target=self._read_in_background, args=(now,), name="aip-pool-quotas", daemon=True
                ).start()
        return self._quotas

    def may_block(self, model_name: str) -> bool:
        """Whether :meth:`app_for` may wait on another process for ``model_name``."""
        return self.project_blocks is not None and bool(self.quotas()) and self.project_blocks(model_name)

    def app_for(self, model_name: str, now: float | None = None) -> str | None:
        """The pool application serving ``model_name``, or None for the shared model servers;
        ``Conflict`` when its project's quota allows no serving replica."""
        quotas = self.quotas(now)
        if not quotas:
            return None
        project = self.project_of(model_name)
        replicas = None if project is None else quotas.get(project)
        if replicas is None:
            return None
        if replicas <= 0:
            raise Conflict(
                f"Project {project!r} may run 0 serving replicas (its quota), so model {model_name!r} "
                "is not served; a platform admin can raise the quota"
            )
        return pool_app_name(self.app_name, project)


class ServePools:
    """Deploys, resizes and deletes the projects' pools on the running Serve instance.

    ``build(min_replicas, max_replicas)`` makes the pool's Serve application (the model-server
    deployment, bound to the platform's settings: ``serve_apps.model_server.model_server_app``)."""

    def __init__(
        self,
        app_name: str,
        build: Callable[[int, int], Any],
        min_replicas: int,
        replica_quotas: ReplicaQuotas,
        delete_after_s: float = 2 * POOL_TTL_S + 1.0,
        start_timeout_s: float = POOL_START_TIMEOUT_S,
    ) -> None:
        self.app_name = app_name
        self.build = build
        self.min_replicas = min_replicas
        self.replica_quotas = replica_quotas
        self.delete_after_s = delete_after_s
        self.start_timeout_s = start_timeout_s

    def running(self, project: str) -> int | None:
        """Replicas of ``project``'s pool running or starting now; None when it has no pool."""
        from ray import serve

        app = serve.status().applications.get(pool_app_name(self.app_name, project))
        if app is None or POOL_DEPLOYMENT not in app.deployments:
            return None
        states = app.deployments[POOL_DEPLOYMENT].replica_states
        return sum(count for state, count in states.items() if _value(state) != "STOPPING")

    def pools(self) -> dict[str, tuple[int | None, float]]:
        """This platform's pools as Serve's controller has them: project -> (the deployment's
        ``max_replicas``, when the application was last deployed)."""
        from ray.serve.context import _get_global_client

        ours = pool_app_name(self.app_name, "")
        found: dict[str, tuple[int | None, float]] = {}
        for app, details in _get_global_client().get_serve_details().get("applications", {}).items():
            if not app.startswith(ours):
                continue
            deployment = details.get("deployments", {}).get(POOL_DEPLOYMENT) or {}
            autoscaling = (deployment.get("deployment_config") or {}).get("autoscaling_config") or {}
            found[app[len(ours) :]] = (autoscaling.get("max_replicas"), float(details.get("last_deployed_time_s") or 0))
        return found

    def deploy(self, project: str, replicas: int) -> None:
        """Run ``project``'s pool with at most ``replicas`` replicas (created, or redeployed at the
        new size: Serve's rolling update, the models loading again on first use); returns once
        Serve reports it running. ``Unavailable`` when Serve refuses it or cannot start it within
        ``start_timeout_s`` (a pool it was creating is deleted again)."""
        from ray import serve

        app = pool_app_name(self.app_name, project)
        new = app not in serve.status().applications
        try:
            serve._run(
                self.build(min(self.min_replicas, replicas), replicas), name=app, route_prefix=None, _blocking=False
            )
            self._wait_running(app)
        except Exception as exc:
            if new:
                _logged(lambda: serve.delete(app, _blocking=False), f"deleting the pool {app} that did not start")()
            raise Unavailable(f"Cannot run the model servers of project {project!r} ({app}): {exc}") from exc
        logger.info("model-server pool %s runs at most %d replicas", app, replicas)

    def _wait_running(self, app: str) -> None:
        from ray import serve

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            status = serve.status().applications.get(app)
            state = None if status is None else _value(status.status)
            if state == "RUNNING":
                return
            if state == "DEPLOY_FAILED":
                raise RuntimeError(status.message if status is not None else "deploy failed")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not running after {self.start_timeout_s:g} s ({state}): the cluster may lack the resources"
                )
            time.sleep(0.2)

    def release(self, project: str) -> None:
        """Delete ``project``'s pool once the gateways have moved off it, unless its quota names
        replicas again by then (a pool it has just been given back)."""

        def delete() -> None:
            from ray import serve

            if (self.replica_quotas() or {}).get(project, 0) > 0:
                return
            app = pool_app_name(self.app_name, project)
            if app in serve.status().applications:
                serve.delete(app, _blocking=False)
                logger.info("model-server pool %s deleted: its project's quota names no replicas", app)

        timer = threading.Timer(self.delete_after_s, _logged(delete, f"deleting the pool of {project!r}"))
        timer.daemon = True
        timer.start()

    def apply(self, project: str, replicas: int | None, store: Callable[[], Any]) -> Any:
        """Give ``project`` at most ``replicas`` serving replicas and ``store`` the quota: a pool
        is deployed (or resized) before the quota that routes to it is stored; one the quota no
        longer names is released after it is stored. Then the pool is matched to the quota as
        stored (two changes at once: the last stored wins). Returns what ``store`` returned."""
        if replicas:
            self.deploy(project, replicas)
        stored = store()
        quota = (self.replica_quotas() or {}).get(project)
        size = self.pools().get(project, (None, 0.0))[0]
        if quota and quota != size:
            self.deploy(project, quota)
        elif not quota and size is not None:
            self.release(project)
        return stored

    def reconcile(self) -> list[str]:
        """Bring Serve in line with the stored quotas: deploy the pools they name that Serve does
        not run (returns their projects), resize those at another size, and delete those no quota
        names that were deployed over ``RECONCILE_GRACE_S`` ago (a younger one may be a pool whose
        quota is being stored). Nothing is done where the quotas cannot be read."""
        from ray import serve

        quotas = self.replica_quotas()
        if quotas is None:
            return []
        wanted = {project: replicas for project, replicas in quotas.items() if replicas > 0}
        started = []
        for project, (size, deployed_at) in self.pools().items():
            if project not in wanted and time.time() - deployed_at > RECONCILE_GRACE_S:
                serve.delete(pool_app_name(self.app_name, project), _blocking=False)
                logger.info("model-server pool of %r deleted: its quota names no replicas", project)
            elif project in wanted and size != wanted[project]:
                self.deploy(project, wanted[project])
        running = serve.status().applications
        for project in sorted(wanted):
            if pool_app_name(self.app_name, project) not in running:
                self.deploy(project, wanted[project])
                started.append(project)
        return started


def _value(state: Any) -> Any:
    return getattr(state, "value", state)


def pool_routes(settings: Settings, background: bool = False) -> PoolRoutes:
    """The routes of the platform ``settings`` describe: the registry's models and the access
    store's quotas, read from the state folder or, off the head node, asked of the head's actors
    (``aiplatform.access.actor``). Where the state folder has no access store yet the quotas are
    unknown: every model then goes to the shared servers, and no pool is deleted or deployed.
    ``background``: see :class:`PoolRoutes`."""
    from aiplatform.access.actor import quota_store
    from aiplatform.access.protocols import QuotaAPI
    from aiplatform.access.store import ACCESS_DB
    from aiplatform.registry import model_projects
    from aiplatform.runtime import on_head_node

    state_dir = settings.resolved_state_dir
    local = on_head_node()
    stores: list[QuotaAPI] = []

    def replica_quotas() -> dict[str, int] | None:
        if not stores:
            if local and not (state_dir / ACCESS_DB).exists():
                return None
            stores.append(quota_store(settings))
        return stores[0].replica_quotas()

    projects = model_projects(settings)
    return PoolRoutes(
        settings.serve_app_name,
        projects.project_of,
        replica_quotas,
        background=background,
        project_blocks=projects.blocks,
    )


def _logged(call: Callable[[], None], what: str) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except Exception:
            logger.warning("%s failed", what, exc_info=True)

    return run


__all__ = ["POOL_DEPLOYMENT", "POOL_TTL_S", "PoolRoutes", "ServePools", "pool_app_name", "pool_routes"]
