"""A retraining run's data: production's training data plus the labeled predictions since, capped,
with a seeded share of the fresh ones held out for the gate.

The labeled predictions' inputs are read back from where serving kept them (``results/inputs/``,
the request as it was sent) and each becomes a row with its label. Their split is a seeded hash
of the result id, so the same labels and seed always hold out the same rows. What the run trains
on is written under the data root (the only place a task's source may be read from) as a source
production's template reads, the held-out slice beside it, and the task builds its dataset version
from it as from any source:

- a table model: a parquet table of its features and label, production's test rows left out
  (:func:`without_test_rows`: the run's build encodes rows with a schema the fresh rows may
  change, and so splits them anew);
- an image model: a parquet of ``image`` (PNG) and ``label``, the image source format
  (``aiplatform.datasets.sources.read_parquet_images``). Production's images (originals, not
  augmented copies) and each fresh input decoded as serving decoded it for production (its
  framing, its size), PNG being lossless. That source has no split of its own, so its rows are
  split by a seeded hash of their content: where production's source had none either, its test
  rows go in and land in test again (:func:`image_splits_kept`); where it had one (MNIST, IDX)
  they stay out. Either way the gate's original slice is one the candidate never trained on. The
  held-out slice keeps each kept request whole, so the gate decodes it for each model as serving
  would.
- a text model: a parquet of ``text`` and ``label`` (names), the ``parquet:`` text source
  (``aiplatform.datasets.text_sources``; parquet, not CSV, so a text such as ``007`` or a label
  ``1`` reads back as written). Production's train and validation texts and each fresh input
  decoded as serving decoded it (a ``{"text": ...}`` body, an uploaded document, a v2 request's
  n-th BYTES text). The text build splits each class by rank of a seeded hash of the text, so
  adding rows moves the cut: production's test rows would not stay test rows, and are left out
  (:func:`text_splits_kept`), as is a fresh training text equal (cleaned, case-folded: the
  build's own id) to one of them or to a held-out one, so neither of the gate's slices was
  trained on.

Other kinds are refused at this step, by name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aiplatform.datasets.tabular_sources import LABEL_NAME, TabularDatasetSpec, read_table_source
from aiplatform.datasets.text_builder import text_ids
from aiplatform.errors import AIPError, Conflict
from aiplatform.kinds.base import ModelKind
from aiplatform.kinds.images import IMAGE_MAGIC
from aiplatform.limits import RequestLimits
from aiplatform.results.feedback import LabeledPrediction
from aiplatform.serving.oip_binary import attach_binary_inputs, split_body
from aiplatform.storage import Storage
from aiplatform.text import normalize_text

TABLE_KIND, IMAGE_KIND, TEXT_KIND = "tabular", "image", "text"
BUILT_KINDS = (TABLE_KIND, IMAGE_KIND, TEXT_KIND)
HOLDOUT_FILE, TRAIN_FILE = "holdout.parquet", "train.parquet"
KEPT_UPLOAD_NAME = "kept-input"
"""The file name a kept upload is decoded under (serving kept its bytes, not its name)."""


@dataclass(frozen=True)
class FreshRows:
    """Labeled predictions as table rows: those trained on and those held out for the gate."""

    train: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    unreadable: int
    """Labeled predictions whose input was not kept (or is not a table row): left out."""


def held_out(result_id: str, seed: int, fraction: float) -> bool:
    """Whether a labeled prediction is in the gate's slice: a seeded hash of its id, below ``fraction``."""
    digest = hashlib.blake2b(f"{seed}:{result_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def newest(labeled: Iterable[LabeledPrediction], cap: int) -> list[LabeledPrediction]:
    """The newest ``cap`` of the labeled predictions (read oldest first)."""
    kept: list[LabeledPrediction] = []
    for prediction in labeled:
        kept.append(prediction)
        if len(kept) > 2 * cap:
            kept = kept[-cap:]
    return kept[-cap:]


def table_row(raw: bytes, result_id: str, features: list[str]) -> dict[str, Any] | None:
    """The features a table model was sent for the result ``result_id`` (``<request id>-<n>`` is
    the n-th row of a request that held many): from a JSON ``features`` object, a JSON ``rows``
    list or a CSV upload; None for anything else (a v2 tensor holds encoded values)."""
    _, _, suffix = result_id.rpartition("-")
    index = int(suffix) if suffix.isdigit() else 0
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("features"), dict):
            row = payload["features"]
        elif isinstance(payload.get("rows"), list) and index < len(payload["rows"]):
            row = payload["rows"][index]
        else:
            return None
    elif payload is None:
        try:
            rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
        except (UnicodeDecodeError, csv.Error):
            return None
        if index >= len(rows):
            return None
        row = {k: (None if v is None or v.strip() == "" else v) for k, v in rows[index].items()}
    else:
        return None
    if not isinstance(row, dict) or any(f not in row for f in features):
        return None
    return {f: row[f] for f in features}


