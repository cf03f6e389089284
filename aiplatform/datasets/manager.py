"""The dataset manager: build immutable, content-addressed dataset versions on Ray Data.

A version lives at ``datasets/<name>/<version>/``: hive-partitioned parquet under ``data/`` and a
``manifest.json`` written last. A version without its manifest is an aborted build: it is removed
and rebuilt; a version with one is reused as is.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Optional, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data
from ray.data import FileShuffleConfig
from ray.data.context import DataContext, ShuffleStrategy

from aiplatform.datasets.augment import hash_uniform, random_affine
from aiplatform.datasets.source_policy import HttpGet, SourcePolicy, trusted_fetch
from aiplatform.datasets.sources import read_source
from aiplatform.datasets.spec import SPLITS, AugmentSpec, DatasetSpec, split_file_entries
from aiplatform.datasets.table_builder import build_table_rows, table_manifest
from aiplatform.datasets.table_sources import TableDatasetSpec, read_table_source
from aiplatform.datasets.text_builder import build_text_rows, text_manifest, text_profile
from aiplatform.datasets.text_sources import TextDatasetSpec, read_text_source
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.kinds import kind_class
from aiplatform.settings import Settings
from aiplatform.storage import Storage, validate_key

MANIFEST_FORMAT = 1
HISTOGRAM_BINS = 16
SPLIT_STREAM = 7
MAX_SAMPLES = 100
"""Most rows one request for samples returns (each may carry an image)."""
BUILD_FOLDER = "build-"
"""Each build of a version writes its files under ``<version>/build-<unix time>-<random>/``."""
ABANDONED_BUILD_S = 24 * 3600
"""A build folder the manifest does not name, older than this, is what a killed build left."""
LOCAL_STATISTICS_BYTES = 64 << 20
"""A version's files up to this size are profiled in the building process, not by Ray Data."""
STREAMED_READ_CPUS = 0.25
"""CPUs a read task of a split streamed during training reserves."""
STREAMED_READ_TASKS = 2
"""Read tasks of one streamed split at once: a quarter CPU each would let eight run on two
cores, each a worker process of its own (~0.5 GB), for a read that keeps up with training
with two."""
STATISTICS_BATCH_ROWS = 4096
"""Rows profiled at once (each becomes floats: 4096 28x28 images are ~25 MB of them)."""
STREAMING_BYTES: int = Settings.model_fields["dataset_streaming_bytes"].default
"""Above this many stored bytes a source is built, and a version trained on, streaming
(``Settings.dataset_streaming_bytes`` says how)."""

IMAGE_BLOCK_BYTES = 16 << 20
"""Ray Data's largest block in image builds and streamed reads. At Ray's 128 MiB a 16x MNIST
source was read as 3 blocks of 130 MB of PNGs, each decoded by one task: blocks (and the memory
of the tasks holding them) grew with the source up to that size. At 16 MiB decoding ran 17%
faster (30 s against 36 s)."""

STREAMING_OBJECT_STORE_BYTES = 512 << 20
"""Ray Data's object-store budget while an image version is built or a large one streams into
training. Left at Ray's (half the object store, GBs), a streamed read runs ahead of what
consumes it until the budget is full, so memory grew with the dataset (16x MNIST peaked at 3.1 GB
of worker memory building, 2.6 GB with this budget)."""

ShuffleName = Literal["sort", "hash"]
_SHUFFLE_STRATEGIES = {"sort": ShuffleStrategy.SORT_SHUFFLE_PULL_BASED, "hash": ShuffleStrategy.HASH_SHUFFLE}
_Method = TypeVar("_Method", bound=Callable[..., Any])
SpecT = TypeVar("SpecT", DatasetSpec, TextDatasetSpec, TableDatasetSpec)


@contextlib.contextmanager
def shuffle_strategy(name: ShuffleName) -> Iterator[None]:
    """Run Ray Data's groupbys and shuffles with ``name``'s strategy, then restore the driver's.

    Ray's default hash shuffle starts aggregator actors for every groupby and shuffle: on a 2-core
    node that cost ~20 s per text build whatever its size, where the sort-based pull shuffle took
    4 s (and 32 s instead of 44 s for the 38k-tweet corpus). Clusters shuffling many GBs may pick
    ``hash`` (``AIP_DATA_SHUFFLE``)."""
    context = DataContext.get_current()
    previous = context.shuffle_strategy
    context.shuffle_strategy = _SHUFFLE_STRATEGIES[name]
    try:
        yield
    finally:
        context.shuffle_strategy = previous


