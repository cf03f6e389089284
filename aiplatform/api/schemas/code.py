"""Bodies of ``/v1/code``."""

from __future__ import annotations

from aiplatform.api.schemas.base import Record


class CodeArchivePublic(Record):
    """A stored archive (``CodeArchive.to_dict()``): the digest tasks name, its size, its files."""

    digest: str
    bytes: int
    files: int


class CodeArchiveContents(CodeArchivePublic):
    members: list[str]
    truncated: bool