def fresh_rows(
    labeled: list[LabeledPrediction], storage: Storage, features: list[str], seed: int, fraction: float
) -> FreshRows:
    train, holdout, unreadable = [], [], 0
    inputs: dict[str, bytes | None] = {}
    for prediction in labeled:
        uri = prediction.input_uri
        if uri and uri not in inputs:
            inputs[uri] = storage.get_bytes(uri) if storage.exists(uri) else None
        raw = inputs.get(uri) if uri else None
        row = table_row(raw, prediction.result_id, features) if raw is not None else None
        if row is None:
            unreadable += 1
            continue
        row[LABEL_NAME] = prediction.label
        (holdout if held_out(prediction.result_id, seed, fraction) else train).append(row)
    return FreshRows(train, holdout, unreadable)


def original_table_blocks(spec: TabularDatasetSpec, storage_options: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Production's training table as its task read it (features and ``label_name``), as Ray
    Data read it: references to its Arrow blocks (whoever joins them fetches them), and the
    feature names."""
    source, features = read_table_source(spec, storage_options)
    return list(source.dataset.to_arrow_refs()), features


def concat_blocks(blocks: list[pa.Table]) -> pa.Table:
    tables = [t for t in blocks if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({})


def table_row_ids(table: pa.Table, schema: list[dict[str, Any]]) -> np.ndarray:
    """Each row's id as a table build gives it under the feature ``schema`` of its manifest
    (``aiplatform.datasets.tabular_builder.encode_rows``: a hash of the encoded row)."""
    from aiplatform.kinds.rows import FeatureSchema

    matrix = FeatureSchema(schema).encode_arrow({f["name"]: table.column(f["name"]) for f in schema})
    return np.array(
        [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") >> 1 for r in matrix],
        dtype=np.int64,
    )


def without_test_rows(table: pa.Table, schema: list[dict[str, Any]], test_ids: set[int]) -> tuple[pa.Table, int]:
    """``table`` without the rows that production's build put in its test split (ids under that
    build's feature ``schema``), and how many went. The run's build encodes with a schema of its
    own: a fresh row with a new category moves every code after it, so every row's id and split,
    and production's test rows (the gate's original slice) could land in the candidate's train
    split."""
    if not test_ids or not table.num_rows:
        return table, 0
    seen = np.isin(table_row_ids(table, schema), np.fromiter(test_ids, dtype=np.int64))
    return table.filter(pa.array(~seen)), int(seen.sum())


def as_table(rows: list[dict[str, Any]], like: pa.Schema, features: list[str]) -> pa.Table:
    """Rows (JSON values) in ``like``'s columns: numbers as float64, the rest as text."""
    columns: dict[str, pa.Array] = {}
    for name in [*features, LABEL_NAME]:
        numeric = name != LABEL_NAME and _numeric(like.field(name).type)
        values = [row.get(name) for row in rows]
        if numeric:
            columns[name] = pa.array([None if v is None or v == "" else float(v) for v in values], pa.float64())
        else:
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def widen(table: pa.Table, features: list[str]) -> pa.Table:
    """``table`` with numeric features as float64 and the rest as text (the fresh rows' types)."""
    columns = {}
    for name in [*features, LABEL_NAME]:
        column = table.column(name)
        if name != LABEL_NAME and _numeric(column.type):
            columns[name] = column.cast(pa.float64())
        else:
            columns[name] = column.cast(pa.string())
    return pa.table(columns)


def _numeric(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_decimal(arrow_type)
    )


