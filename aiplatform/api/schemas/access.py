"""Bodies of the people-and-keys routes (``routes/access.py``): users, keys (a secret only in
the answer that made it), the audit log, and who the caller is."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aiplatform.api.schemas.base import Body, Record


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    role: str = Field("viewer", max_length=32, description="viewer, member, maintainer or admin in the project")
    platform_admin: bool = Field(False, description="may manage users, keys, projects and read the audit log")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    expires_in_days: float | None = Field(None, description="none: the key does not expire")
    models: list[str] | None = Field(None, description="a service key: inference on these models only")
    project: str = Field(
        "default",
        max_length=64,
        description="where the key's requests act when they name no project (a service key's only one)",
    )


class UserPublic(Record):
    name: str
    platform_admin: bool
    roles: dict[str, str]
    created_at: float
    created_by: str
    disabled_at: float | None = None
    live_keys: int


class UserList(Body):
    users: list[UserPublic]


class KeyPublic(Record):
    id: str
    user: str
    name: str
    project: str
    kind: str
    models: list[str] | None = None
    created_at: float
    created_by: str
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None


class KeyCreated(KeyPublic):
    secret: str = Field(description="the key itself: shown this once, never stored")


class KeyList(Body):
    keys: list[KeyPublic]


class AuditRecord(Record):
    seq: int
    at: float
    principal: str
    key_id: str | None = None
    action: str
    method: str
    resource: str
    project: str
    outcome: str
    status: int
    address: str | None = None


class AuditPage(Body):
    entries: list[AuditRecord]
    next_before: int | None = None


class Identity(Body):
    name: str
    kind: str
    platform_admin: bool
    roles: dict[str, str]
    models: list[str] | None = None
    key_id: str | None = None
    project: str | None = Field(None, description="the key's project: where requests that name none act")
