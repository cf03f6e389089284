"""The registry as a detached, head-pinned Ray actor, and the client every process uses."""

from __future__ import annotations

import ray

from aiplatform.registry.store import ModelProjects, RegistryAPI, RegistryStore
from aiplatform.runtime import ActorProxy, freeze_startup_heap, head_actor, on_head_node
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings

REGISTRY_ACTOR_NAME = "model-registry"


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
    mounted): each model's project is asked of the registry's actor, and kept as there."""

    def __init__(self, registry: RegistryAPI) -> None:
        super().__init__(None)
        self.registry = registry

    def _look_up(self, name: str) -> str | None:
        return self.registry.model_project(name)


def model_projects(settings: Settings) -> ModelProjects:
    """Which project each model belongs to, for this process: the registry's file where the state
    folder is (outside Ray, or on the head node), else its actor (``runtime.on_head_node``)."""
    if on_head_node():
        return ModelProjects(settings.resolved_state_dir / "registry.sqlite")
    return ActorModelProjects(RegistryClient.connect(settings))
