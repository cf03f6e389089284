"""The registry as a detached, head-pinned Ray actor, and the client every process uses."""

from __future__ import annotations

import logging
import threading
import time

import ray

from aiplatform.registry.store import MODEL_PROJECT_TTL_S, ModelProjects, RegistryAPI, RegistryStore
from aiplatform.runtime import ActorProxy, BoundedCalls, freeze_startup_heap, head_actor, on_head_node
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings

REGISTRY_ACTOR_NAME = "model-registry"

logger = logging.getLogger(__name__)


class RegistryActor(RegistryStore):
    """The registry store, run as an actor that owns the SQLite file on the head node.

    On failure: Ray restarts the actor (``max_restarts=-1``) and it reopens the same SQLite file,
    so nothing acknowledged is lost. Registration with an idempotency key is safe to retry.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.resolved_state_dir / "registry.sqlite", storage_from_settings(settings))
        freeze_startup_heap()

    def ping(self) -> str:
        """The id of the node this actor runs on (a liveness check that also shows placement)."""
        return ray.get_runtime_context().get_node_id()


class RegistryClient(ActorProxy, RegistryAPI, protocol=RegistryAPI):
    """The registry actor, called like the store (see ``ActorProxy``)."""

    @classmethod
    def connect(cls, settings: Settings) -> RegistryClient:
        """Get the platform's registry actor, creating it on the head node if needed."""
        return cls(head_actor(RegistryActor, REGISTRY_ACTOR_NAME, settings))


class ActorModelProjects(ModelProjects):
    """:class:`ModelProjects` for a process off the head node (where the state folder need not be
    mounted): each model's project is asked of the registry's actor (waiting at most
    ``runtime.HEAD_CALL_TIMEOUT_S``), and kept as there. Past its time an answer is still given while a
    thread asks again: the data plane asks on its event loop (routing a call to a project's
    pool), which must never wait on the head; the first answer for a name is asked by the access
    guard, off the loop, before the request gets there (one instance per process:
    :func:`model_projects`)."""

    def __init__(self, registry: RegistryClient) -> None:
        super().__init__(None)
        self.registry = registry
        self.calls = BoundedCalls()
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()

    def project_of(self, name: str, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        known = self._known.get(name)
        if known is not None and now - known[1] >= MODEL_PROJECT_TTL_S:
            with self._refreshing_lock:
                start = name not in self._refreshing
                self._refreshing.add(name)
            if start:
                threading.Thread(target=self._refresh, args=(name,), name="aip-model-project", daemon=True).start()
            return known[0]
        return super().project_of(name, now)

    def blocks(self, name: str) -> bool:
        """Whether :meth:`project_of` would ask the registry's actor and wait (a name never seen)."""
        return name not in self._known

    def _refresh(self, name: str) -> None:
        try:
            project = self._look_up(name)
            if project is None:
                self._known.pop(name, None)
            else:
                self._known[name] = (project, time.monotonic())
        except Exception as exc:  # the head away: the kept answer stands until it answers again
            logger.warning("could not ask the registry for model %s's project: %s", name, exc)
        finally:
            with self._refreshing_lock:
                self._refreshing.discard(name)

    def _look_up(self, name: str) -> str | None:
        return self.calls(self.registry.handle.model_project, name)  # type: ignore[no-any-return]


_SHARED_MODEL_PROJECTS: dict[str, ActorModelProjects] = {}


def model_projects(settings: Settings) -> ModelProjects:
    """Which project each model belongs to, for this process: the registry's file where the state
    folder is (outside Ray, or on the head node), else its actor (``runtime.on_head_node``), one
    instance per platform in the process (the guard's lookups then serve the data plane)."""
    if on_head_node():
        return ModelProjects(settings.resolved_state_dir / "registry.sqlite")
    shared = _SHARED_MODEL_PROJECTS.get(settings.ray_namespace)
    if shared is None:
        shared = _SHARED_MODEL_PROJECTS[settings.ray_namespace] = ActorModelProjects(RegistryClient.connect(settings))
    return shared
