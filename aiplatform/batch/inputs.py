"""Files uploaded to be scored by batch jobs, kept in storage under the sha256 of their content.

A file is checked once, when it is saved, and kept as rows a job reads in ranges: a CSV of table
rows (every cell as the text it was, so a part is decoded by the model's kind exactly as a served
CSV upload is), JSON lines of texts (``{"text": ..., "id": ..., "label": ...}``), or a ZIP of files
a model takes one at a time (images; a file's folder is its true label). Layout::

    batch-inputs/<sha256>/input.json     what was first uploaded: format, file name, bytes, rows
    batch-inputs/<sha256>/rows.parquet   its rows (id, then the format's columns)
    batch-inputs/<sha256>/projects/<p>   a project that uploaded it: the file name it gave (JSON)

The same content saved twice is one input; each project that uploads it is marked with its own
file name, and a job of a project names only the inputs its project uploaded (one uploaded before
projects, with no mark, is ``default``'s). A project is answered with its own file name, never
another's, so an upload does not tell that another project sent the same bytes. A file that is empty, over ``max_bytes``, in no known
format or unreadable is refused (:class:`InvalidArgument`, :class:`TooLarge`) and nothing is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import zipfile
from dataclasses import asdict, dataclass, replace
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from aiplatform.access import DEFAULT_PROJECT
from aiplatform.errors import InvalidArgument, NotFound, TooLarge
from aiplatform.storage import Storage

INPUTS_PREFIX = "batch-inputs"
MAX_INPUT_BYTES = 2 * 1024**3
"""The largest file a batch job takes by default (the API may pass a smaller ``max_bytes``)."""
MAX_ZIP_ENTRY_BYTES = 64 * 1024**2
"""One file inside a ZIP, uncompressed."""
MAX_ZIP_EXPANSION = 20
"""A ZIP may hold at most this many times its own size, uncompressed (a ZIP bomb is refused)."""
ROW_GROUP_ROWS = 4096
"""Rows per row group of ``rows.parquet``: a job reads a range of rows without the whole file."""
ID_COLUMN = "id"
LABEL_COLUMN = "label"
CSV, ZIP, JSONL = "csv", "zip", "jsonl"
FORMATS = (CSV, ZIP, JSONL)
IGNORED_ZIP_PREFIXES = ("__MACOSX/",)
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class BatchInput:
    """One saved input: its id (the sha256 of its content) and what it holds."""

    id: str
    format: str
    filename: str
    bytes: int
    rows: int
    columns: tuple[str, ...] = ()
    """The rows' columns (a CSV's header; ``id``, ``text``, ``label`` of JSON lines; ``id``,
    ``data``, ``label`` of a ZIP)."""
    has_labels: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns)
        return data


def input_key(input_id: str, name: str) -> str:
    return f"{INPUTS_PREFIX}/{input_id}/{name}"


class BatchInputs:
    """Saved batch inputs in ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def save(
        self, filename: str, data: BinaryIO, *, max_bytes: int = MAX_INPUT_BYTES, project: str = DEFAULT_PROJECT
    ) -> BatchInput:
        """Check and keep an uploaded file of ``project``; the same content saved again is the same input.

        Raises:
            TooLarge: the file is over ``max_bytes``.
            InvalidArgument: it is empty, in no known format (by content, then by name), or
                unreadable in its format (the message names the first bad line or entry).
        """
        raw, digest = _read_capped(data, max_bytes, filename)
        name = posixpath.basename(str(filename or "input").replace("\\", "/")) or "input"
        existing = self._find(digest)
        if existing is not None:
            self._mark(digest, project, name)
            return replace(existing, filename=name)
        fmt = detect_format(name, raw)
        table = ROW_READERS[fmt](raw, name)
        if table.num_rows == 0:
            raise InvalidArgument(f"Input {name!r} has no rows to score")
        found = BatchInput(
            id=digest,
            format=fmt,
            filename=name,
            bytes=len(raw),
            rows=table.num_rows,
            columns=tuple(table.column_names),
            has_labels=LABEL_COLUMN in table.column_names and table.column(LABEL_COLUMN).null_count < table.num_rows,
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS)
        self.storage.put_bytes(input_key(digest, "rows.parquet"), sink.getvalue())
        # Written last: an input whose rows are not all stored is not found (and saved again).
        self.storage.put_bytes(input_key(digest, "input.json"), json.dumps(found.to_dict()).encode())
        self._mark(digest, project, name)
        return found

    def uploaded_by(self, input_id: str, project: str) -> bool:
        """Whether ``project`` uploaded the input (one from before projects, unmarked: ``default``)."""
        if not _is_id(input_id):
            return False
        if self.storage.exists(input_key(input_id, f"projects/{project}")):
            return True
        return project == DEFAULT_PROJECT and not self.storage.list(input_key(input_id, "projects"))

    def _mark(self, input_id: str, project: str, filename: str) -> None:
        self.storage.put_bytes(input_key(input_id, f"projects/{project}"), json.dumps({"filename": filename}).encode())

    def get(self, input_id: str, project: str | None = None) -> BatchInput:
        """The input saved under ``input_id`` (with ``project``, named as that project uploaded
        it); :class:`NotFound` when there is none."""
        found = self._find(input_id) if _is_id(input_id) else None
        if found is None:
            raise NotFound(f"Batch input {input_id!r} not found; upload the file first")
        key = input_key(input_id, f"projects/{project}")
        if project is not None and self.storage.exists(key):
            raw = self.storage.get_bytes(key)  # a mark from before file names were kept: empty
            if raw:
                return replace(found, filename=str(json.loads(raw)["filename"]))
        return found

    def rows_path(self, input_id: str) -> str:
        """Where the input's rows are inside the storage's Arrow filesystem."""
        return self.storage.arrow_path(input_key(input_id, "rows.parquet"))

    def read_rows(self, input_id: str, start: int, stop: int) -> pa.Table:
        """Rows ``start`` to ``stop`` (excluded), reading only the row groups that hold them."""
        with self.storage.arrow_filesystem().open_input_file(self.rows_path(input_id)) as handle:
            return read_row_range(pq.ParquetFile(handle), start, stop)

    def _find(self, input_id: str) -> BatchInput | None:
        key = input_key(input_id, "input.json")
        if not self.storage.exists(key):
            return None
        raw = json.loads(self.storage.get_bytes(key))
        return BatchInput(**{**raw, "columns": tuple(raw.get("columns", ()))})


