"""Training templates and their parameter schemas (the UI builds its form from the schema)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from aiplatform.api.schemas.templates import TemplateList, TemplatePublic
from aiplatform.training.catalog import get_template, list_templates
from aiplatform.training.template import TaskTemplate

router = APIRouter(prefix="/v1/templates", tags=["templates"])


def describe(template: TaskTemplate) -> dict[str, Any]:
    return {
        "name": template.name,
        "title": template.title,
        "description": template.description,
        "schema": template.schema(),
    }


@router.get("", response_model=TemplateList)
def templates() -> dict[str, Any]:
    return {"templates": [describe(t) for t in list_templates()]}


@router.get("/{name}", response_model=TemplatePublic)
def template(name: str) -> dict[str, Any]:
    return describe(get_template(name))
