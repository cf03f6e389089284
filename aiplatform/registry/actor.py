"""The registry as a detached, head-pinned Ray actor, and the client every process uses."""

from __future__ import annotations

import ray

from aiplatform.registry.store import RegistryAPI, RegistryStore
from aiplatform.runtime import ActorProxy, freeze_startup_heap, head_actor
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
