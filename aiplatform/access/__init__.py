"""Identity and authorization: users, API keys (stored hashed), service keys scoped to models,
roles in projects, the one authorization point and the audit log (docs/SECURITY.md, "Teams")."""

from aiplatform.access.actions import RequestAction, audited, request_action
from aiplatform.access.roles import (
    DEFAULT_PROJECT,
    PLATFORM_ADMIN,
    ROLES,
    Action,
    Principal,
    authorize,
)
from aiplatform.access.store import AccessStore, AuditEntry

__all__ = [
    "DEFAULT_PROJECT",
    "PLATFORM_ADMIN",
    "ROLES",
    "AccessStore",
    "Action",
    "AuditEntry",
    "Principal",
    "RequestAction",
    "audited",
    "authorize",
    "request_action",
]
