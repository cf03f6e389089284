"""Bodies of ``/v1/templates``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiplatform.api.schemas.base import Body


class TemplatePublic(Body):
    name: str
    title: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", description="the parameters' JSON schema (the UI's form)")


class TemplateList(Body):
    templates: list[TemplatePublic]
