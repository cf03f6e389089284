"""Bodies of ``/v1/datasets``."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from aiplatform.api.schemas.base import Body, Record


class DatasetSummary(Body):
    name: str
    version: str
    ref: str
    created_at: Optional[float]
    labels: Optional[list[str]]
    rows: dict[str, int] = Field(description="rows by split")
    content_hash: Optional[str]
    image: Optional[dict[str, Any]] = Field(description="the image spec (image datasets)")


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
    labels: Optional[list[str]]
    per_class: dict[str, Any] = Field(description="rows of each class, by split")
    profile: dict[str, Any]
