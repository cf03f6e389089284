"""Table rows as model inputs: one feature schema, one encoding for training and serving.

A table's feature schema (from the dataset build, kept in ``model.json``'s ``input.features``) lists
each feature in order with its type: ``number`` (with the training data's range, mean and spread)
or ``category`` (with its categories). A row becomes a float32 vector: numbers as they are,
categories as the index of their value, missing values as NaN (XGBoost's missing value). The
dataset build encodes Arrow columns leniently (nulls are missing); requests are encoded strictly:
a missing feature, a wrong type or an unseen category is refused with its name.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.limits import MAX_UPLOAD_BYTES, RequestLimits

NUMBER, CATEGORY = "number", "category"
MISSING = float("nan")
FLOAT32_MAX = float(np.finfo(np.float32).max)
NULL_MARKERS = frozenset(
    {
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "n/a",
        "nan",
        "null",
    }
)
"""Cells that mean "missing" (Arrow's CSV reader reads them as null when it builds a dataset), unless
the feature has a category of that very name."""
BOOLEANS = {"true": 1.0, "false": 0.0}
CSV_EXTENSIONS = (".csv",)
MAX_CSV_COLUMNS = 1024
"""Columns a CSV upload's header may name: twice the features a dataset build keeps (512), room for
an id, the true label and whatever else an export carries (a model with more features may have
twice its own). A header is refused past it before it is searched."""


class FeatureSchema:
    """The features of a table model, in the order of its input vector."""

    def __init__(self, features: Sequence[Mapping[str, Any]]) -> None:
        if not features:
            raise InvalidArgument("A table model needs at least one feature")
        self.features = [dict(f) for f in features]
        self.names = tuple(str(f["name"]) for f in self.features)
        self._known = frozenset(self.names)
        self._codes = {
            f["name"]: {str(c): i for i, c in enumerate(f.get("categories", []))}
            for f in self.features
            if f["type"] == CATEGORY
        }
        self.max_csv_columns = max(MAX_CSV_COLUMNS, 2 * len(self.features))

    @property
    def width(self) -> int:
        return len(self.features)

    # -- the dataset build (Arrow columns, lenient) ----------------------------------------------
    def encode_arrow(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Arrow columns by name -> (N, F) float32; nulls and values outside the categories: NaN."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = []
        for feature in self.features:
            column = columns[feature["name"]]
            if feature["type"] == NUMBER:
                values = np.asarray(
                    pc.cast(column, pa.float64(), safe=False).fill_null(MISSING).to_numpy(zero_copy_only=False)
                )
                if (np.abs(values) > FLOAT32_MAX).any():
                    raise InvalidArgument(
                        f"Column {feature['name']!r} holds a value beyond a 32-bit float's range ({FLOAT32_MAX:.3g})"
                    )
                parts.append(values.astype(np.float32))
            else:
                codes = self._codes[feature["name"]]
                parts.append(
                    np.array([codes.get(category_text(v), MISSING) for v in column.to_pylist()], dtype=np.float32)
                )
        return np.stack(parts, axis=1) if parts else np.zeros((0, 0), dtype=np.float32)

    # -- requests (strict: every problem named) ---------------------------------------------------
    def encode_row(self, row: Any, where: str = "'features'") -> np.ndarray:
        """A JSON object ``{feature: value}`` -> (F,) float32. ``null`` is a missing value."""
        if not isinstance(row, dict):
            raise InvalidArgument(f"{where} must be an object of feature values, got {type(row).__name__}")
        missing = [n for n in self.names if n not in row]
        if missing:
            raise InvalidArgument(f"{where} lacks feature(s) {missing[:10]}; this model takes {list(self.names)}")
        unknown = [str(k) for k in row if k not in self._known]
        if unknown:
            raise InvalidArgument(f"{where} has unknown feature(s) {unknown[:10]}; this model takes {list(self.names)}")
        return np.array(
            [self._encode(f, row[f["name"]], where, from_text=False) for f in self.features], dtype=np.float32
        )

    def encode_csv(self, data: bytes, what: str, limits: RequestLimits) -> list[np.ndarray]:
        """A CSV file with a header row -> one vector per row. Columns besides the features (an id,
        the true label) are ignored; an empty cell is a missing value."""
        if not data:
            raise InvalidArgument(f"{what} is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise TooLarge(f"{what} is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if "\x00" in text:
            raise InvalidArgument(f"{what} is binary, not CSV")
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
            if not header:
                raise InvalidArgument(f"{what} has no header row naming its columns")
            positions = self.header_positions(header, what)
            rows = []
            for line, cells in enumerate(reader, start=2):
                if not cells or all(not c.strip() for c in cells):
                    continue
                limits.check_rows(len(rows) + 1, what)
                if len(cells) != len(header):
                    raise InvalidArgument(f"{what} line {line} has {len(cells)} cells; the header has {len(header)}")
                rows.append(
                    np.array(
                        [
                            self._encode(f, cells[p], f"{what} line {line}", from_text=True)
                            for f, p in zip(self.features, positions)
                        ],
                        dtype=np.float32,
                    )
                )
        except csv.Error as exc:
            raise InvalidArgument(f"{what} is not valid CSV: {exc}") from None
        if not rows:
            raise InvalidArgument(f"{what} has a header but no rows")
        return rows

    def header_positions(self, header: Sequence[str], what: str) -> list[int]:
        """Where each feature is among a CSV header's columns (names compared stripped; the first
        of equal names counts). A header of more than ``max_csv_columns`` is refused (413) before
        it is searched; the rest is indexed once, so the work is the header's length, not that
        times the features'."""
        if len(header) > self.max_csv_columns:
            raise TooLarge(
                f"{what} has {len(header):,} columns; the limit is {self.max_csv_columns:,} "
                f"(this model takes {self.width} features)"
            )
        index: dict[str, int] = {}
        for position, name in enumerate(header):
            index.setdefault(name.strip(), position)
        missing = [n for n in self.names if n.strip() not in index]
        if missing:
            raise InvalidArgument(f"{what} lacks column(s) {missing[:10]}; this model takes {list(self.names)}")
        return [index[n.strip()] for n in self.names]

    def encode_matrix(self, matrix: np.ndarray, where: str) -> list[np.ndarray]:
        """An (N, F) numeric tensor (categories given as their index) -> one vector per row."""
        if matrix.ndim != 2 or matrix.shape[1] != self.width:
            raise InvalidArgument(
                f"{where} must have shape [N, {self.width}] (features {list(self.names)}), got {list(matrix.shape)}"
            )
        with np.errstate(invalid="ignore"):
            if (np.abs(matrix) > FLOAT32_MAX).any():
                raise InvalidArgument(f"{where} holds a value beyond a 32-bit float's range ({FLOAT32_MAX:.3g})")
        values = matrix.astype(np.float32)
        for column, feature in enumerate(self.features):
            if feature["type"] != CATEGORY:
                continue
            codes = values[:, column]
            given = codes[~np.isnan(codes)]
            bad = given[(given != np.round(given)) | (given < 0) | (given >= len(feature["categories"]))]
            if bad.size:
                raise InvalidArgument(
                    f"{where}: feature {feature['name']!r} is a category given by its index "
                    f"0..{len(feature['categories']) - 1} ({feature['categories'][:10]}), got {bad[0]:g}"
                )
        return list(values)

    def values(self, vector: np.ndarray) -> dict[str, float]:
        """A row's encoded values by feature name (what drift analysis compares); missing values
        are left out."""
        return {name: round(float(v), 6) for name, v in zip(self.names, vector) if not math.isnan(v)}

    def readable(self, vector: np.ndarray) -> dict[str, Any]:
        """An encoded row as a person reads it: numbers, and categories by name (missing left out)."""
        row: dict[str, Any] = {}
        for feature, value in zip(self.features, vector):
            if math.isnan(value):
                continue
            categories = feature.get("categories")
            row[feature["name"]] = categories[int(value)] if categories else round(float(value), 6)
        return row

    def check_comparable(self, other: FeatureSchema, what: str) -> None:
        """Refuse comparing this model's features with ``other``'s rows unless each feature is
        there with the same type (and, for a category, the same categories: codes are indices)."""
        theirs = {f["name"]: f for f in other.features}
        for feature in self.features:
            found = theirs.get(feature["name"])
            if (
                found is None
                or found["type"] != feature["type"]
                or found.get("categories") != feature.get("categories")
            ):
                raise InvalidArgument(
                    f"{what} does not have the model's feature {feature['name']!r} as the model "
                    f"takes it ({feature['type']}); it cannot be the reference"
                )

    def _encode(self, feature: Mapping[str, Any], value: Any, where: str, *, from_text: bool) -> float:
        """One value as the dataset build encoded its column: numbers (booleans as 0/1), categories
        as their index, missing values (null, an empty cell, a null marker) as NaN."""
        name = feature["name"]
        text = value.strip() if isinstance(value, str) else None
        if value is None or text == "":
            return MISSING
        if feature["type"] == CATEGORY:
            if text is None and not from_text:
                raise InvalidArgument(
                    f"{where}: feature {name!r} is a category (one of {feature['categories'][:20]}), "
                    f"got {type(value).__name__}"
                )
            code = self._codes[name].get(text if text is not None else str(value))
            if code is not None:
                return float(code)
            if text in NULL_MARKERS:
                return MISSING
            raise InvalidArgument(
                f"{where}: feature {name!r} has the unseen category {str(value)[:40]!r}; known: "
                f"{feature['categories'][:20]}"
            )
        if isinstance(value, bool):
            return float(value)
        if text is not None and from_text:
            if text in NULL_MARKERS:
                return MISSING
            if text.lower() in BOOLEANS:
                return BOOLEANS[text.lower()]
            try:
                number = float(text)
            except ValueError:
                raise InvalidArgument(f"{where}: feature {name!r} must be a number, got {text[:40]!r}") from None
        elif isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:
                raise InvalidArgument(f"{where}: feature {name!r} is out of range ({str(value)[:40]})") from None
        else:
            raise InvalidArgument(f"{where}: feature {name!r} must be a number, got {type(value).__name__}")
        if math.isnan(number):
            return MISSING
        if not abs(number) <= FLOAT32_MAX:
            raise InvalidArgument(
                f"{where}: feature {name!r} is out of range: {str(value)[:40]} (a 32-bit float "
                f"holds at most {FLOAT32_MAX:.3g})"
            )
        return number


def category_text(value: Any) -> str:
    """How a table's text value is named as a category: stripped (a padded export's ``"male  "``
    is ``"male"``); None and the empty string are no category (missing)."""
    return "" if value is None else str(value).strip()


def schema_of(spec: Mapping[str, Any]) -> FeatureSchema:
    """The feature schema of a model's ``input`` block or a dataset manifest's ``table`` block."""
    features: Sequence[Mapping[str, Any]] | None = spec.get("features")
    if not isinstance(features, list):
        raise InvalidArgument("A table model's input needs its 'features' list")
    return FeatureSchema(features)