def read_row_range(parquet: pq.ParquetFile, start: int, stop: int) -> pa.Table:
    """Rows ``start`` to ``stop`` of a Parquet file, reading only the row groups that hold them."""
    groups, offset, first = [], 0, None
    for index in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(index).num_rows
        if offset + rows > start and offset < stop:
            groups.append(index)
            first = offset if first is None else first
        offset += rows
    if not groups:
        return parquet.schema_arrow.empty_table()
    table = parquet.read_row_groups(groups)
    return table.slice(start - int(first or 0), stop - start)


def detect_format(filename: str, data: bytes) -> str:
    """``zip`` by its magic number; ``jsonl`` when it starts with ``{``, or by name; else ``csv``
    when it is a ``.csv`` or plain text. Anything else is refused by name."""
    lower = filename.lower()
    if data.startswith(b"PK\x03\x04"):
        return ZIP
    if data.startswith(b"PK"):
        raise InvalidArgument(f"Input {filename!r} is a damaged or empty ZIP")
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if lower.endswith((".jsonl", ".ndjson")) or head.startswith(b"{"):
        return JSONL
    if lower.endswith((".csv", ".txt")) or (head and b"\x00" not in head):
        return CSV
    raise InvalidArgument(
        f"Input {filename!r} is in no format a batch job reads: send a CSV of table rows, a ZIP of "
        'images, or JSON lines of texts ({"text": ...} per line)'
    )


