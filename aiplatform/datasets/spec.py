"""What an image dataset version is built from (the source, the image shape, the split and
augmentation), and what every kind of dataset spec and build shares: the splits, the content address,
the manifest's file entries and content hash."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPLITS = ("train", "val", "test")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class AugmentSpec(BaseModel):
    """Random affine copies of training images: each train row gains ``copies`` variants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    copies: int = Field(1, ge=1, le=8)
    rotation_deg: float = Field(10.0, ge=0, le=180)
    shift_frac: float = Field(0.1, ge=0, le=0.5)
    scale_frac: float = Field(0.1, ge=0, le=0.5)

    @classmethod
    def from_strength(cls, strength: float, copies: int = 1) -> AugmentSpec:
        """One knob for users: strength 1.0 = 10 degrees, 10% shift, 10% scale."""
        return cls(
            copies=copies,
            rotation_deg=min(180.0, 10.0 * strength),
            shift_frac=min(0.5, 0.1 * strength),
            scale_frac=min(0.5, 0.1 * strength),
        )


class ImageDatasetSpec(BaseModel):
    """Everything that determines an image dataset version's content.

    ``source`` is ``mnist`` (built in), ``idx:<folder uri or url>`` (the four MNIST IDX files,
    gzipped or not), ``folder:<uri>`` (one sub-folder of PNG/JPEG per class) or
    ``parquet:<uri>`` (columns ``image``: encoded PNG/JPEG bytes, and ``label``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    name: str | None = None
    image_size: int = Field(28, ge=4, le=1024)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(1 / 12, ge=0, lt=0.5)
    test_fraction: float = Field(1 / 7, ge=0, lt=0.5)
    """Used only when the source has no test split of its own."""
    seed: int = 0
    max_rows: int | None = Field(None, ge=10)
    """Keep only the first N rows of each source split (quick runs and tests)."""
    augment: AugmentSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> ImageDatasetSpec:
        kind = self.source_kind
        if kind not in ("mnist", "idx", "folder", "parquet"):
            raise ValueError(
                f"unknown dataset source {self.source!r}: use mnist, idx:<uri>, folder:<uri> or parquet:<uri>"
            )
        if kind != "mnist" and not self.source_location:
            raise ValueError(f"dataset source {self.source!r} needs a location after '{kind}:'")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ValueError(f"dataset name {self.name!r} must be lowercase letters, digits and '-'")
        return self

    @property
    def source_kind(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def source_location(self) -> str:
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if self.source_kind == "mnist":
            return "mnist"
        tail = self.source_location.rstrip("/").rsplit("/", 1)[-1]
        slug = re.sub(r"[^a-z0-9-]+", "-", tail.lower()).strip("-")[:40]
        return f"{self.source_kind}-{slug or 'data'}"

    def version_id(self, source_fingerprint: str) -> str:
        return content_version_id(self, source_fingerprint)


def content_version_id(spec: BaseModel, source_fingerprint: str) -> str:
    """A version's content address (every kind of dataset spec): the same spec over the same
    source bytes gives the same version."""
    canonical = json.dumps({"spec": spec.model_dump(mode="json"), "source": source_fingerprint}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def location_slug(location: str) -> str:
    """A source location's last part without its extension, as a dataset name's tail."""
    tail = location.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^a-z0-9-]+", "-", tail.lower()).strip("-")[:40]


def split_file_entries(files: list[Any], split: str) -> list[dict[str, Any]]:
    """A manifest's entries (key, sha256, size) for the sealed files of one split."""
    return [{"key": f.key, "sha256": f.sha256, "size": f.size} for f in files if f"/split={split}/" in f.key]


def splits_content_hash(totals: dict[str, dict[str, Any]]) -> str:
    """sha256 over each split's row count and order-independent row digest (text and table
    versions): equal rows give equal hashes, however they were cut into files."""
    return hashlib.sha256(
        json.dumps({s: [totals[s]["count"], totals[s]["digest"]] for s in sorted(totals)}).encode()
    ).hexdigest()
