"""Publishing a model: store its package under its content hash, then register the version (in that
order, so the registry never points at a package that is not fully stored).

Training, compression and imports all publish this way; nothing here knows how a model was made.
"""

from __future__ import annotations

from typing import Any

from aiplatform.registry.store import ModelVersion, RegistryAPI, validate_model_name
from aiplatform.storage import Storage, sha256_bytes


def package_key(name: str, sha256: str) -> str:
    """Packages are content-addressed: a retry writes the same key with the same bytes."""
    return f"packages/{name}/{sha256[:24]}.zip"


def publish_package(
    data: bytes,
    *,
    name: str,
    template: str,
    storage: Storage,
    registry: RegistryAPI,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    created_by: str | None = None,
) -> ModelVersion:
    """Store the package bytes and register them as the next version of ``name`` (made by
    ``created_by``: the caller whose request made it)."""
    validate_model_name(name)
    digest = sha256_bytes(data)
    key = package_key(name, digest)
    storage.put_bytes(key, data)
    return registry.register_version(
        name,
        package_key=key,
        sha256=digest,
        template=template,
        metrics=metrics,
        lineage=lineage,
        idempotency_key=idempotency_key,
        created_by=created_by,
    )
