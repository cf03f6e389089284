"""The storage manager: artifacts under a root URI, local by default, S3 through s3fs.

``open_storage`` picks the backend by URI scheme (as MLflow's artifact repositories do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings
from aiplatform.storage.base import ObjectInfo, Storage, sha256_bytes, sha256_file, validate_key
from aiplatform.storage.local import LocalStorage

if TYPE_CHECKING:
    from aiplatform.storage.s3 import S3Storage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "open_storage",
    "sha256_bytes",
    "sha256_file",
    "storage_from_settings",
    "validate_key",
]


def open_storage(
    uri: str,
    *,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Storage:
    """Open the storage backend for ``uri`` (a path, ``file://...`` or ``s3://...``)."""
    if uri.startswith("s3://"):
        from aiplatform.storage.s3 import S3Storage

        return S3Storage(
            uri,
            endpoint_url=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    if uri.startswith("file://"):
        return LocalStorage(uri[len("file://") :])
    if "://" in uri:
        raise InvalidArgument(f"Unsupported storage URI {uri!r}: use a local path, file:// or s3://")
    return LocalStorage(uri)


def storage_from_settings(settings: Settings) -> Storage:
    """The platform's storage as configured by ``AIP_STORAGE_URI`` and ``AIP_S3_*``."""
    return open_storage(
        settings.resolved_storage_uri,
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=_secret(settings.s3_access_key_id),
        secret_access_key=_secret(settings.s3_secret_access_key),
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def __getattr__(name: str) -> Any:
    """``S3Storage`` imported when first asked for: s3fs and aiobotocore cost a quarter of a second
    to import, in every process that imports the storage (each Ray worker of the platform, each
    job, each `aip` command), most of which never open S3."""
    if name == "S3Storage":
        from aiplatform.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
