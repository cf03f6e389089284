"""Reading results from both places they live: the archive's parquet files and the live table.

An export holds moves off (a lease on the store) while it reads, so every result in its range is
in it exactly once; it streams, a row group or CSV chunk at a time, in bounded memory. Each row
carries its ground truth where one was given (``true_label``, ``labeled_at``, ``labeled_by``: the
label current when the export read it), so an export is a labeled dataset as it stands.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.results.archive import SCHEMA, ArchivedResultAPI, read_archived, records
from aiplatform.results.store import STORED_COLUMNS, PredictionRecord, ResultAPI, next_cursor
from aiplatform.storage import Storage

ExportFormat = Literal["csv", "parquet"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
PAGE_ROWS = 1000
LABEL_COLUMNS = pa.schema([("true_label", pa.string()), ("labeled_at", pa.float64()), ("labeled_by", pa.string())])
EXPORT_SCHEMA = pa.schema([*SCHEMA, *LABEL_COLUMNS])
"""An export's columns: the stored ones, then the ground truth given for the row (null if none)."""
HOLD_S = 300.0
"""How long one renewal of an export's lease holds moves off: a reader that died frees them by then."""


def check_range(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and until <= since:
        raise InvalidArgument(f"until ({until}) must be after since ({since})")


def result_tables(
    results: ArchivedResultAPI,
    storage: Storage,
    *,
    model: str | None = None,
    since: float | None = None,
    until: float | None = None,
    models: Sequence[str] | None = None,
) -> Iterator[pa.Table]:
    """Every result of ``model`` (all models: None; of ``models`` only, when given: a
    project's) in [since, until), oldest archive first,
    then the live table oldest first, each table in ``EXPORT_SCHEMA`` (with its labels).

    Moves are held off by a lease renewed from a thread while the export lasts (a slow reader
    does not let it lapse); should a move of this range commit anyway (the store restarted and
    forgot the lease), rows may be missing, and the export fails rather than end short."""
    check_range(since, until)
    lease = uuid.uuid4().hex
    results.hold_moves(lease, HOLD_S)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(HOLD_S / 3):
            try:
                results.hold_moves(lease, HOLD_S)
            except Exception:
                pass

    threading.Thread(target=renew, name="export-lease", daemon=True).start()
    try:
        archived = results.moves(model=model, since=since, until=until, models=models)
        for move in archived:
            table = read_archived(storage, move, since, until)
            for start in range(0, table.num_rows, PAGE_ROWS):
                yield with_labels(results, table.slice(start, PAGE_ROWS))
        after = None
        while True:
            page = results.scan(model=model, since=since, until=until, after=after, limit=PAGE_ROWS, models=models)
            if page:
                yield with_labels(results, records_table(page))
            if len(page) < PAGE_ROWS:
                break
            after = next_cursor(page)
        moved_meanwhile = {m["key"] for m in results.moves(model=model, since=since, until=until, models=models)} - {
            m["key"] for m in archived
        }
        if moved_meanwhile:
            raise Unavailable(
                f"{len(moved_meanwhile)} archive move(s) committed during the export; "
                "some results may be missing from it: export again"
            )
    finally:
        stop.set()
        results.release_moves(lease)


def records_table(page: list[PredictionRecord]) -> pa.Table:
    """Records in the archive's columns (``output`` and ``features`` as JSON text)."""
    rows = [
        {
            **{column: getattr(r, column) for column in STORED_COLUMNS},
            "output": json.dumps(r.output),
            "features": json.dumps(r.features) if r.features else None,
        }
        for r in page
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def with_labels(results: ResultAPI, table: pa.Table) -> pa.Table:
    """``table`` (a page of results) with the label each row has now, null where none."""
    labels = results.feedback_of(table["id"].to_pylist())
    found = [labels.get(result_id, {}) for result_id in table["id"].to_pylist()]
    for field in LABEL_COLUMNS:
        table = table.append_column(
            field, pa.array([row.get(field.name.removeprefix("true_")) for row in found], field.type)
        )
    return table


def stream(tables: Iterator[pa.Table], fmt: ExportFormat) -> Iterator[bytes]:
    """The tables as one CSV or parquet file, in chunks as they are written."""
    sink = _DrainedSink()
    writer = (
        pa_csv.CSVWriter(sink, EXPORT_SCHEMA)
        if fmt == "csv"
        else pq.ParquetWriter(sink, EXPORT_SCHEMA, compression="zstd")
    )
    try:
        for table in tables:
            writer.write_table(table)
            if chunk := sink.drain():
                yield chunk
    finally:
        writer.close()
    yield sink.drain()


def recent_records(
    results: ArchivedResultAPI,
    storage: Storage,
    *,
    model: str,
    version: int | None = None,
    since: float | None = None,
    limit: int = 1000,
) -> list[PredictionRecord]:
    """The newest ``limit`` results of a model (and version) since ``since``, the archive's too
    when the live table holds fewer: what drift analysis compares with the training data."""
    found = {r.id: r for r in results.query(model=model, version=version, since=since, limit=limit)}
    if len(found) < limit:
        for move in reversed(results.moves(model=model, since=since)):  # newest first
            table = read_archived(storage, move, since)
            if version is not None:
                table = table.filter(pc.equal(table["version"], version))
            for record in records(table):
                found.setdefault(record.id, record)  # a row moved while read is counted once
            if len(found) >= limit:
                break
    return sorted(found.values(), key=lambda r: (r.created_at, r.id), reverse=True)[:limit]


class _DrainedSink(io.RawIOBase):
    """A write-only file whose bytes are taken away as they come (pyarrow's writers write forward)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        chunk = b"".join(self._chunks)
        self._chunks.clear()
        return chunk
