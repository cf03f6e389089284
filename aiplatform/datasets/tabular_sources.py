"""Labelled tables, each read into one Ray Dataset of its feature columns and its label column.

    penguins        the Palmer penguins (344 rows, 7 features, 3 species) shipped in the PyPI
                    package ``palmerpenguins`` (its CSV is read; the package is not imported)
    breast-cancer   scikit-learn's bundled Wisconsin breast-cancer table (569 rows, 30 features)
    wine            scikit-learn's bundled wine table (178 rows, 13 features, 3 cultivars)
    csv:<uri>       a CSV file or folder of them (header row)
    parquet:<uri>   parquet
URIs are local paths, ``file://``, ``s3://`` (the platform's S3 settings) or ``http(s)://``. The
label column is named by the user (the built-in tables have their own); every other column is a
feature unless ``feature_columns`` names them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiplatform.datasets.source_policy import HttpGet, trusted_fetch
from aiplatform.datasets.sources import SourceData, _arrow_fs, is_http
from aiplatform.datasets.spec import content_version_id, location_slug
from aiplatform.datasets.text_sources import fetched_table, package_data_file, source_files
from aiplatform.errors import InvalidArgument
from aiplatform.kinds.tabular import MAX_FEATURES

PENGUINS, BREAST_CANCER, WINE = "penguins", "breast-cancer", "wine"
BUILT_IN_TABLES = (PENGUINS, BREAST_CANCER, WINE)
TABLE_SOURCE_KINDS = ("csv", "parquet")
BUILT_IN_LABELS = {PENGUINS: "species", BREAST_CANCER: "diagnosis", WINE: "cultivar"}
LABEL_NAME = "label_name"
"""The label column's name in the rows read (the raw label; ``label`` is its index once built)."""
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_COLUMN = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


class TabularDatasetSpec(BaseModel):
    """Everything that determines a table dataset version's content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    label_column: str | None = Field(None, description="default: the built-in table's own, else 'label'")
    feature_columns: tuple[str, ...] | None = Field(None, min_length=1, max_length=MAX_FEATURES)
    name: str | None = None
    val_fraction: float = Field(0.15, ge=0.01, lt=0.5)
    test_fraction: float = Field(0.15, ge=0.01, lt=0.5)
    seed: int = 0
    max_rows: int | None = Field(None, ge=10)
    """Keep a seeded random subset of N source rows (quick runs and tests)."""
    max_categories: int = Field(64, ge=2, le=10_000)
    """A text column with more distinct values than this is refused (an id or free text, not a category)."""

    @field_validator("label_column")
    @classmethod
    def _label_name(cls, value: str | None) -> str | None:
        if value is not None and not _COLUMN.fullmatch(value):
            raise ValueError("a column name is 1-128 characters without control characters")
        return value

    @field_validator("feature_columns")
    @classmethod
    def _feature_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        bad = [c for c in value if not isinstance(c, str) or not _COLUMN.fullmatch(c)]
        if bad:
            raise ValueError(f"column names are 1-128 characters without control characters: {bad[:3]}")
        if len(set(value)) != len(value):
            raise ValueError("feature_columns names a column twice")
        return value

    @model_validator(mode="after")
    def _check(self) -> TabularDatasetSpec:
        kind = self.source_kind
        if kind not in BUILT_IN_TABLES and kind not in TABLE_SOURCE_KINDS:
            raise ValueError(
                f"unknown table source {self.source!r}: use {', '.join(BUILT_IN_TABLES)}, csv:<uri> or parquet:<uri>"
            )
        if kind in TABLE_SOURCE_KINDS and not self.source_location:
            raise ValueError(f"table source {self.source!r} needs a location after '{kind}:'")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ValueError(f"dataset name {self.name!r} must be lowercase letters, digits and '-'")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        if self.feature_columns and self.label in self.feature_columns:
            raise ValueError(f"the label column {self.label!r} cannot also be a feature")
        return self

    @property
    def source_kind(self) -> str:
        return self.source if self.source in BUILT_IN_TABLES else self.source.split(":", 1)[0]

    @property
    def source_location(self) -> str:
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def label(self) -> str:
        """The label column's name."""
        return self.label_column or BUILT_IN_LABELS.get(self.source_kind, "label")

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if self.source_kind in BUILT_IN_TABLES:
            return self.source_kind
        return f"{self.source_kind}-{location_slug(self.source_location) or 'table'}"

    def version_id(self, source_fingerprint: str) -> str:
        return content_version_id(self, source_fingerprint)


def penguins_file() -> Path:
    """The penguins CSV inside the installed ``palmerpenguins`` distribution (not imported)."""
    return package_data_file("palmerpenguins", ("data", "penguins.csv"), "The penguins table")


