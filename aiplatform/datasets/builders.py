"""Dataset builders: one per source format, found by the type of its spec.

A build has the same steps for every format, and :class:`DatasetManager.build` runs them once:
check the source against the policy, read it, address the version by the spec and the source's
fingerprint, reuse a committed version or open a build folder, make the rows, write them as
sealed parquet partitioned by split, describe them in the manifest, refuse a build without the
rows training needs, commit. A builder fills in what differs between formats
(:class:`DatasetBuilder`); the manager keeps the version layout, the commit and the readers.

A new source format is a module with a builder (``image_builder.py``, ``text_builder.py``,
``tabular_builder.py`` are the examples) and its entry in ``BUILDERS``; the builders never import
this module (they match the protocol by shape).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import ray.data
from pydantic import BaseModel

from aiplatform.datasets.image_builder import ImageBuilder
from aiplatform.datasets.source_policy import HttpGet
from aiplatform.datasets.tabular_builder import TabularBuilder
from aiplatform.datasets.text_builder import TextBuilder
from aiplatform.errors import InvalidArgument
from aiplatform.storage import ObjectInfo, Storage


class Source(Protocol):
    """A source as read for a build: what its version's address is computed from."""

    @property
    def fingerprint(self) -> str: ...


class Rows(Protocol):
    """A build's rows, ready to be written: ``{id, ..., label, split}``, the columns the kind's
    ``dataset_columns`` reads plus the ``split`` partition."""

    @property
    def dataset(self) -> ray.data.Dataset: ...


@runtime_checkable
class DatasetBuilder(Protocol):
    """What one source format's build does; the manager calls these in order, once per build."""

    spec_type: type[BaseModel]
    """The spec this builder builds (its key in ``BUILDERS``)."""
    kind: str
    """The manifest's ``kind``: the name of the model kind (``aiplatform.kinds``) that reads its rows."""
    manifest_format: int

    def limits(self) -> AbstractContextManager[None]:
        """Ray Data settings the whole build runs under."""
        ...

    def read(self, spec: Any, storage_options: dict[str, Any], http_get: HttpGet) -> Source:
        """The source as Ray Data rows; ``http(s)`` locations are fetched with ``http_get``."""
        ...

    def rows(self, spec: Any, source: Any, streaming_bytes: int) -> Rows:
        """The rows to write (lazy or materialized); a source that cannot make a dataset fails
        here, before anything is written. ``streaming_bytes``: above it a source is built streaming."""
        ...

    def describe(self, spec: Any, source: Any, rows: Any, files: list[ObjectInfo], storage: Storage) -> dict[str, Any]:
        """The manifest after its common header (format, kind, name, version, times, spec, source
        fingerprint): at least ``labels``, ``splits`` (per split: rows, per_class, files) and
        ``content_hash``, read from the sealed ``files`` just written."""
        ...

    def refusal(self, spec: Any, manifest: dict[str, Any]) -> str | None:
        """Why the described version cannot be committed (too few rows), or None."""
        ...


BUILDERS: dict[type[BaseModel], DatasetBuilder] = {
    builder.spec_type: builder for builder in (ImageBuilder(), TextBuilder(), TabularBuilder())
}

UNMARKED_MANIFEST_KIND = ImageBuilder.kind
"""The kind of a manifest that names none: image builds wrote none before every build named its kind."""


def builder_for(spec: BaseModel) -> DatasetBuilder:
    """The builder of ``spec``'s source format; InvalidArgument names the specs there are builders for."""
    try:
        return BUILDERS[type(spec)]
    except KeyError:
        known = sorted(spec_type.__name__ for spec_type in BUILDERS)
        raise InvalidArgument(f"No dataset builder for {type(spec).__name__}; builders exist for {known}") from None
