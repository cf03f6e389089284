"""Bodies of the projects routes (``routes/projects.py``): projects and their members."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aiplatform.api.schemas.base import Body, Record


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="1-64 of a-z, 0-9, '.', '_', '-'")


class ProjectRename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="the project's new name")


class ProjectDeleted(Body):
    project: str
    members: int
    keys_revoked: int


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(max_length=64)
    role: str = Field(max_length=32, description="viewer, member, maintainer or admin")


class RoleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(max_length=32, description="viewer, member, maintainer or admin")


class Member(Record):
    user: str
    role: str
    granted_at: float
    granted_by: str


class ProjectPublic(Record):
    name: str
    created_at: float
    created_by: str
    members: list[Member]


class ProjectList(Body):
    projects: list[ProjectPublic]


class MemberList(Body):
    project: str
    members: list[Member]
