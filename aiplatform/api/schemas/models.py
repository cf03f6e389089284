"""Bodies of ``/v1/models``: the registry's models and versions, aliases, traffic splits."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiplatform.api.schemas.base import Body, Record


class ModelSummary(Record):
    name: str
    created_at: float
    latest_version: int | None
    versions: int
    aliases: dict[str, int] = Field(description="alias -> version")


class ModelList(Body):
    models: list[ModelSummary]


class ModelVersionPublic(Record):
    """One registered version (``ModelVersion.to_dict()``)."""

    name: str
    version: int
    package_key: str
    package_uri: str
    sha256: str
    size: int
    template: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    created_at: float
    aliases: list[str]
    created_by: str | None = Field(None, description="who registered it (null: unknown)")


class ModelDetail(Body):
    name: str
    aliases: dict[str, int]
    traffic: dict[str, float] = Field(description="percent by version (empty: all to production)")
    versions: list[ModelVersionPublic]
    next_before: int | None


class Lineage(Body):
    name: str
    version: int
    lineage: list[dict[str, Any]] = Field(description="the version's lineage, then each parent's")


class AliasMove(Body):
    """An alias moved (``promote``, ``rollback``); ``production`` also says from which version and
    the accuracy gate's verdict."""

    name: str
    version: int
    previous_version: int | None = None
    gate: str | None = None
    alias: str
    message: str
    by: str | None = Field(None, description="who moved it (null: unknown)")


class TrafficSplitPublic(Body):
    name: str
    weights: dict[str, float] = Field(description="percent by version")
    message: str | None = None
    set_by: str | None = Field(None, description="who set the split (absent: none, or unknown)")


class AliasEvent(Record):
    version: int | None
    previous_version: int | None
    at: float
    by: str | None = Field(None, description="who moved it (null: unknown)")


class AliasHistory(Body):
    name: str
    alias: str
    history: list[AliasEvent]


class CompressionPublic(Body):
    report: dict[str, Any]
    message: str
