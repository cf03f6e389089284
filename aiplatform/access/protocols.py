"""What callers may ask of the access store and of the projects' quotas, declared once: the stores
themselves (``AccessStore``, ``QuotaStore``) and the head actor's clients
(``aiplatform.access.actor``) both answer them."""

from __future__ import annotations

from typing import Any, Protocol

from aiplatform.access.quotas import Admission, Quota
from aiplatform.access.roles import DEFAULT_PROJECT, Principal
from aiplatform.access.store import AuditEntry
from aiplatform.storage import Storage


class AccessAPI(Protocol):
    """What callers may ask of the access store: the store itself, or its actor through a client."""

    def create_user(
        self, name: str, *, role: str = "viewer", platform_admin: bool = False, by: str
    ) -> dict[str, Any]: ...

    def user(self, name: str) -> dict[str, Any]: ...

    def users(self) -> list[dict[str, Any]]: ...

    def disable_user(self, name: str, *, by: str) -> dict[str, Any]: ...

    def create_project(self, name: str, *, by: str) -> dict[str, Any]: ...

    def project(self, name: str) -> dict[str, Any]: ...

    def projects(self, names: list[str] | None = None) -> list[dict[str, Any]]: ...

    def rename_project(
        self, name: str, new_name: str, *, by: str, storage: Storage | None = None
    ) -> dict[str, Any]: ...

    def delete_project(self, name: str, *, by: str, storage: Storage | None = None) -> dict[str, Any]: ...

    def project_exists(self, name: str) -> bool: ...

    def set_member(self, project: str, user: str, role: str, *, by: str) -> dict[str, Any]: ...

    def remove_member(self, project: str, user: str) -> dict[str, Any]: ...

    def sync_group_roles(self, user: str, roles: dict[str, str]) -> bool: ...

    def role(self, project: str, user: str) -> str | None: ...

    def create_key(
        self,
        user: str,
        *,
        name: str,
        expires_in_days: float | None = None,
        models: list[str] | None = None,
        project: str = DEFAULT_PROJECT,
        by: str,
    ) -> tuple[dict[str, Any], str]: ...

    def key(self, user: str, key_id: str) -> dict[str, Any]: ...

    def keys(self, user: str) -> list[dict[str, Any]]: ...

    def revoke_key(self, user: str, key_id: str, *, by: str) -> dict[str, Any]: ...

    def authenticate(self, secret: str, *, now: float | None = None) -> Principal | None: ...

    def authenticate_digest(self, digest: str, *, now: float | None = None) -> Principal | None: ...

    def needs_touch(self, key_id: str, now: float | None = None) -> bool: ...

    def touch(self, key_id: str, now: float | None = None) -> None: ...

    def record(self, entry: AuditEntry) -> None: ...

    def audit(
        self,
        *,
        principal: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int | None]: ...


class QuotaAPI(Protocol):
    """What callers may ask of the projects' quotas and the admissions record."""

    def get(self, project: str) -> Quota: ...

    def quotas(self) -> dict[str, Quota]: ...

    def replica_quotas(self) -> dict[str, int]: ...

    def set(
        self,
        quota: Quota,
        *,
        by: str,
        cpus_in_use: float = 0.0,
        gpus_in_use: float = 0.0,
        running: list[str] | None = None,
    ) -> Quota: ...

    def record_admission(self, admission: Admission) -> None: ...

    def end_admissions(self, running: set[str], at: float) -> int: ...

    def admissions(self, *, since: float | None = None, project: str | None = None) -> list[Admission]: ...