def _penguins() -> tuple[pa.Table, str]:
    import pyarrow.csv as pacsv

    path = penguins_file()
    data = path.read_bytes()
    # "NA" marks the missing measurements and sexes of a few birds.
    options = pacsv.ConvertOptions(null_values=["NA", ""], strings_can_be_null=True)
    table = pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    return table, hashlib.sha256(data).hexdigest()


def _sklearn_table(loader: str, label: str) -> Callable[[], tuple[pa.Table, str]]:
    def read() -> tuple[pa.Table, str]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame = bunch.frame.rename(columns=lambda c: str(c).replace(" ", "_"))
        names = [str(n) for n in bunch.target_names]
        frame[label] = [names[int(i)] for i in frame.pop("target")]
        table = pa.Table.from_pandas(frame, preserve_index=False)
        sink = pa.BufferOutputStream()
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sink)
        return table, hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()

    return read


_BUILT_IN_READERS: dict[str, Callable[[], tuple[pa.Table, str]]] = {
    PENGUINS: _penguins,
    BREAST_CANCER: _sklearn_table("load_breast_cancer", BUILT_IN_LABELS[BREAST_CANCER]),
    WINE: _sklearn_table("load_wine", BUILT_IN_LABELS[WINE]),
}


def _unparsable(spec: TabularDatasetSpec, exc: BaseException) -> InvalidArgument:
    # The kind of error only: a parser's message quotes the rows it choked on.
    return InvalidArgument(
        f"Table source {spec.source!r} cannot be parsed as {spec.source_kind} ({type(exc).__name__})"
    )


def read_table_source(
    spec: TabularDatasetSpec, storage_options: dict[str, Any] | None = None, http_get: HttpGet = trusted_fetch
) -> tuple[SourceData, list[str]]:
    """The source as Ray Data rows of its feature columns and its label column (renamed
    ``label_name``), and the feature columns' names in order. ``labels`` are filled later."""
    options = storage_options or {}
    if spec.source_kind in BUILT_IN_TABLES:
        table, fingerprint = _BUILT_IN_READERS[spec.source_kind]()
        dataset = ray.data.from_arrow(table)
    elif is_http(spec.source_location):
        data = http_get(spec.source_location, spec.source)
        try:
            dataset = ray.data.from_arrow(fetched_table(spec, data))
        except Exception as exc:
            raise _unparsable(spec, exc) from exc
        fingerprint = hashlib.sha256(data).hexdigest()
    else:
        fs, files, fingerprint = source_files(spec, options, "Table source")
        reader = {"csv": ray.data.read_csv, "parquet": ray.data.read_parquet}[spec.source_kind]
        try:
            dataset = reader(files, filesystem=_arrow_fs(fs))
        except Exception as exc:
            raise _unparsable(spec, exc) from exc
    try:
        names = list(dataset.schema().names)
    except Exception as exc:
        raise _unparsable(spec, exc) from exc
    present = set(names)  # one pass: a wide file's header is not searched once per wanted column
    missing = [c for c in (spec.label, *(spec.feature_columns or [])) if c not in present]
    if missing:
        # The names asked for, and the file's column count: nothing read from the file is quoted.
        raise InvalidArgument(
            f"Table source {spec.source!r} has no column(s) {missing} (it has {len(names)} "
            "columns). Name them with label_column / feature_columns"
        )
    features = list(spec.feature_columns or [c for c in names if c != spec.label])
    if not features:
        raise InvalidArgument(f"Table source {spec.source!r} has no feature columns besides {spec.label!r}")
    if len(features) > MAX_FEATURES:
        raise InvalidArgument(
            f"Table source {spec.source!r} has {len(features)} feature columns; the limit is "
            f"{MAX_FEATURES} (name them with feature_columns)"
        )
    chosen = set(features)
    bad = [position for position, c in enumerate(names, start=1) if c in chosen and not _COLUMN.fullmatch(c)]
    if bad:
        raise InvalidArgument(
            f"Table source {spec.source!r} has {len(bad)} feature column name(s) with control "
            f"characters or over 128 characters (column(s) {bad[:10]}, counting from 1); "
            "rename them or leave them out of feature_columns"
        )
    if LABEL_NAME in features:
        raise InvalidArgument(
            f"Table source {spec.source!r} has a feature column named {LABEL_NAME!r}, a name the "
            "platform keeps for the label; rename it"
        )
    if spec.max_rows is not None:
        dataset = dataset.random_shuffle(seed=spec.seed).limit(spec.max_rows)
    dataset = dataset.select_columns([*features, spec.label])
    if spec.label != LABEL_NAME:
        dataset = dataset.rename_columns({spec.label: LABEL_NAME})
    return SourceData(dataset, [], fingerprint), features
