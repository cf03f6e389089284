"""Where a project's objects live in storage.

A project's datasets and code archives sit under ``projects/<project>/`` (``projects/b/datasets/...``,
``projects/b/code/...``), so two projects may each have a dataset of the same name. ``default``
keeps the storage root, so a storage written before projects is default's unchanged."""

from __future__ import annotations

import re

from aiplatform.errors import InvalidArgument

DEFAULT_PROJECT = "default"
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""What a project's name may be (as ``aiplatform.access`` checks it when the project is made)."""


def project_prefix(project: str) -> str:
    """The key prefix of ``project``'s objects: ``""`` for ``default``, else ``projects/<project>/``."""
    if project == DEFAULT_PROJECT:
        return ""
    if not isinstance(project, str) or not PROJECT_NAME.fullmatch(project):
        raise InvalidArgument(f"{str(project)[:80]!r} is not a project name")
    return f"projects/{project}/"
