"""Ground truth for past predictions, and the live quality it gives.

A caller labels a prediction by its result id, by the server's request id (``parameters.request_id``
of a v2 answer; ``<request id>-<n>`` is the n-th input of a request that held many), or by the id
the client gave its v2 request (``client_request_id``). The label is kept beside the result in the
result store's SQLite (table ``feedback``: one row per labeled result, with the model, version,
prediction time and predicted label it was given for, never its input); a later label replaces
an earlier one and each change is kept in ``feedback_history`` (label, previous label, who, when).
Who is the caller's name as the access guard knows it (``labeled_by``): a user, signed in by key
or through the sign-in proxy, a service key's user, or ``platform`` for the operator's token.

Labels outlive retention: when a labeled result moves to the archive its ``feedback`` row stays,
so quality windows and retraining datasets still count it. A result already archived can no
longer be labeled (:func:`archived_reason` says why: 409).

Quality per model version is computed from the labeled rows: a confusion count by SQL, then
accuracy and macro-F1 (the mean over every class that was predicted or labeled of
``2 tp / (2 tp + fp + fn)``, scikit-learn's ``f1_score(average="macro")``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.sqlite import conditions

MAX_FEEDBACK_ROWS = 10_000
"""Labels one request may carry (all stored in one transaction, or none)."""
MAX_LABEL_CHARS = 200
FEEDBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    result_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    predicted TEXT NOT NULL,
    label TEXT NOT NULL,
    input_uri TEXT,
    labeled_at REAL NOT NULL,
    labeled_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_model_time ON feedback(model, created_at, result_id, version, predicted, label);
CREATE INDEX IF NOT EXISTS feedback_version_time ON feedback(model, version, created_at, predicted, label);
CREATE INDEX IF NOT EXISTS feedback_time ON feedback(created_at, model, version, predicted, label);
CREATE TABLE IF NOT EXISTS feedback_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL,
    label TEXT NOT NULL,
    previous_label TEXT,
    labeled_by TEXT NOT NULL,
    labeled_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_history_by_result ON feedback_history(result_id, seq);
CREATE INDEX IF NOT EXISTS results_by_client ON results(client_id) WHERE client_id IS NOT NULL;
"""
"""``created_at`` is the prediction's time (quality windows and "labeled since" are over it). Each
index covers the quality count of its filter (a model, a version, every model over a window), so
the count reads the window's index entries only: at 10^6 results with 2x10^5 labeled (10^5 in the
last day), a day's quality took 6 ms for a version, 18 ms for a model, 77 ms for every model (9 ms
for an hour's); a page of 1,000 of a model's labeled predictions (``feedback_model_time``) 4 ms. ``results_by_client`` finds a v2 request's
results by the client's id."""
_SERVER_ID = re.compile(r"([0-9a-f]{14})[0-9a-f]{18}(?:-\d+)?")
_KEYS = ("id", "result_id", "request_id", "client_request_id", "index", "model", "label")


@dataclass(frozen=True)
class LabelRequest:
    """One label to give: to a result id (``id``), to input ``index`` of a server request id, or
    to a client's v2 request id (narrowed by ``model`` and ``index`` when it names several)."""

    label: str
    id: str | None = None
    request_id: str | None = None
    client_request_id: str | None = None
    index: int | None = None
    model: str | None = None
    row: int = 1
    """Its place in the request (1-based), for messages."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def named(self) -> str:
        if self.id is not None:
            return f"result {self.id!r}"
        if self.request_id is not None:
            return f"request {self.request_id!r}" + (f" input {self.index}" if self.index is not None else "")
        return f"client request id {self.client_request_id!r}" + (
            f" input {self.index}" if self.index is not None else ""
        )


@dataclass(frozen=True)
class LabelTarget:
    """The result a label request names, as the store resolved it."""

    result_id: str
    model: str
    version: int
    predicted: str
    created_at: float
    input_uri: str | None


@dataclass(frozen=True)
class LabeledPrediction:
    """A labeled prediction as a retraining dataset reads it (``input_uri`` locates its kept input)."""

    result_id: str
    model: str
    version: int
    created_at: float
    predicted: str
    label: str
    input_uri: str | None
    labeled_at: float
    labeled_by: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionQuality:
    """Accuracy and macro-F1 of one model version's labeled predictions in a window."""

    model: str
    version: int
    labeled: int
    correct: int
    accuracy: float
    macro_f1: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- parsing what a caller sends ------------------------------------------------------------------
