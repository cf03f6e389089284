"""Model-server pools: a project with a serving-replica quota has model servers of its own.

Projects without one share the platform app's ``ModelServer`` deployment (autoscaled between
``AIP_SERVE_MIN_REPLICAS`` and ``AIP_SERVE_MAX_REPLICAS``). A project whose quota names a replica
count N serves from a Serve application of its own, ``<app>-models-<project>``: one ``ModelServer``
deployment autoscaled up to N, so Serve's autoscaler never starts an N+1th replica and the quota
holds by construction. With N = 0 the project has no pool and a request on its models is refused
(409) naming the quota.

- **Routing** (:class:`PoolRoutes`, on the gateway's hot path): a model's name gives its project
  (``registry.ModelProjects``, cached), the project gives its pool (the quotas, re-read every
  ``POOL_TTL_S``). With no replica quota set anywhere it costs one dict lookup.
- **Control** (:class:`ServePools`): the quota route deploys or resizes a project's pool before it
  stores the quota (a resize is Serve's light update: no replica restarts); lowering N drains the
  replicas above it as a scale-down does, failing no request. Unsetting or zeroing N stores it
  first and deletes the pool once every gateway has moved off it (``2 * POOL_TTL_S`` later, and
  only if the quota still names no replicas then).
- **Recovery**: each gateway replica, when it starts, deploys the pools of the stored quotas that
  Serve does not run (a fresh cluster after ``aip down``/``aip up``, a head restarted without Redis)
  and deletes those no quota names; so does renaming or deleting a project (its pool follows it).
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

ReplicaQuotas = Callable[[], dict[str, int]]
"""The projects with a serving-replica quota set, and its value (``QuotaStore.replica_quotas``)."""


def pool_app_name(app_name: str, project: str) -> str:
    """The Serve application of ``project``'s own model servers, beside the platform's ``app_name``."""
    return f"{app_name}-models-{project}"


class PoolRoutes:
    """Which model servers a model's calls go to: its project's pool, or the shared ones (None)."""

    def __init__(
        self,
        app_name: str,
        project_of: Callable[[str], str | None],
        replica_quotas: ReplicaQuotas,
        ttl_s: float = POOL_TTL_S,
    ) -> None:
        self.app_name = app_name
        self.project_of = project_of
        self.replica_quotas = replica_quotas
        self.ttl_s = ttl_s
        self._quotas: dict[str, int] = {}
        self._read_at = -float("inf")

    def quotas(self, now: float | None = None) -> dict[str, int]:
        """The replica quotas, read again once ``ttl_s`` old (the last ones kept if a read fails)."""
        now = time.monotonic() if now is None else now
        if now - self._read_at >= self.ttl_s:
            try:
                self._quotas = self.replica_quotas()
            except Exception:  # a locked or missing database: route as before, say why once a TTL
                logger.warning("cannot read the serving-replica quotas; routing as before", exc_info=True)
            self._read_at = now
        return self._quotas

    def app_for(self, model_name: str, now: float | None = None) -> str | None:
        """The pool application serving ``model_name``, or None for the shared model servers;
        ``Conflict`` when its project's quota allows no serving replica."""
        quotas = self.quotas(now)
        if not quotas:
            return None
        project = self.project_of(model_name)
        replicas = None if project is None else quotas.get(project)
        if replicas is None or project is None:
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
    ) -> None:
        self.app_name = app_name
        self.build = build
        self.min_replicas = min_replicas
        self.replica_quotas = replica_quotas
        self.delete_after_s = delete_after_s

    def running(self, project: str) -> int | None:
        """Replicas of ``project``'s pool running or starting now; None when it has no pool."""
        from ray import serve

        app = serve.status().applications.get(pool_app_name(self.app_name, project))
        if app is None or POOL_DEPLOYMENT not in app.deployments:
            return None
        states = app.deployments[POOL_DEPLOYMENT].replica_states
        return sum(count for state, count in states.items() if getattr(state, "value", str(state)) != "STOPPING")

    def deploy(self, project: str, replicas: int) -> None:
        """Run ``project``'s pool with at most ``replicas`` replicas (created, or resized in place);
        returns once Serve reports it running."""
        from ray import serve
        from ray.serve.exceptions import RayServeException

        app = pool_app_name(self.app_name, project)
        try:
            serve.run(self.build(min(self.min_replicas, replicas), replicas), name=app, route_prefix=None)
        except RayServeException as exc:
            raise Unavailable(f"Cannot run the model servers of project {project!r} ({app}): {exc}") from exc
        logger.info("model-server pool %s runs at most %d replicas", app, replicas)

    def release(self, project: str) -> None:
        """Delete ``project``'s pool once the gateways have moved off it, unless its quota names
        replicas again by then (a pool it has just been given back)."""

        def delete() -> None:
            from ray import serve

            if self.replica_quotas().get(project, 0) > 0:
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
        longer names is released after it is stored. Returns what ``store`` returned."""
        if replicas:
            self.deploy(project, replicas)
            return store()
        stored = store()
        if self.running(project) is not None:
            self.release(project)
        return stored

    def reconcile(self) -> list[str]:
        """Bring Serve in line with the stored quotas: deploy the pools they name that Serve does
        not run (returns their projects), delete those of this platform they no longer name (a
        project renamed or deleted)."""
        from ray import serve

        running = serve.status().applications
        wanted = {project: replicas for project, replicas in self.replica_quotas().items() if replicas > 0}
        ours = pool_app_name(self.app_name, "")
        for app in running:
            if app.startswith(ours) and app[len(ours) :] not in wanted:
                serve.delete(app, _blocking=False)
                logger.info("model-server pool %s deleted: no project's quota names it", app)
        missing = [project for project in sorted(wanted) if pool_app_name(self.app_name, project) not in running]
        for project in missing:
            self.deploy(project, wanted[project])
        return missing


def pool_routes(settings: Settings) -> PoolRoutes:
    """The routes of the platform ``settings`` describe, read from its state folder: the
    registry's models and the access store's quotas (none while it has no access store, as on
    a node that does not hold the state folder)."""
    from aiplatform.access.quotas import QuotaStore
    from aiplatform.access.store import ACCESS_DB
    from aiplatform.registry import ModelProjects

    state_dir = settings.resolved_state_dir
    stores: list[QuotaStore] = []

    def replica_quotas() -> dict[str, int]:
        if not stores:
            if not (state_dir / ACCESS_DB).exists():
                return {}
            stores.append(QuotaStore.in_state_dir(state_dir))
        return stores[0].replica_quotas()

    return PoolRoutes(settings.serve_app_name, ModelProjects(state_dir / "registry.sqlite").project_of, replica_quotas)


def _logged(call: Callable[[], None], what: str) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except Exception:
            logger.warning("%s failed", what, exc_info=True)

    return run


__all__ = ["POOL_DEPLOYMENT", "POOL_TTL_S", "PoolRoutes", "ServePools", "pool_app_name", "pool_routes"]
