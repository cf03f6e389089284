"""Bodies of ``/v1/datasets``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiplatform.api.schemas.base import Body, Record


class DatasetSummary(Body):
    name: str
    version: str
    ref: str
    created_at: float | None
    labels: list[str] | None
    rows: dict[str, int] = Field(description="rows by split")
    content_hash: str | None
    image: dict[str, Any] | None = Field(description="the image spec (image datasets)")


class DatasetList(Body):
    datasets: list[DatasetSummary]


class Manifest(Record):
    """A dataset version's manifest: its source, splits, labels and profile (by kind)."""


class Samples(Body):
    ref: str
    split: str
    samples: list[dict[str, Any]] = Field(description="each row's id, label and what its kind shows")


class DatasetProfile(Body):
    ref: str
    labels: list[str] | None
    per_class: dict[str, Any] = Field(description="rows of each class, by split")
    profile: dict[str, Any]
