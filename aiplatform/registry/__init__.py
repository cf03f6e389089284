"""The model registry: versions, aliases and lineage, durable in SQLite, owned by a head actor."""

from aiplatform.registry.actor import (
    REGISTRY_ACTOR_NAME,
    ActorModelProjects,
    RegistryActor,
    RegistryClient,
    model_projects,
)
from aiplatform.registry.refs import parse_model_ref
from aiplatform.registry.store import (
    ModelProjects,
    ModelVersion,
    RegistryAPI,
    RegistryStore,
    validate_alias,
    validate_model_name,
)

__all__ = [
    "REGISTRY_ACTOR_NAME",
    "ActorModelProjects",
    "ModelProjects",
    "ModelVersion",
    "RegistryAPI",
    "RegistryActor",
    "RegistryClient",
    "RegistryStore",
    "model_projects",
    "parse_model_ref",
    "validate_alias",
    "validate_model_name",
]
