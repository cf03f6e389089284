"""Where a batch job's rows come from, as ranges of rows: a dataset version's split (its Parquet
files one after another) or an uploaded input (its ``rows.parquet``). A :class:`RowSource` is a
small, picklable description that each model actor reads its parts' rows through, reading only the
row groups that hold them, so memory holds a part, not the input."""

from __future__ import annotations

import posixpath
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from aiplatform.batch.inputs import BatchInput, BatchInputs, input_key, read_row_range
from aiplatform.batch.params import BatchInputSpec
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.storage import Storage
from aiplatform.storage.projects import DEFAULT_PROJECT

if TYPE_CHECKING:
    from aiplatform.datasets import DatasetVersion
    from aiplatform.settings import Settings

DATASET, UPLOAD = "dataset", "upload"


@dataclass(frozen=True)
class RowSource:
    """A batch input as row ranges: ``files`` (storage keys and their rows, in order)."""

    kind: str
    """``dataset`` (rows as a dataset stores them) or ``upload`` (a saved ``BatchInputs`` file)."""
    describe: str
    files: list[tuple[str, int]]
    columns: list[str] | None = None
    format: str | None = None
    """An upload's format (``csv``, ``zip``, ``jsonl``)."""
    filename: str | None = None
    labels: list[str] = field(default_factory=list)
    """A dataset's class names (its ``label`` column holds their indices)."""
    data_kind: str | None = None
    """A dataset's kind (``image``, ``text``, ``tabular``)."""
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RowSource:
        return cls(**{**raw, "files": [(str(k), int(n)) for k, n in raw["files"]]})

    def read(self, storage: Storage, start: int, stop: int) -> pa.Table:
        """Rows ``start`` to ``stop`` (excluded) of the whole input."""
        pieces, offset = [], 0
        filesystem = storage.arrow_filesystem()
        for key, rows in self.files:
            if offset + rows > start and offset < stop:
                with filesystem.open_input_file(storage.arrow_path(key)) as handle:
                    parquet = pq.ParquetFile(handle)
                    table = read_row_range(parquet, max(0, start - offset), min(rows, stop - offset))
                    pieces.append(table.select(self.columns) if self.columns else table)
            offset += rows
        return pa.concat_tables(pieces) if pieces else pa.table({})


def dataset_version(spec: BatchInputSpec, storage: Storage, project: str = DEFAULT_PROJECT) -> DatasetVersion:
    """The dataset version a ``dataset`` input names among ``project``'s datasets (the job's
    task's: another project's dataset of the same name is not the one meant): the given one,
    else the latest (NotFound when the dataset has none there)."""
    from aiplatform.datasets import DatasetManager

    datasets = DatasetManager(storage, project=project)
    if spec.dataset_version is not None:
        return datasets.get(str(spec.dataset), spec.dataset_version)
    versions = datasets.list_versions(str(spec.dataset))
    if not versions:
        raise NotFound(f"Dataset {spec.dataset!r} has no versions")
    return versions[0]


def resolve_source(spec: BatchInputSpec, storage: Storage, project: str = DEFAULT_PROJECT) -> RowSource:
    """The rows a batch input names, as stored now (a dataset among ``project``'s).

    Raises:
        NotFound: no such dataset version, split or upload.
        InvalidArgument: a ``uri`` input (imported into an upload first by the job), or a file of
            a dataset version that does not match its manifest.
    """
    if spec.upload is not None:
        found = BatchInputs(storage).get(spec.upload, project)
        return RowSource(
            kind=UPLOAD,
            describe=f"{found.filename} ({found.format}, {found.rows} rows)",
            files=[(input_key(found.id, "rows.parquet"), found.rows)],
            format=found.format,
            filename=found.filename,
        )
    if spec.dataset is None:
        raise InvalidArgument("A uri input is read into an upload before it is scored")
    from aiplatform.kinds import kind_class

    version = dataset_version(spec, storage, project)
    if spec.split not in version.manifest["splits"] or not version.files(spec.split):
        raise NotFound(f"Dataset {version.ref} has no rows in split {spec.split!r}")
    files = []
    for entry in version.files(spec.split):
        if storage.recorded_sha256(entry["key"]) != entry["sha256"]:
            raise InvalidArgument(f"Dataset {version.ref} file {entry['key']!r} does not match its manifest")
        with storage.arrow_filesystem().open_input_file(storage.arrow_path(entry["key"])) as handle:
            files.append((entry["key"], pq.ParquetFile(handle).metadata.num_rows))
    columns = [c for c in kind_class(version.kind).dataset_columns if c != "variant"]
    return RowSource(
        kind=DATASET,
        describe=f"{version.ref}:{spec.split}",
        files=files,
        columns=columns,
        labels=version.labels,
        data_kind=version.kind,
        manifest={
            k: version.manifest[k] for k in ("name", "version", "kind", "image", "table") if k in version.manifest
        },
    )


def import_uri(uri: str, storage: Storage, settings: Settings) -> BatchInput:
    """Read a ``uri`` input once into ``BatchInputs`` (what every attempt of the job then reads):
    an ``http(s)://`` file fetched through the source policy (checked addresses, capped size), an
    ``s3://`` file, or an ``s3://`` folder (or one under the data root) of files a model takes one
    at a time, kept as a ZIP of them (sorted by path).

    Raises:
        InvalidArgument: the policy refuses the location, or the file is not a batch input.
        NotFound: nothing is there.
    """
    import fsspec

    from aiplatform.batch.inputs import MAX_INPUT_BYTES
    from aiplatform.datasets.source_policy import SourcePolicy

    policy = SourcePolicy.from_settings(settings)
    location = policy.check_location(uri)
    name = posixpath.basename(uri.split("?", 1)[0].rstrip("/")) or "input"
    inputs = BatchInputs(storage)
    with tempfile.TemporaryFile() as spool:
        if location.lower().startswith(("http://", "https://")):
            for chunk in policy.stream(location, uri):
                spool.write(chunk)
        else:
            fs, path = fsspec.core.url_to_fs(
                location, **(settings.s3_storage_options if location.startswith("s3://") else {})
            )
            if fs.isdir(path):
                files = sorted(p for p in fs.find(path) if not posixpath.basename(p).startswith("."))
                if not files:
                    raise NotFound(f"Input {uri!r} is an empty folder")
                with zipfile.ZipFile(spool, "w") as archive:
                    for file in files:
                        archive.writestr(posixpath.relpath(file, path.rstrip("/")), fs.cat_file(file))
                name += ".zip"
            elif fs.isfile(path):
                with fs.open(path, "rb") as handle:
                    shutil.copyfileobj(handle, spool)
            else:
                raise NotFound(f"Input {uri!r} not found")
        spool.seek(0)
        return inputs.save(name, spool, max_bytes=MAX_INPUT_BYTES)  # type: ignore[arg-type]