def write_run_tables(folder: Path, original: pa.Table, features: list[str], fresh: FreshRows) -> tuple[Path, Path]:
    """The training table (original + fresh training rows) and the held-out slice, as parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    base = widen(original, features)
    train = pa.concat_tables([base, as_table(fresh.train, base.schema, features)])
    holdout = as_table(fresh.holdout, base.schema, features)
    train_path, holdout_path = folder / TRAIN_FILE, folder / HOLDOUT_FILE
    for table, path in ((train, train_path), (holdout, holdout_path)):
        _write_whole(table, path)
    return train_path, holdout_path


def holdout_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The held-out slice: feature rows and their labels."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    labels = [str(row.pop(LABEL_NAME)) for row in rows]
    return rows, labels


def require_built_kind(kind: str, model: str) -> None:
    if kind not in BUILT_KINDS:
        raise Conflict(
            f"Retraining data for {model!r} (a {kind} model) is not built yet: loops build data for"
            f" {', '.join(BUILT_KINDS)} models"
        )


# -- image models ---------------------------------------------------------------------------
def input_index(result_id: str) -> int:
    """Which of its request's inputs a result is: ``<request id>-<n>`` the n-th, else the only one."""
    head, dash, suffix = result_id.rpartition("-")
    return int(suffix) if dash and head and suffix.isdigit() else 0


def kept_request(raw: bytes) -> tuple[str, Any]:
    """A kept request as serving received it: ``("upload", bytes)`` (a PNG/JPEG file), ``("v2",
    body)`` (an Open Inference Protocol request, its binary tensors attached) or ``("json", body)``.
    The binary extension's header length was a header, not kept: the JSON header is read up to
    where it ends."""
    if raw.startswith(IMAGE_MAGIC):
        return "upload", raw
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        if not raw.lstrip().startswith(b"{"):
            return "upload", raw
        try:  # latin-1 maps each byte to one character: the end found is the header's byte count
            _, end = json.JSONDecoder().raw_decode(raw.decode("latin-1"))
        except ValueError:
            return "upload", raw
        header, binary = split_body(raw, str(end))
        body = attach_binary_inputs(header, binary)
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        return "v2", body
    return "json", body


def decode_kept(raw: bytes, result_id: str, kind: ModelKind, limits: RequestLimits) -> Any | None:
    """The input ``result_id`` was predicted from, decoded by ``kind`` as serving decoded it (an
    image: uint8 H x W x C in the model's framing; a text: the text); None where it cannot be
    (not this kind's input). A kept body that looks like JSON but that ``kind`` refuses as JSON
    was an upload (serving decoded it, or it would not have been kept): a text document may
    start with ``{``."""
    try:
        form, body = kept_request(raw)
        if form == "v2":
            items = kind.from_v2(body, limits)
            index = input_index(result_id)
            return items[index] if index < len(items) else None
        if form == "json":
            try:
                return kind.from_json(body, limits)
            except AIPError:
                pass
        return kind.from_upload(kept_upload_name(kind), raw, limits)
    except AIPError:
        return None


def kept_upload_name(kind: ModelKind) -> str:
    """A file name ``kind`` takes as an upload (serving kept the bytes, not the name)."""
    extensions = kind.request_shape().get("upload") or [".bin"]
    return KEPT_UPLOAD_NAME + str(extensions[0])


def decode_labeled(
    labeled: list[LabeledPrediction], storage: Storage, kind: ModelKind, labels: list[str]
) -> tuple[list[tuple[LabeledPrediction, bytes, Any]], int]:
    """Each labeled prediction with its kept request and its input decoded by ``kind``; how many
    were left out: no input kept, one ``kind`` cannot decode, or a label production does not
    know (it can not be given one: ``aiplatform.results.feedback``)."""
    limits = RequestLimits()
    decoded: list[tuple[LabeledPrediction, bytes, Any]] = []
    unreadable = 0
    inputs: dict[str, bytes | None] = {}
    known = set(labels)
    for prediction in labeled:
        uri = prediction.input_uri
        if uri and uri not in inputs:
            inputs[uri] = storage.get_bytes(uri) if storage.exists(uri) else None
        raw = inputs.get(uri) if uri else None
        item = decode_kept(raw, prediction.result_id, kind, limits) if raw is not None else None
        if item is None or prediction.label not in known:
            unreadable += 1
        else:
            decoded.append((prediction, raw, item))
    return decoded, unreadable


