"""The dataset manager: build immutable, content-addressed dataset versions on Ray Data, and read them.

A version lives at ``datasets/<name>/<version>/`` of its project (``projects/<p>/datasets/...``;
``default``'s at the storage root, where they were before projects): hive-partitioned parquet under its build's
folder (``build-<unix time>-<random>/data/split=<split>/``) and a ``manifest.json`` written last.
A version without its manifest is an aborted build: it is removed and rebuilt; a version with one
is reused as is. What differs between source formats is each format's builder (``builders.py``);
the manager runs the steps every build shares, once. A manager acts in one project
(``in_project``): names are unique within it, and another project's datasets are not found.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data
from pydantic import BaseModel
from ray.data import FileShuffleConfig

from aiplatform.datasets.builders import UNMARKED_MANIFEST_KIND, builder_for
from aiplatform.datasets.execution import STREAMING_OBJECT_STORE_BYTES as STREAMING_OBJECT_STORE_BYTES
from aiplatform.datasets.execution import ShuffleName, bounded_data, shuffle_strategy
from aiplatform.datasets.source_policy import HttpGet, SourcePolicy, trusted_fetch
from aiplatform.datasets.spec import SPLITS
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.kinds import kind_class
from aiplatform.settings import Settings
from aiplatform.storage import ObjectInfo, Storage, validate_key
from aiplatform.storage.projects import DEFAULT_PROJECT, project_prefix

# STREAMING_OBJECT_STORE_BYTES is imported from here by training's engine; shuffle_strategy by bench/.

MAX_SAMPLES = 100
"""Most rows one request for samples returns (each may carry an image)."""
BUILD_FOLDER = "build-"
"""Each build of a version writes its files under ``<version>/build-<unix time>-<random>/``."""
ABANDONED_BUILD_S = 24 * 3600
"""A build folder the manifest does not name, older than this, is what a killed build left."""
STREAMED_READ_CPUS = 0.25
"""CPUs a read task of a split streamed during training reserves."""
STREAMED_READ_TASKS = 2
"""Read tasks of one streamed split at once: a quarter CPU each would let eight run on two
cores, each a worker process of its own (~0.5 GB), for a read that keeps up with training
with two."""
STREAMING_BYTES: int = Settings.model_fields["dataset_streaming_bytes"].default
"""Above this many stored bytes a source is built, and a version trained on, streaming
(``Settings.dataset_streaming_bytes`` says how)."""

SpecT = TypeVar("SpecT", bound=BaseModel)


@dataclass(frozen=True)
class DatasetVersion:
    """A built dataset version: its manifest and where its files are."""

    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def kind(self) -> str:
        """The name of the model kind (``aiplatform.kinds``) that reads its rows."""
        return str(self.manifest.get("kind", UNMARKED_MANIFEST_KIND))

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        image = self.manifest["image"]
        return int(image["height"]), int(image["width"]), int(image["channels"])

    def rows(self, split: str) -> int:
        return int(self.manifest["splits"][split]["rows"])

    def files(self, split: str) -> list[dict[str, Any]]:
        return list(self.manifest["splits"][split]["files"])


class DatasetManager:
    """Builds, finds and reads dataset versions in the platform's storage."""

    def __init__(
        self,
        storage: Storage,
        source_storage_options: dict[str, Any] | None = None,
        shuffle: ShuffleName = "sort",
        source_policy: SourcePolicy | None = None,
        streaming_bytes: int = STREAMING_BYTES,
        project: str = DEFAULT_PROJECT,
    ):
        self.storage = storage
        self.project = project
        self.root = f"{project_prefix(project)}datasets"
        """Where this project's datasets are kept (``datasets`` for ``default``)."""
        self.source_storage_options = source_storage_options or {}
        self.shuffle = shuffle
        self.streaming_bytes = streaming_bytes
        self.source_policy = source_policy
        """When set, every source is checked against it before it is read and ``http(s)`` sources
        are fetched through it (sources named by API callers); unset, sources are read as given."""

    @classmethod
    def from_settings(
        cls, storage: Storage, settings: Settings, *, untrusted: bool = False, project: str = DEFAULT_PROJECT
    ) -> DatasetManager:
        """The manager configured as the platform is: S3 source options and shuffle strategy;
        ``untrusted`` applies the source allow-list (a task created through the API); acting in
        ``project`` (a task's datasets are its project's)."""
        policy = SourcePolicy.from_settings(settings) if untrusted else None
        return cls(
            storage,
            settings.s3_storage_options,
            shuffle=settings.data_shuffle,
            source_policy=policy,
            streaming_bytes=settings.dataset_streaming_bytes,
            project=project,
        )

    def in_project(self, project: str) -> DatasetManager:
        """This manager, configured the same, acting in ``project``."""
        if project == self.project:
            return self
        scoped = copy.copy(self)
        scoped.project, scoped.root = project, f"{project_prefix(project)}datasets"
        return scoped

    def _checked(self, spec: SpecT) -> tuple[SpecT, HttpGet]:
        """``spec`` as its source is to be read (checked against the policy, if any: a local
        location becomes the path it resolved to) and the fetch its HTTP reads use."""
        if self.source_policy is None:
            return spec, trusted_fetch
        source = self.source_policy.check_source(spec.source)
        return spec.model_copy(update={"source": source}), self.source_policy.fetch

    # -- build ------------------------------------------------------------------------------
    def build(self, spec: BaseModel) -> DatasetVersion:
        """Build the version for ``spec`` with its format's builder (``builders.py``), or return
        the existing one with the same content."""
        builder = builder_for(spec)
        with shuffle_strategy(self.shuffle), builder.limits():
            spec, http_get = self._checked(spec)
            source = builder.read(spec, self.source_storage_options, http_get)
            name, version = spec.dataset_name, spec.version_id(source.fingerprint)  # type: ignore[attr-defined]
            root, prefix, built = self._prefix_to_build(name, version)
            if built is not None:
                return built
            started = time.time()
            try:
                rows = builder.rows(spec, source, self.streaming_bytes)
            except Exception as exc:
                raise _unwrap(exc) from exc
            files = self._write_rows(rows.dataset, prefix)
            described = builder.describe(spec, source, rows, files, self.storage)
            manifest = {
                "format": builder.manifest_format,
                "kind": builder.kind,
                "name": name,
                "version": version,
                "created_at": time.time(),
                "build_seconds": round(time.time() - started, 2),
                "spec": spec.model_dump(mode="json"),
                "source_fingerprint": source.fingerprint,
                **described,
            }
            refusal = builder.refusal(spec, manifest)
            if refusal is not None:
                self.storage.remove_tree(prefix)
                raise InvalidArgument(refusal)
            return self._commit(root, manifest)

    def _prefix_to_build(self, name: str, version: str) -> tuple[str, str, DatasetVersion | None]:
        """The version's folder, the folder this build writes its files to, and the version if
        it was already built.

        Two processes may build the same version at once (a sweep's trials each reading their
        dataset): each writes under a folder of its own and commits by writing the manifest last,
        so neither touches the other's files; the manifest written last names its build's files,
        and a reader of either manifest finds whole, sealed files. What killed builds left is
        removed once it is a day old (a build in progress is never that old)."""
        root = f"{self.root}/{name}/{version}"
        if self.storage.exists(f"{root}/manifest.json"):
            return root, "", self.get(name, version)
        self._remove_abandoned_builds(root)
        return root, f"{root}/{BUILD_FOLDER}{int(time.time())}-{uuid.uuid4().hex[:8]}", None

    def _remove_abandoned_builds(self, root: str) -> None:
        folders = {key[len(root) + 1 :].split("/", 1)[0] for key in self.storage.find_unsealed(root)}
        for folder in folders:
            if folder == "data":  # the one shared folder of builds before build folders: never committed
                self.storage.remove_tree(f"{root}/{folder}")
            elif folder.startswith(BUILD_FOLDER):
                started = folder[len(BUILD_FOLDER) :].split("-", 1)[0]
                if started.isdigit() and time.time() - int(started) > ABANDONED_BUILD_S:
                    self.storage.remove_tree(f"{root}/{folder}")

    def _commit(self, root: str, manifest: dict[str, Any]) -> DatasetVersion:
        """The build's last step: its manifest, naming its files, makes the version exist."""
        self.storage.put_bytes(f"{root}/manifest.json", json.dumps(manifest, indent=2).encode())
        return DatasetVersion(manifest)

    def _write_rows(self, rows: ray.data.Dataset, prefix: str) -> list[ObjectInfo]:
        """Write the rows as parquet partitioned by split under ``prefix/data``, each file sealed
        with its sha256. On any failure (also while Ray computes lazy rows) the half-written
        version is removed and the platform's own error, unwrapped from Ray's, is raised."""
        try:
            rows.write_parquet(
                self.storage.arrow_path(f"{prefix}/data"),
                filesystem=self.storage.arrow_filesystem(),
                partition_cols=["split"],
                min_rows_per_file=4096,
            )
        except Exception as exc:  # Ray wraps user errors; surface the platform's own message.
            self.storage.remove_tree(prefix)
            raise _unwrap(exc) from exc
        return [
            self.storage.seal(key) for key in self.storage.find_unsealed(f"{prefix}/data") if key.endswith(".parquet")
        ]

    # -- lookups ----------------------------------------------------------------------------
    def get(self, name: str, version: str) -> DatasetVersion:
        """Load a version's manifest; :class:`NotFound` when it was never (fully) built."""
        key = f"{self.root}/{name}/{version}/manifest.json"
        validate_key(key)
        if not self.storage.exists(key):
            raise NotFound(f"Dataset version (name={name}, version={version}) not found")
        return DatasetVersion(json.loads(self.storage.get_bytes(key)))

    def get_ref(self, ref: str) -> DatasetVersion:
        """Load ``name@version``."""
        name, sep, version = ref.partition("@")
        if not sep or not name or not version:
            raise InvalidArgument(f"Dataset reference {ref!r} must look like name@version")
        return self.get(name, version)

    def list_versions(self, name: str | None = None) -> list[DatasetVersion]:
        """Every built version (of one dataset, or of all) of this project, newest first."""
        prefix = f"{self.root}/{name}" if name else self.root
        keys = [k for k in self.storage.list(prefix) if k.endswith("/manifest.json")]
        versions = [DatasetVersion(json.loads(self.storage.get_bytes(k))) for k in keys]
        return sorted(versions, key=lambda v: v.manifest["created_at"], reverse=True)

    def read_split(
        self,
        version: DatasetVersion,
        split: str,
        *,
        verify: bool = True,
        streamed: bool = False,
        shuffle_files_seed: int | None = None,
    ) -> ray.data.Dataset:
        """A split as a Ray Dataset (id, image, label, variant; or id, text, label); files checked
        first. ``streamed``: read while training runs, so each read task takes a fraction of a
        CPU (the workers hold the rest on a small node; a whole one would wait for ever).
        ``shuffle_files_seed``: each execution (each epoch) reads the files in a new order drawn
        from that seed, the streaming counterpart of a cached split's random block order."""
        files = self._checked_files(version, split, verify=verify)
        with bounded_data() if streamed else contextlib.nullcontext():
            return ray.data.read_parquet(
                [self.storage.arrow_path(f["key"]) for f in files],
                filesystem=self.storage.arrow_filesystem(),
                columns=_split_columns(version),
                partitioning=None,
                shuffle=None if shuffle_files_seed is None else FileShuffleConfig(seed=shuffle_files_seed),
                ray_remote_args={"num_cpus": STREAMED_READ_CPUS} if streamed else None,
                concurrency=STREAMED_READ_TASKS if streamed else None,
            )

    def streams(self, version: DatasetVersion, splits: tuple[str, ...] = ("train", "val")) -> bool:
        """Whether training reads these splits from storage every epoch rather than caching them
        in Ray's object store: their files total more than ``streaming_bytes``."""
        return sum(int(entry["size"]) for split in splits for entry in version.files(split)) > self.streaming_bytes

    def training_splits(
        self, version: DatasetVersion, splits: tuple[str, ...], seed: int = 0
    ) -> tuple[dict[str, ray.data.Dataset], bool]:
        """The splits a training run reads, and whether they are cached. Up to ``streaming_bytes``
        they are materialized in the object store now, before the workers take their CPUs (on a
        small cluster a read started later could find none left); larger, they are read from
        storage every epoch by streamed reads, the train files in a new order drawn from ``seed``."""
        if self.streams(version, splits):
            return {
                split: self.read_split(
                    version, split, streamed=True, shuffle_files_seed=seed if split == "train" else None
                )
                for split in splits
            }, False
        return {split: self.materialized_split(version, split) for split in splits}, True

    def materialized_split(self, version: DatasetVersion, split: str) -> ray.data.MaterializedDataset:
        """A split held in Ray's object store, one block per file. Up to ``streaming_bytes`` it is
        read in this process (every file checked against its sha256) and put there: a Ray Data read
        of a few hundred rows cost 1-3 s of planning and task starts on 2 cores, paid by every
        training run for each split, where this takes ~0.05 s. Larger, Ray Data's read tasks
        materialize it."""
        if self.streams(version, (split,)):
            return self.read_split(version, split).materialize()
        return ray.data.from_arrow(self._file_tables(version, split))

    def read_split_table(self, version: DatasetVersion, split: str) -> pa.Table:
        """A split read in this process as one Arrow table, every file verified against its
        sha256. For small splits read where no Ray Data task can be scheduled (inside a task
        that holds the CPUs, next to Serve replicas on a small machine)."""
        return pa.concat_tables(self._file_tables(version, split))

    def sample_table(self, version: DatasetVersion, split: str, rows: int) -> pa.Table:
        """The first ``rows`` rows of a split (rows are stored shuffled), reading only as many
        files as that takes."""
        tables, have = [], 0
        for entry in self._checked_files(version, split, verify=False):
            if have >= rows:
                break
            tables.append(self._file_table(version, entry))
            have += tables[-1].num_rows
        return pa.concat_tables(tables).slice(0, rows)

    def samples(
        self,
        version: DatasetVersion,
        split: str,
        *,
        label: str | None = None,
        ids: list[str] | None = None,
        limit: int = 24,
    ) -> list[dict[str, Any]]:
        """Rows of a split for a person to look at: the first ``limit`` (of one class, with
        ``label``), or the rows named by ``ids`` in that order (the evaluation's worst examples);
        each its id, class and what its kind shows of it (an image, a text, a row's values)."""
        if not 1 <= limit <= MAX_SAMPLES or (ids is not None and not 1 <= len(ids) <= MAX_SAMPLES):
            raise InvalidArgument(f"Ask for 1 to {MAX_SAMPLES} samples at a time")
        if label is not None and label not in version.labels:
            raise InvalidArgument(f"Dataset {version.ref} has no class {label!r}; its classes: {version.labels[:50]}")
        wanted = pa.array(sorted(set(ids)), type=pa.string()) if ids is not None else None
        limit = len(wanted) if wanted is not None else limit
        picked, have = [], 0
        for entry in self._checked_files(version, split, verify=False):
            table = self._file_table(version, entry)
            if wanted is not None:
                table = table.filter(pc.is_in(pc.cast(table.column("id"), pa.string()), value_set=wanted))
            elif label is not None:
                table = table.filter(pc.equal(table.column("label"), version.labels.index(label)))
            picked.append(table.slice(0, limit - have))
            have += picked[-1].num_rows
            if have >= limit:
                break
        table = pa.concat_tables(picked)
        previews = kind_class(version.kind).sample_previews(table, version.manifest)
        rows = [
            {"id": str(row_id), "label": version.labels[int(row_label)], **preview}
            for row_id, row_label, preview in zip(
                table.column("id").to_pylist(), table.column("label").to_pylist(), previews
            )
        ]
        if ids is not None:
            by_id = {row["id"]: row for row in rows}
            rows = [by_id[i] for i in ids if i in by_id]
        return rows

    def _file_tables(self, version: DatasetVersion, split: str) -> list[pa.Table]:
        """Every file of a split, read in this process, each checked against its sha256."""
        return [self._file_table(version, entry) for entry in self._checked_files(version, split, verify=False)]

    def _file_table(self, version: DatasetVersion, entry: dict[str, Any]) -> pa.Table:
        """One of a split's files, read in this process (``get_bytes`` checks its sha256)."""
        return pq.read_table(pa.BufferReader(self.storage.get_bytes(entry["key"])), columns=_split_columns(version))

    def _checked_files(self, version: DatasetVersion, split: str, *, verify: bool) -> list[dict[str, Any]]:
        if split not in SPLITS:
            raise InvalidArgument(f"Unknown split {split!r}; use one of {list(SPLITS)}")
        files = version.files(split)
        if not files:
            raise NotFound(f"Dataset {version.ref} has no rows in split {split!r}")
        for entry in files:
            recorded = self.storage.recorded_sha256(entry["key"])
            if recorded != entry["sha256"]:
                raise InvalidArgument(f"Dataset {version.ref} file {entry['key']!r} does not match its manifest")
            if verify:
                self.storage.get_bytes(entry["key"])  # raises IntegrityError when corrupt
        return files


def _split_columns(version: DatasetVersion) -> list[str]:
    return list(kind_class(version.kind).dataset_columns)


def _unwrap(exc: BaseException) -> BaseException:
    """The platform error buried in a Ray task error, if any."""
    from aiplatform.errors import AIPError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AIPError):
            return type(current)(current.message)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    message = str(exc)
    for line in reversed(message.splitlines()):
        for cls_name in ("InvalidArgument", "NotFound", "IntegrityError"):
            if f"{cls_name}:" in line:
                from aiplatform import errors

                return getattr(errors, cls_name)(line.split(f"{cls_name}:", 1)[1].strip())
    return exc
