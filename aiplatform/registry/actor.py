"""The registry as a detached, head-pinned Ray actor, and the client every process uses."""

from __future__ import annotations

from typing import Any, Optional

import ray

from aiplatform.registry.store import ModelVersion, RegistryStore
from aiplatform.runtime import call, head_actor
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

    def ping(self) -> str:
        """The id of the node this actor runs on (a liveness check that also shows placement)."""
        return ray.get_runtime_context().get_node_id()


class RegistryClient:
    """Synchronous access to the registry actor; platform errors are raised as themselves."""

    def __init__(self, handle: "ray.actor.ActorHandle") -> None:
        self.handle = handle

    @classmethod
    def connect(cls, settings: Settings) -> "RegistryClient":
        """Get the platform's registry actor, creating it on the head node if needed."""
        return cls(head_actor(RegistryActor, REGISTRY_ACTOR_NAME, settings))

    def register_version(
        self,
        name: str,
        *,
        package_key: str,
        sha256: str,
        template: str,
        metrics: Optional[dict[str, Any]] = None,
        lineage: Optional[dict[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> ModelVersion:
        return call(
            self.handle.register_version, name, package_key=package_key, sha256=sha256,
            template=template, metrics=metrics, lineage=lineage, idempotency_key=idempotency_key,
        )

    def get_version(self, name: str, version: int) -> ModelVersion:
        return call(self.handle.get_version, name, version)

    def resolve(self, name: str, ref: str | int) -> ModelVersion:
        return call(self.handle.resolve, name, ref)

    def list_versions(self, name: str) -> list[ModelVersion]:
        return call(self.handle.list_versions, name)

    def list_models(self) -> list[dict[str, Any]]:
        return call(self.handle.list_models)

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        return call(self.handle.set_alias, name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        call(self.handle.delete_alias, name, alias)

    def aliases(self, name: str) -> dict[str, int]:
        return call(self.handle.aliases, name)

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        return call(self.handle.alias_history, name, alias)

    def delete_version(self, name: str, version: int) -> None:
        call(self.handle.delete_version, name, version)

    def set_traffic(self, name: str, weights: dict[int, float]) -> dict[int, float]:
        return call(self.handle.set_traffic, name, weights)

    def get_traffic(self, name: str) -> dict[int, float]:
        return call(self.handle.get_traffic, name)