@contextlib.contextmanager
def bounded_data(block_bytes: int = IMAGE_BLOCK_BYTES,
                 object_store_bytes: int = STREAMING_OBJECT_STORE_BYTES) -> Iterator[None]:
    """Datasets created here cut blocks at ``block_bytes`` and keep at most ``object_store_bytes``
    in flight (Ray Data reads its driver's context when a read is planned, and each dataset keeps
    a copy); the driver's context is restored after."""
    context = DataContext.get_current()
    previous = context.target_max_block_size, context.execution_options.resource_limits
    context.target_max_block_size = block_bytes
    context.execution_options.resource_limits = previous[1].copy(object_store_memory=object_store_bytes)
    try:
        yield
    finally:
        context.target_max_block_size, context.execution_options.resource_limits = previous


def _with_own_shuffle(method: _Method) -> _Method:
    @functools.wraps(method)
    def wrapper(self: "DatasetManager", *args: Any, **kwargs: Any) -> Any:
        with shuffle_strategy(self.shuffle):
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


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
        """``image`` or ``text``."""
        return str(self.manifest.get("kind", "image"))

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


def assign_splits(
    batch: dict[str, np.ndarray], spec: DatasetSpec
) -> dict[str, np.ndarray]:
    """Seeded split by row id; train rows gain augmented copies when the spec asks."""
    ids = np.asarray(batch["id"], dtype=np.int64)
    source_split = np.asarray(batch["source_split"]).astype(str)
    u = hash_uniform(spec.seed, ids, SPLIT_STREAM)
    split = np.where(source_split == "test", "test", "train").astype(object)
    if not (source_split == "test").any() and not (source_split == "train").any():
        split[u < spec.test_fraction] = "test"
        split[(u >= spec.test_fraction) & (u < spec.test_fraction + spec.val_fraction)] = "val"
    else:
        split[(source_split != "test") & (u < spec.val_fraction)] = "val"
    out = {
        "id": ids,
        "image": np.asarray(batch["image"], dtype=object),
        "label": np.asarray(batch["label"], dtype=np.int64),
        "split": split,
        "variant": np.zeros(len(ids), dtype=np.int32),
    }
    if spec.augment is not None:
        out = _with_augmented_copies(out, spec.augment, spec)
    return out


def _with_augmented_copies(
    rows: dict[str, np.ndarray], augment: AugmentSpec, spec: DatasetSpec
) -> dict[str, np.ndarray]:
    train = rows["split"] == "train"
    if not train.any():
        return rows
    shape = (spec.image_size, spec.image_size, spec.channels)
    images = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(shape) for b in rows["image"][train]])
    parts = [rows]
    for copy_index in range(augment.copies):
        warped = random_affine(images, rows["id"][train], copy_index, augment, spec.seed)
        parts.append(
            {
                "id": rows["id"][train],
                "image": np.array([w.tobytes() for w in warped], dtype=object),
                "label": rows["label"][train],
                "split": rows["split"][train],
                "variant": np.full(int(train.sum()), copy_index + 1, dtype=np.int32),
            }
        )
    return {key: np.concatenate([p[key] for p in parts]) for key in rows}


def split_statistics(batch: dict[str, np.ndarray], num_classes: int) -> dict[str, np.ndarray]:
    """Per-split partial sums for one batch (combined in the driver)."""
    out: dict[str, list[Any]] = {
        "split": [], "count": [], "sum": [], "sumsq": [], "hist": [], "classes": [], "digest": []
    }
    splits = np.asarray(batch["split"]).astype(str)
    for split in np.unique(splits):
        mask = splits == split
        out["digest"].append(_rows_digest(split, batch, mask))
        pixels = np.frombuffer(b"".join(batch["image"][mask]), dtype=np.uint8).astype(np.float64)
        out["split"].append(split)
        out["count"].append(int(mask.sum()))
        out["sum"].append(pixels.sum() / 255.0)
        out["sumsq"].append(np.square(pixels / 255.0).sum())
        out["hist"].append(np.histogram(pixels, bins=HISTOGRAM_BINS, range=(0, 256))[0])
        out["classes"].append(np.bincount(batch["label"][mask], minlength=num_classes)[:num_classes])
    return {
        "split": np.array(out["split"], dtype=object),
        "count": np.array(out["count"], dtype=np.int64),
        "sum": np.array(out["sum"]),
        "sumsq": np.array(out["sumsq"]),
        "hist": np.stack(out["hist"]) if out["hist"] else np.zeros((0, HISTOGRAM_BINS)),
        "classes": np.stack(out["classes"]) if out["classes"] else np.zeros((0, num_classes)),
        "digest": np.array(out["digest"], dtype=np.uint64),
    }