@dataclass(frozen=True)
class FreshImages:
    """Labeled image predictions: decoded images to train on, kept requests held out for the gate."""

    train_images: list[np.ndarray]
    train_labels: list[str]
    holdout: list[dict[str, Any]]
    """``{"result_id", "input": kept request bytes, "label"}``."""
    unreadable: int
    """Labeled predictions whose input was not kept, or that this kind cannot decode: left out."""


def fresh_images(
    labeled: list[LabeledPrediction],
    storage: Storage,
    kind: ModelKind,
    labels: list[str],
    seed: int,
    fraction: float,
) -> FreshImages:
    """Each labeled prediction's kept input decoded by production's ``kind`` (:func:`decode_labeled`)."""
    decoded, unreadable = decode_labeled(labeled, storage, kind, labels)
    train_images: list[np.ndarray] = []
    train_labels: list[str] = []
    holdout: list[dict[str, Any]] = []
    for prediction, raw, image in decoded:
        if held_out(prediction.result_id, seed, fraction):
            holdout.append({"result_id": prediction.result_id, "input": raw, "label": prediction.label})
        else:
            train_images.append(np.asarray(image, dtype=np.uint8))
            train_labels.append(prediction.label)
    return FreshImages(train_images, train_labels, holdout, unreadable)


def png(image: np.ndarray) -> bytes:
    """uint8 H x W x C (C 1 or 3) as PNG: lossless, so the build decodes the same pixels."""
    from PIL import Image

    pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def label_values(labels: list[str], dataset_labels: list[str]) -> pa.Array:
    """The ``label`` column a parquet image source reads back as ``dataset_labels``: class indexes
    where the classes are ``0..n-1`` (as MNIST's), else the class names (read back sorted)."""
    if dataset_labels == [str(i) for i in range(len(dataset_labels))]:
        return pa.array([int(label) for label in labels], pa.int64())
    return pa.array(labels, pa.string())


OWN_SPLIT_SOURCES = ("mnist", "idx")
"""Image sources with a test split of their own (``aiplatform.datasets.image_builder.assign_splits``)."""


def image_splits_kept(source_kind: str) -> tuple[str, ...]:
    """Production's splits a run's image source takes: its test rows only where their split was a
    hash of their content (the same hash puts them in test again); a source's own test split
    would be split anew, most of it into training."""
    return ("train", "val") if source_kind in OWN_SPLIT_SOURCES else ("train", "val", "test")


def original_images(splits: list[pa.Table], shape: tuple[int, int, int], dataset_labels: list[str]) -> pa.Table:
    """Production's rows (an image version's ``image`` raw bytes, ``label`` index, ``variant``)
    as ``image`` PNG and ``label``: its originals only, augmented copies left out (a build with
    ``augment`` makes its own)."""
    images: list[bytes] = []
    labels: list[str] = []
    for table in splits:
        originals = table.filter(pc.equal(table.column("variant"), 0))
        for raw, index in zip(originals.column("image").to_pylist(), originals.column("label").to_pylist()):
            images.append(png(np.frombuffer(raw, dtype=np.uint8).reshape(shape)))
            labels.append(dataset_labels[int(index)])
    return pa.table({"image": pa.array(images, pa.binary()), "label": label_values(labels, dataset_labels)})


def write_image_run(
    folder: Path, original: pa.Table, fresh: FreshImages, dataset_labels: list[str]
) -> tuple[Path, Path]:
    """The training source (production's images + the fresh training images) and the held-out
    slice (kept requests with their labels), as parquet, each written whole."""
    folder.mkdir(parents=True, exist_ok=True)
    added = pa.table(
        {
            "image": pa.array([png(image) for image in fresh.train_images], pa.binary()),
            "label": label_values(fresh.train_labels, dataset_labels),
        }
    )
    train = pa.concat_tables([original, added.cast(original.schema)])
    return _write_kept_run(folder, train, fresh.holdout)


def _write_kept_run(folder: Path, train: pa.Table, holdout: list[dict[str, Any]]) -> tuple[Path, Path]:
    """A run's training source and its held-out kept requests (:func:`holdout_inputs`), each whole."""
    held = pa.table(
        {
            "result_id": pa.array([h["result_id"] for h in holdout], pa.string()),
            "input": pa.array([h["input"] for h in holdout], pa.binary()),
            LABEL_NAME: pa.array([h["label"] for h in holdout], pa.string()),
        }
    )
    train_path, holdout_path = folder / TRAIN_FILE, folder / HOLDOUT_FILE
    for table, path in ((train, train_path), (held, holdout_path)):
        _write_whole(table, path)
    return train_path, holdout_path