def parse_label_rows(items: Any) -> list[LabelRequest]:
    """A JSON batch (a list of objects) as label requests; InvalidArgument names the first bad row."""
    if not isinstance(items, list):
        raise InvalidArgument('Labels must be a JSON list of {"id" or "client_request_id", "label"} objects')
    if not items:
        raise InvalidArgument("No labels given")
    if len(items) > MAX_FEEDBACK_ROWS:
        raise InvalidArgument(f"At most {MAX_FEEDBACK_ROWS} labels a request, got {len(items)}")
    return [_label_request(item, row) for row, item in enumerate(items, start=1)]


def parse_label_csv(data: bytes) -> list[LabelRequest]:
    """A CSV batch: a header naming ``label`` and one of ``id`` (or ``result_id``), ``request_id``
    or ``client_request_id`` (``index`` and ``model`` optional); rows are numbered from 1 after it."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument("The labels CSV is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    if "label" not in header or not {"id", "result_id", "request_id", "client_request_id"} & set(header):
        raise InvalidArgument(
            f"The labels CSV needs a header with 'label' and 'id' (or 'request_id', 'client_request_id'); got {header[:8]}"
        )
    unknown = sorted(set(header) - set(_KEYS))
    if unknown:
        raise InvalidArgument(f"The labels CSV has unknown columns {unknown[:5]}; known: {list(_KEYS)}")
    items = []
    try:
        for line in reader:
            if len(items) >= MAX_FEEDBACK_ROWS:
                raise InvalidArgument(f"At most {MAX_FEEDBACK_ROWS} labels a request")
            items.append({k.strip(): v.strip() for k, v in line.items() if k is not None and v not in (None, "")})
    except csv.Error as exc:
        raise InvalidArgument(f"The labels CSV cannot be read at row {len(items) + 1}: {exc}") from None
    return parse_label_rows(items)


def _label_request(item: Any, row: int) -> LabelRequest:
    if not isinstance(item, dict):
        raise InvalidArgument(f"Label row {row}: expected an object, got {type(item).__name__}")
    unknown = sorted(set(item) - set(_KEYS))
    if unknown:
        raise InvalidArgument(f"Label row {row}: unknown keys {unknown[:5]}; known: {list(_KEYS)}")
    values = {key: item.get(key) for key in _KEYS}
    if values["result_id"] is not None:
        if values["id"] is not None:
            raise InvalidArgument(f"Label row {row}: give 'id' or 'result_id', not both")
        values["id"] = values["result_id"]
    names = [key for key in ("id", "request_id", "client_request_id") if values[key] is not None]
    if len(names) != 1:
        raise InvalidArgument(f"Label row {row}: give exactly one of 'id', 'request_id', 'client_request_id'")
    for key in (*names, "model"):
        value = values[key]
        if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_LABEL_CHARS):
            raise InvalidArgument(f"Label row {row}: {key} must be a non-empty string of at most {MAX_LABEL_CHARS}")
    label = values["label"]
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)  # a class named "3", sent as 3
    if not isinstance(label, str) or not label or len(label) > MAX_LABEL_CHARS:
        raise InvalidArgument(f"Label row {row}: label must be a non-empty string (one of the model's classes)")
    index = values["index"]
    if index is not None:
        try:
            index = int(index)
        except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
            index = -1
        if index < 0 or isinstance(values["index"], (bool, float)):
            raise InvalidArgument(f"Label row {row}: index must be a whole number >= 0")
        if values["id"] is not None:
            raise InvalidArgument(f"Label row {row}: index goes with request_id or client_request_id, not id")
    return LabelRequest(
        label=label,
        id=values["id"],
        request_id=values["request_id"],
        client_request_id=values["client_request_id"],
        index=index,
        model=values["model"],
        row=row,
    )


def package_classes(package: bytes) -> list[str]:
    """The class names of a model package (``model.json``'s labels): what a label may be."""
    from aiplatform.packaging.config import ModelConfig
    from aiplatform.packaging.format import MODEL_FILE, read_package_files

    files, _ = read_package_files(package)
    return [str(label) for label in ModelConfig.parse(json.loads(files[MODEL_FILE])).labels]


# -- the store's side (called with its lock held) -------------------------------------------------
def resolve(
    db: sqlite3.Connection, request: LabelRequest, archived_before: Any, models: Collection[str] | None = None
) -> LabelTarget:
    """The live result ``request`` names. NotFound, or Conflict for one retention archived
    (``archived_before(result_id)`` gives the reason), or InvalidArgument when several match.
    With ``models`` (a project's), a result of any other model is not there at all: not found,
    never counted among several, never named as another model's, never said to have many inputs
    or to be archived."""
    where = at_row(request)
    if request.client_request_id is not None:
        clauses, params = ["client_id = ?"], [request.client_request_id]
        if request.model is not None:
            clauses.append("model = ?")
            params.append(request.model)
        rows = db.execute(
            f"SELECT * FROM results WHERE {' AND '.join(clauses)} ORDER BY created_at, id LIMIT 1001", params
        ).fetchall()
        if request.index is not None:
            rows = [r for r in rows if (_input_index(r["id"]) or 0) == request.index]
        if models is not None:
            rows = [r for r in rows if r["model"] in models]
        if not rows:
            raise NotFound(f"{where}no live result has {request.named}")
        if len(rows) > 1:
            raise InvalidArgument(
                f"{where}{request.named} names {len(rows)} results (a request with many inputs, or the id "
                "reused): give its index, the model, or the result id"
            )
        return _target(rows[0])
    result_id = request.id
    if request.request_id is not None:
        result_id = request.request_id if request.index is None else f"{request.request_id}-{request.index}"
    assert result_id is not None
    row = db.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
    if row is not None and models is not None and row["model"] not in models:
        raise NotFound(f"{where}result {result_id!r} not found")
    if row is None:
        if request.request_id is not None and request.index is None:
            many = db.execute("SELECT model FROM results WHERE id = ?", (f"{result_id}-0",)).fetchone()
            if many is not None and (models is None or many["model"] in models):
                raise InvalidArgument(f"{where}request {result_id!r} had many inputs: give the index of one")
        reason = archived_before(result_id)
        if reason and (models is None or _archived_among(db, result_id, models)):
            raise Conflict(f"{where}result {result_id!r} cannot be labeled: {reason}")
        raise NotFound(f"{where}result {result_id!r} not found")
    if request.model is not None and row["model"] != request.model:
        raise InvalidArgument(f"{where}result {result_id!r} is a prediction of {row['model']!r}, not {request.model!r}")
    return _target(row)


def _archived_among(db: sqlite3.Connection, result_id: str, models: Collection[str]) -> bool:
    """Whether retention archived a result of one of ``models`` made when ``result_id`` was (a
    project's: another project's archived result is not found, as if it never was)."""
    at = result_time(result_id)
    if at is None or not models:
        return False
    names = sorted(models)
    found = db.execute(
        "SELECT 1 FROM archive_moves WHERE state = 'committed' AND min_at <= ? AND max_at >= ?"
        f" AND model IN ({','.join('?' * len(names))}) LIMIT 1",
        (at + 1.0, at - 1.0, *names),
    ).fetchone()
    return found is not None


def at_row(request: LabelRequest) -> str:
    """How a message names the request's row (nothing for a single label, row 0)."""
    return f"Label row {request.row}: " if request.row else ""


def _input_index(result_id: str) -> int | None:
    """Which input of its request a result is (None: a request's only one, which is input 0)."""
    head, _, tail = result_id.rpartition("-")
    return int(tail) if head and tail.isdigit() else None


def _target(row: sqlite3.Row) -> LabelTarget:
    output = json.loads(row["output"])
    predicted = output.get("label") if isinstance(output, dict) else None
    if predicted is None:
        raise InvalidArgument(f"Result {row['id']!r} has no predicted label to compare a label with")
    return LabelTarget(
        result_id=row["id"],
        model=row["model"],
        version=int(row["version"]),
        predicted=str(predicted),
        created_at=float(row["created_at"]),
        input_uri=row["input_uri"],
    )


def result_time(result_id: str) -> float | None:
    """When a server-made result id was made (its first 14 hex digits are microseconds since the
    epoch, ``store.new_result_id``); None for ids of another form."""
    match = _SERVER_ID.fullmatch(result_id)
    return int(match.group(1), 16) / 1e6 if match else None


def store_labels(
    db: sqlite3.Connection, targets: list[tuple[LabelTarget, str]], by: str, now: float | None = None
) -> list[dict[str, Any]]:
    """Give each target its label (in the caller's transaction), given ``by`` the caller; a
    changed label goes to the history with the one it replaces. Returns per target what changed."""
    at = time.time() if now is None else now
    changes = []
    for target, label in targets:
        previous = db.execute("SELECT label FROM feedback WHERE result_id = ?", (target.result_id,)).fetchone()
        previous_label = previous["label"] if previous is not None else None
        changed = previous_label != label
        if changed:
            db.execute(
                "INSERT INTO feedback(result_id, model, version, created_at, predicted, label, input_uri, labeled_at,"
                " labeled_by) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(result_id) DO UPDATE SET label = excluded.label,"
                " labeled_at = excluded.labeled_at, labeled_by = excluded.labeled_by",
                (
                    target.result_id,
                    target.model,
                    target.version,
                    target.created_at,
                    target.predicted,
                    label,
                    target.input_uri,
                    at,
                    by,
                ),
            )
            db.execute(
                "INSERT INTO feedback_history(result_id, label, previous_label, labeled_by, labeled_at)"
                " VALUES (?,?,?,?,?)",
                (target.result_id, label, previous_label, by, at),
            )
        changes.append(
            {
                "id": target.result_id,
                "model": target.model,
                "version": target.version,
                "predicted": target.predicted,
                "label": label,
                "previous_label": previous_label,
                "correct": target.predicted == label,
                "changed": changed,
            }
        )
    return changes


def filter_clauses(
    model: str | None,
    version: int | None,
    since: float | None,
    until: float | None,
    models: Sequence[str] | None = None,
) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for the given model, version and time range:
    results and labels are both filtered by these columns. ``models`` keeps only those models'
    rows (a project's: none when it is empty; None: every model's)."""
    clauses, params = conditions(
        (
            ("model", "=", model),
            ("version", "=", version),
            ("created_at", ">=", since),
            ("created_at", "<", until),
        )
    )
    if models is not None:
        clauses.append(f"model IN ({','.join('?' * len(models))})" if models else "0")
        params.extend(models)
    return clauses, params


def window_clauses(
    model: str | None,
    version: int | None,
    since: float | None,
    until: float | None,
    models: Sequence[str] | None = None,
) -> tuple[str, list[Any]]:
    clauses, params = filter_clauses(model, version, since, until, models)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def quality_by_version(confusion: Iterable[tuple[str, int, str, str, int]]) -> list[VersionQuality]:
    """Accuracy and macro-F1 per (model, version) from ``(model, version, predicted, label,
    count)`` rows; sorted by model, then version."""
    counts: dict[tuple[str, int], dict[tuple[str, str], int]] = {}
    for model, version, predicted, label, count in confusion:
        cell = counts.setdefault((model, int(version)), {})
        cell[(predicted, label)] = cell.get((predicted, label), 0) + int(count)
    return [quality_of(model, version, cells) for (model, version), cells in sorted(counts.items())]


def quality_of(model: str, version: int, cells: dict[tuple[str, str], int]) -> VersionQuality:
    """One version's figures from its confusion cells ``{(predicted, label): count}``."""
    labeled = sum(cells.values())
    correct = sum(n for (predicted, label), n in cells.items() if predicted == label)
    classes = {c for pair in cells for c in pair}
    f1s = []
    for c in sorted(classes):
        tp = cells.get((c, c), 0)
        predicted_c = sum(n for (p, _), n in cells.items() if p == c)
        actual_c = sum(n for (_, a), n in cells.items() if a == c)
        denominator = predicted_c + actual_c  # 2tp + fp + fn
        f1s.append(2 * tp / denominator if denominator else 0.0)
    return VersionQuality(
        model=model,
        version=version,
        labeled=labeled,
        correct=correct,
        accuracy=correct / labeled if labeled else 0.0,
        macro_f1=sum(f1s) / len(f1s) if f1s else 0.0,
    )