def _rows_digest(split: str, batch: dict[str, np.ndarray], mask: np.ndarray) -> int:
    """Order-independent digest of rows: the sum (mod 2**64) of a hash of each row's identity.

    ``id`` already hashes the image bytes; variants are fixed by (id, variant, spec).
    """
    split_code = SPLITS.index(split) + 1
    ids = np.asarray(batch["id"], dtype=np.int64)[mask]
    key = (
        ids.astype(np.uint64) * np.uint64(31)
        + np.asarray(batch["variant"], dtype=np.uint64)[mask] * np.uint64(1_000_003)
        + np.asarray(batch["label"], dtype=np.uint64)[mask] * np.uint64(7_919)
    )
    row_hashes = (hash_uniform(split_code, key.view(np.int64), 11) * 2.0**53).astype(np.uint64)
    with np.errstate(over="ignore"):
        return int(row_hashes.sum(dtype=np.uint64))


class DatasetManager:
    """Builds, finds and reads dataset versions in the platform's storage."""

    def __init__(self, storage: Storage, source_storage_options: Optional[dict[str, Any]] = None,
                 shuffle: ShuffleName = "sort", source_policy: Optional[SourcePolicy] = None,
                 streaming_bytes: int = STREAMING_BYTES):
        self.storage = storage
        self.source_storage_options = source_storage_options or {}
        self.shuffle = shuffle
        self.streaming_bytes = streaming_bytes
        self.source_policy = source_policy
        """When set, every source is checked against it before it is read and ``http(s)`` sources
        are fetched through it (sources named by API callers); unset, sources are read as given."""

    @classmethod
    def from_settings(cls, storage: Storage, settings: "Settings", *, untrusted: bool = False) -> "DatasetManager":
        """The manager configured as the platform is: S3 source options and shuffle strategy;
        ``untrusted`` applies the source allow-list (a task created through the API)."""
        policy = SourcePolicy.from_settings(settings) if untrusted else None
        return cls(storage, settings.s3_storage_options, shuffle=settings.data_shuffle, source_policy=policy,
                   streaming_bytes=settings.dataset_streaming_bytes)

    def _checked(self, spec: SpecT) -> tuple[SpecT, HttpGet]:
        """``spec`` as its source is to be read (checked against the policy, if any: a local
        location becomes the path it resolved to) and the fetch its HTTP reads use."""
        if self.source_policy is None:
            return spec, trusted_fetch
        source = self.source_policy.check_source(spec.source)
        return spec.model_copy(update={"source": source}), self.source_policy.fetch

    # -- build ------------------------------------------------------------------------------
    @_with_own_shuffle
    def build(self, spec: DatasetSpec | TextDatasetSpec | TableDatasetSpec) -> DatasetVersion:
        """Build the version for ``spec``, or return the existing one with the same content."""
        if isinstance(spec, TextDatasetSpec):
            return self.build_text(spec)
        if isinstance(spec, TableDatasetSpec):
            return self.build_table(spec)
        with bounded_data():
            return self._build_images(spec)

    def _build_images(self, spec: DatasetSpec) -> DatasetVersion:
        spec, http_get = self._checked(spec)
        source = read_source(spec, self.source_storage_options, http_get)
        name, version = spec.dataset_name, spec.version_id(source.fingerprint)
        root, prefix, built = self._prefix_to_build(name, version)
        if built is not None:
            return built
        started = time.time()
        rows = source.dataset.map_batches(assign_splits, fn_kwargs={"spec": spec}, batch_size=1024)
        if source.stored_bytes is None or source.stored_bytes <= self.streaming_bytes:
            # Files hold rows in random order (class-sorted sources would otherwise give training
            # one class per block). A larger source streams from read to write instead: a global
            # shuffle holds every row in the object store at once; its rows were mixed where they
            # were read (an image folder's files are read in a seeded random order).
            rows = rows.random_shuffle(seed=spec.seed)
        files = self._write_rows(rows, prefix)
        stats = self._statistics(files, len(source.labels))
        splits: dict[str, Any] = {}
        for split in SPLITS:
            s = stats.get(split)
            splits[split] = {
                "rows": s["count"] if s else 0,
                "per_class": (
                    {label: int(n) for label, n in zip(source.labels, s["classes"])} if s else {}
                ),
                "files": split_file_entries(files, split),
            }
        if splits["train"]["rows"] == 0:
            self.storage.remove_tree(prefix)
            raise InvalidArgument(f"Dataset source {spec.source!r} produced no training rows")
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "version": version,
            "created_at": time.time(),
            "build_seconds": round(time.time() - started, 2),
            "spec": spec.model_dump(mode="json"),
            "source_fingerprint": source.fingerprint,
            "schema": {
                "id": "int64 (content hash of the image bytes)",
                "image": "binary: raw uint8, height x width x channels, row-major",
                "label": "int64 index into labels",
                "variant": "int32 (0 original, k>0 the k-th augmented copy)",
                "split": "hive partition: train | val | test",
            },
            "image": {"height": spec.image_size, "width": spec.image_size, "channels": spec.channels},
            "labels": source.labels,
            "splits": splits,
            "content_hash": _content_hash(stats),
            "profile": {
                split: {
                    "mean_intensity": s["mean"],
                    "std_intensity": s["std"],
                    "intensity_histogram": s["hist"],
                }
                for split, s in stats.items()
            },
        }
        return self._commit(root, manifest)

    @_with_own_shuffle
    def build_text(self, spec: TextDatasetSpec) -> DatasetVersion:
        """Build the text version for ``spec`` (see ``text_builder``), or return the existing one."""
        spec, http_get = self._checked(spec)
        source = read_text_source(spec, self.source_storage_options, http_get)
        name, version = spec.dataset_name, spec.version_id(source.fingerprint)
        root, prefix, built = self._prefix_to_build(name, version)
        if built is not None:
            return built
        started = time.time()
        try:  # cleans, deduplicates and splits (materialized); nothing is written yet
            rows, labels, cleaning = build_text_rows(source.dataset, spec)
        except Exception as exc:
            raise _unwrap(exc) from exc
        files = self._write_rows(rows, prefix)
        written = ray.data.read_parquet([self.storage.arrow_path(f.key) for f in files],
                                        filesystem=self.storage.arrow_filesystem()).materialize()
        stats = text_profile(written, labels)
        leaked = (written.groupby("id", num_partitions=max(2, written.count() // 50_000)).count()
                  .filter(lambda row: row["count()"] > 1).count())
        manifest = text_manifest(spec, name, version, source.fingerprint, labels, files, stats, cleaning,
                                 leaked, started)
        if manifest["splits"]["train"]["rows"] == 0:
            self.storage.remove_tree(prefix)
            raise InvalidArgument(f"Text source {spec.source!r} produced no training rows")
        return self._commit(root, manifest)

    @_with_own_shuffle
    def build_table(self, spec: TableDatasetSpec) -> DatasetVersion:
        """Build the table version for ``spec`` (see ``table_builder``), or return the existing one."""
        spec, http_get = self._checked(spec)
        source, feature_names = read_table_source(spec, self.source_storage_options, http_get)
        name, version = spec.dataset_name, spec.version_id(source.fingerprint)
        root, prefix, built = self._prefix_to_build(name, version)
        if built is not None:
            return built
        started = time.time()
        try:  # the statistics pass runs here; nothing is written yet
            rows, features, labels, cleaning = build_table_rows(source.dataset, spec, feature_names)
        except Exception as exc:
            raise _unwrap(exc) from exc
        files = self._write_rows(rows.random_shuffle(seed=spec.seed), prefix)
        written = ray.data.read_parquet([self.storage.arrow_path(f.key) for f in files],
                                        filesystem=self.storage.arrow_filesystem())
        manifest = table_manifest(spec, name, version, source.fingerprint, features, labels, files, written,
                                  cleaning, started)
        if manifest["splits"]["train"]["rows"] == 0 or manifest["splits"]["val"]["rows"] == 0:
            self.storage.remove_tree(prefix)
            raise InvalidArgument(f"Table source {spec.source!r} gave {manifest['cleaning']['rows']} labelled rows: "
                                  "too few for training and validation splits")
        return self._commit(root, manifest)

    def _prefix_to_build(self, name: str, version: str) -> tuple[str, str, Optional[DatasetVersion]]:
        """The version's folder, the folder this build writes its files to, and the version if
        it was already built.

        Two processes may build the same version at once (a sweep's trials each reading their
        dataset): each writes under a folder of its own and commits by writing the manifest last,
        so neither touches the other's files; the manifest written last names its build's files,
        and a reader of either manifest finds whole, sealed files. What killed builds left is
        removed once it is a day old (a build in progress is never that old)."""
        root = f"datasets/{name}/{version}"
        if self.storage.exists(f"{root}/manifest.json"):
            return root, "", self.get(name, version)
        self._remove_abandoned_builds(root)
        return root, f"{root}/{BUILD_FOLDER}{int(time.time())}-{uuid.uuid4().hex[:8]}", None

    def _remove_abandoned_builds(self, root: str) -> None:
        folders = {key[len(root) + 1:].split("/", 1)[0] for key in self.storage.find_unsealed(root)}
        for folder in folders:
            if folder == "data":  # the one shared folder of builds before build folders: never committed
                self.storage.remove_tree(f"{root}/{folder}")
            elif folder.startswith(BUILD_FOLDER):
                started = folder[len(BUILD_FOLDER):].split("-", 1)[0]
                if started.isdigit() and time.time() - int(started) > ABANDONED_BUILD_S:
                    self.storage.remove_tree(f"{root}/{folder}")

    def _commit(self, root: str, manifest: dict[str, Any]) -> DatasetVersion:
        """The build's last step: its manifest, naming its files, makes the version exist."""
        self.storage.put_bytes(f"{root}/manifest.json", json.dumps(manifest, indent=2).encode())
        return DatasetVersion(manifest)

    def _write_rows(self, rows: ray.data.Dataset, prefix: str) -> list[Any]:
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
            self.storage.seal(key)
            for key in self.storage.find_unsealed(f"{prefix}/data")
            if key.endswith(".parquet")
        ]

    def _statistics(self, files: list[Any], num_classes: int) -> dict[str, dict[str, Any]]:
        if not files:
            return {}
        if sum(f.size for f in files) <= LOCAL_STATISTICS_BYTES:
            partial = self._local_partial_statistics(files, num_classes)
        else:
            dataset = ray.data.read_parquet(
                [self.storage.arrow_path(f.key) for f in files],
                filesystem=self.storage.arrow_filesystem(),
            )
            partial = dataset.map_batches(
                split_statistics, fn_kwargs={"num_classes": num_classes}, batch_size=STATISTICS_BATCH_ROWS
            ).take_all()
        totals: dict[str, dict[str, Any]] = {}
        for row in partial:
            t = totals.setdefault(
                str(row["split"]),
                {
                    "count": 0, "sum": 0.0, "sumsq": 0.0, "digest": 0,
                    "hist": np.zeros(HISTOGRAM_BINS), "classes": np.zeros(num_classes),
                },
            )
            t["digest"] = (t["digest"] + int(row["digest"])) % 2**64
            t["count"] += int(row["count"])
            t["sum"] += float(row["sum"])
            t["sumsq"] += float(row["sumsq"])
            t["hist"] = t["hist"] + np.asarray(row["hist"])
            t["classes"] = t["classes"] + np.asarray(row["classes"])
        result = {}
        for split, t in totals.items():
            pixels = max(1.0, float(t["hist"].sum()))
            mean = t["sum"] / pixels
            result[split] = {
                "count": t["count"],
                "classes": [int(c) for c in t["classes"]],
                "mean": round(mean, 6),
                "std": round(float(np.sqrt(max(0.0, t["sumsq"] / pixels - mean**2))), 6),
                "hist": [round(float(h) / pixels, 6) for h in t["hist"]],
                "digest": t["digest"],
            }
        return result

    def _local_partial_statistics(self, files: list[Any], num_classes: int) -> list[dict[str, Any]]:
        """The partial sums of a small version, a batch of a file at a time in this process: below
        tens of MB a Ray Data pass spends seconds scheduling work that takes a fraction of one
        here. Batches are as large as the Ray pass's: a whole file at once took 2.5 GB of floats
        for a 38 MB version."""
        partial: list[dict[str, Any]] = []
        filesystem = self.storage.arrow_filesystem()
        for entry in files:
            split = entry.key.split("/split=", 1)[1].split("/", 1)[0]
            with filesystem.open_input_file(self.storage.arrow_path(entry.key)) as handle:
                for record_batch in pq.ParquetFile(handle).iter_batches(batch_size=STATISTICS_BATCH_ROWS):
                    batch = {name: record_batch.column(name).to_numpy(zero_copy_only=False)
                             for name in record_batch.schema.names}
                    batch["split"] = np.full(record_batch.num_rows, split, dtype=object)
                    sums = split_statistics(batch, num_classes)
                    partial += [{key: values[i] for key, values in sums.items()} for i in range(len(sums["split"]))]
        return partial

    # -- lookups ----------------------------------------------------------------------------
    def get(self, name: str, version: str) -> DatasetVersion:
        """Load a version's manifest; :class:`NotFound` when it was never (fully) built."""
        key = f"datasets/{name}/{version}/manifest.json"
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

    def list_versions(self, name: Optional[str] = None) -> list[DatasetVersion]:
        """Every built version (of one dataset, or of all), newest first."""
        prefix = f"datasets/{name}" if name else "datasets"
        keys = [k for k in self.storage.list(prefix) if k.endswith("/manifest.json")]
        versions = [DatasetVersion(json.loads(self.storage.get_bytes(k))) for k in keys]
        return sorted(versions, key=lambda v: v.manifest["created_at"], reverse=True)

    def read_split(self, version: DatasetVersion, split: str, *, verify: bool = True, streamed: bool = False,
                   shuffle_files_seed: Optional[int] = None) -> ray.data.Dataset:
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

    def training_splits(self, version: DatasetVersion, splits: tuple[str, ...],
                        seed: int = 0) -> tuple[dict[str, ray.data.Dataset], bool]:
        """The splits a training run reads, and whether they are cached. Up to ``streaming_bytes``
        they are materialized in the object store now, before the workers take their CPUs (on a
        small cluster a read started later could find none left); larger, they are read from
        storage every epoch by streamed reads, the train files in a new order drawn from ``seed``."""
        if self.streams(version, splits):
            return {split: self.read_split(version, split, streamed=True,
                                           shuffle_files_seed=seed if split == "train" else None)
                    for split in splits}, False
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

    def samples(self, version: DatasetVersion, split: str, *, label: Optional[str] = None,
                ids: Optional[list[str]] = None, limit: int = 24) -> list[dict[str, Any]]:
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
        rows = [{"id": str(row_id), "label": version.labels[int(row_label)], **preview} for row_id, row_label, preview
                in zip(table.column("id").to_pylist(), table.column("label").to_pylist(), previews)]
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
                raise InvalidArgument(
                    f"Dataset {version.ref} file {entry['key']!r} does not match its manifest"
                )
            if verify:
                self.storage.get_bytes(entry["key"])  # raises IntegrityError when corrupt
        return files


def _split_columns(version: DatasetVersion) -> list[str]:
    return list(kind_class(version.kind).dataset_columns)


def _content_hash(stats: dict[str, dict[str, Any]]) -> str:
    """sha256 over each split's row count and row digest: equal rows give equal hashes, however
    they were cut into files."""
    import hashlib

    text = "\n".join(f"{split}:{stats[split]['count']}:{stats[split]['digest']}" for split in sorted(stats))
    return hashlib.sha256(text.encode()).hexdigest()


def _unwrap(exc: BaseException) -> BaseException:
    """The platform error buried in a Ray task error, if any."""
    from aiplatform.errors import AIPError

    seen: set[int] = set()
    current: Optional[BaseException] = exc
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