def _read_capped(data: BinaryIO, max_bytes: int, filename: str) -> tuple[bytes, str]:
    digest, parts, size = hashlib.sha256(), [], 0
    while chunk := data.read(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"Input {filename!r} is over the limit of {max_bytes:,} bytes")
        digest.update(chunk)
        parts.append(chunk)
    if size == 0:
        raise InvalidArgument(f"Input {filename!r} is empty")
    return b"".join(parts), digest.hexdigest()


def _is_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _csv_rows(data: bytes, filename: str) -> pa.Table:
    """Every cell as its text (an empty cell is an empty string), columns named by the header."""
    try:
        header = next(iter(pacsv.open_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(block_size=1 << 16))))
        names = header.schema.names
    except StopIteration:
        names = _csv_header(data, filename)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"Input {filename!r} is not a readable CSV: {exc}") from None
    if len(set(names)) != len(names):
        raise InvalidArgument(f"Input {filename!r} names a column twice in its header: {names[:20]}")
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InvalidArgument(f"Input {filename!r} is not a readable CSV: {exc}") from None
    ids = (
        table.column(ID_COLUMN)
        if ID_COLUMN in names
        else pa.array([str(i) for i in range(table.num_rows)], type=pa.string())
    )
    columns = [ids] + [table.column(n) for n in names if n != ID_COLUMN]
    return pa.table(columns, names=[ID_COLUMN] + [n for n in names if n != ID_COLUMN])


def _csv_header(data: bytes, filename: str) -> list[str]:
    text = data.decode("utf-8-sig", errors="replace").splitlines()
    if not text or not text[0].strip():
        raise InvalidArgument(f"Input {filename!r} has no header row naming its columns")
    raise InvalidArgument(f"Input {filename!r} has a header but no rows")


def _jsonl_rows(data: bytes, filename: str) -> pa.Table:
    ids, texts, labels = [], [], []
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"Input {filename!r} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidArgument(f"Input {filename!r} line {number} is not JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InvalidArgument(f'Input {filename!r} line {number} must be an object with a "text" string')
        label = row.get(LABEL_COLUMN)
        ids.append(str(row["id"]) if row.get("id") is not None else str(len(ids)))
        texts.append(row["text"])
        labels.append(None if label is None else str(label))
    return pa.table(
        {
            ID_COLUMN: pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            LABEL_COLUMN: pa.array(labels, pa.string()),
        }
    )


def _zip_rows(data: bytes, filename: str) -> pa.Table:
    """Each file of the ZIP (folders, hidden files and ``__MACOSX`` left out): its path, bytes and
    its folder's name as the true label (none at the top level)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and not info.filename.startswith(IGNORED_ZIP_PREFIXES)
            and not posixpath.basename(info.filename).startswith(".")
        ]
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InvalidArgument(f"Input {filename!r} is not a readable ZIP: {exc}") from None
    total = sum(info.file_size for info in entries)
    if total > MAX_ZIP_EXPANSION * max(len(data), 1):
        raise TooLarge(f"Input {filename!r} expands to {total:,} bytes, over {MAX_ZIP_EXPANSION}x its size")
    ids, blobs, labels = [], [], []
    for info in entries:
        if info.file_size > MAX_ZIP_ENTRY_BYTES:
            raise TooLarge(f"Input {filename!r} entry {info.filename!r} is over {MAX_ZIP_ENTRY_BYTES:,} bytes")
        try:
            blob = archive.read(info)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
            raise InvalidArgument(f"Input {filename!r} entry {info.filename!r} cannot be read: {exc}") from None
        folder = posixpath.basename(posixpath.dirname(info.filename))
        ids.append(info.filename)
        blobs.append(blob)
        labels.append(folder or None)
    return pa.table(
        {
            ID_COLUMN: pa.array(ids, pa.string()),
            "data": pa.array(blobs, pa.binary()),
            LABEL_COLUMN: pa.array(labels, pa.string()),
        }
    )


ROW_READERS = {CSV: _csv_rows, JSONL: _jsonl_rows, ZIP: _zip_rows}