def holdout_inputs(path: Path) -> tuple[list[str], list[bytes], list[str]]:
    """The held-out slice of an image or text run: result ids, kept requests and their labels."""
    table = pq.read_table(path)
    return (
        table.column("result_id").to_pylist(),
        table.column("input").to_pylist(),
        [str(label) for label in table.column(LABEL_NAME).to_pylist()],
    )


# -- text models ----------------------------------------------------------------------------
TEXT_COLUMN, TEXT_LABEL_COLUMN = "text", "label"
"""A text version's columns, and the run's text source's (``label``: there the class name)."""


def text_splits_kept() -> tuple[str, ...]:
    """Production's splits a run's text source takes: never its test split (the build cuts each
    class by rank, so its test rows would not land in test again)."""
    return ("train", "val")


def text_key(text: str) -> int:
    """The id the text build gives ``text`` (its cleaned, case-folded form): equal texts share it."""
    return int(text_ids([normalize_text(text)])[0])


@dataclass(frozen=True)
class FreshTexts:
    """Labeled text predictions: decoded texts to train on, kept requests held out for the gate."""

    train_texts: list[str]
    train_labels: list[str]
    holdout: list[dict[str, Any]]
    """``{"result_id", "input": kept request bytes, "label"}``."""
    unreadable: int
    """Labeled predictions whose input was not kept, that this kind cannot decode, or whose label
    production does not know: left out."""
    seen: int
    """Training texts left out because the same text is in production's test split or held out."""


def fresh_texts(
    labeled: list[LabeledPrediction],
    storage: Storage,
    kind: ModelKind,
    labels: list[str],
    seed: int,
    fraction: float,
    test_ids: set[int],
) -> FreshTexts:
    """Each labeled prediction's kept input decoded by production's ``kind`` into its text (a v2
    request's n-th); ``test_ids``: production's test split's ``id`` column."""
    decoded, unreadable = decode_labeled(labeled, storage, kind, labels)
    holdout: list[dict[str, Any]] = []
    training: list[tuple[str, str]] = []
    unseen = set(test_ids)
    for prediction, raw, text in decoded:
        if held_out(prediction.result_id, seed, fraction):
            holdout.append({"result_id": prediction.result_id, "input": raw, "label": prediction.label})
            unseen.add(text_key(text))
        else:
            training.append((str(text), prediction.label))
    kept = [(text, label) for text, label in training if text_key(text) not in unseen]
    return FreshTexts(
        [text for text, _ in kept], [label for _, label in kept], holdout, unreadable, len(training) - len(kept)
    )


def without_ids(table: pa.Table, ids: set[int]) -> pa.Table:
    """A built split's rows but those whose ``id`` is in ``ids``."""
    if not ids or not table.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(sorted(ids), pa.int64()))))


def original_texts(splits: list[pa.Table], dataset_labels: list[str]) -> pa.Table:
    """Production's rows (a text version's ``text`` and ``label`` index) as ``text`` and
    ``label`` names."""
    texts: list[str] = []
    names: list[str] = []
    for table in splits:
        texts += [str(text) for text in table.column(TEXT_COLUMN).to_pylist()]
        names += [dataset_labels[int(index)] for index in table.column(TEXT_LABEL_COLUMN).to_pylist()]
    return pa.table({TEXT_COLUMN: pa.array(texts, pa.string()), TEXT_LABEL_COLUMN: pa.array(names, pa.string())})


def write_text_run(folder: Path, original: pa.Table, fresh: FreshTexts) -> tuple[Path, Path]:
    """The training source (production's texts + the fresh training texts) and the held-out
    slice (kept requests with their labels), as parquet, each written whole."""
    folder.mkdir(parents=True, exist_ok=True)
    added = pa.table(
        {
            TEXT_COLUMN: pa.array(fresh.train_texts, pa.string()),
            TEXT_LABEL_COLUMN: pa.array(fresh.train_labels, pa.string()),
        }
    )
    return _write_kept_run(folder, pa.concat_tables([original, added]), fresh.holdout)


def _write_whole(table: pa.Table, path: Path) -> None:
    partial = path.with_suffix(".tmp")
    pq.write_table(table, partial)
    partial.replace(path)  # whole or absent: a restarted step writes it again
