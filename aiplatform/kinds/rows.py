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
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.kinds.limits import MAX_UPLOAD_BYTES, RequestLimits

NUMBER, CATEGORY = "number", "category"
MISSING = float("nan")
CSV_EXTENSIONS = (".csv",)


class FeatureSchema:
    """The features of a table model, in the order of its input vector."""

    def __init__(self, features: Sequence[Mapping[str, Any]]) -> None:
        if not features:
            raise InvalidArgument("A table model needs at least one feature")
        self.features = [dict(f) for f in features]
        self.names = tuple(str(f["name"]) for f in self.features)
        self._codes = {f["name"]: {str(c): i for i, c in enumerate(f.get("categories", []))}
                       for f in self.features if f["type"] == CATEGORY}

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
                values = pc.cast(column, pa.float64(), safe=False).fill_null(MISSING)
                parts.append(np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32))
            else:
                codes = self._codes[feature["name"]]
                parts.append(np.array([codes.get(str(v), MISSING) if v is not None else MISSING
                                       for v in column.to_pylist()], dtype=np.float32))
        return np.stack(parts, axis=1) if parts else np.zeros((0, 0), dtype=np.float32)

    # -- requests (strict: every problem named) ---------------------------------------------------
    def encode_row(self, row: Any, where: str = "'features'") -> np.ndarray:
        """A JSON object ``{feature: value}`` -> (F,) float32. ``null`` is a missing value."""
        if not isinstance(row, dict):
            raise InvalidArgument(f"{where} must be an object of feature values, got {type(row).__name__}")
        missing = [n for n in self.names if n not in row]
        if missing:
            raise InvalidArgument(f"{where} lacks feature(s) {missing[:10]}; this model takes {list(self.names)}")
        unknown = [str(k) for k in row if k not in self._index]
        if unknown:
            raise InvalidArgument(f"{where} has unknown feature(s) {unknown[:10]}; this model takes {list(self.names)}")
        return np.array([self._encode(f, row[f["name"]], where, from_text=False) for f in self.features],
                        dtype=np.float32)

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
            header = [h.strip() for h in header]
            missing = [n for n in self.names if n not in header]
            if missing:
                raise InvalidArgument(f"{what} lacks column(s) {missing[:10]}; this model takes {list(self.names)}")
            positions = [header.index(n) for n in self.names]
            rows = []
            for line, cells in enumerate(reader, start=2):
                if not cells or all(not c.strip() for c in cells):
                    continue
                limits.check_rows(len(rows) + 1, what)
                if len(cells) != len(header):
                    raise InvalidArgument(f"{what} line {line} has {len(cells)} cells; the header has {len(header)}")
                rows.append(np.array([self._encode(f, cells[p], f"{what} line {line}", from_text=True)
                                      for f, p in zip(self.features, positions)], dtype=np.float32))
        except csv.Error as exc:
            raise InvalidArgument(f"{what} is not valid CSV: {exc}") from None
        if not rows:
            raise InvalidArgument(f"{what} has a header but no rows")
        return rows

    def encode_matrix(self, matrix: np.ndarray, where: str) -> list[np.ndarray]:
        """An (N, F) numeric tensor (categories given as their index) -> one vector per row."""
        if matrix.ndim != 2 or matrix.shape[1] != self.width:
            raise InvalidArgument(f"{where} must have shape [N, {self.width}] (features {list(self.names)}), "
                                  f"got {list(matrix.shape)}")
        values = matrix.astype(np.float32)
        for column, feature in enumerate(self.features):
            if feature["type"] != CATEGORY:
                continue
            codes = values[:, column]
            given = codes[~np.isnan(codes)]
            bad = given[(given != np.round(given)) | (given < 0) | (given >= len(feature["categories"]))]
            if bad.size:
                raise InvalidArgument(f"{where}: feature {feature['name']!r} is a category given by its index "
                                      f"0..{len(feature['categories']) - 1} ({feature['categories'][:10]}), got {bad[0]:g}")
        return list(values)

    def values(self, vector: np.ndarray) -> dict[str, float]:
        """A row's encoded values by feature name (what drift analysis compares); missing values
        are left out."""
        return {name: round(float(v), 6) for name, v in zip(self.names, vector) if not math.isnan(v)}

    @property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def _encode(self, feature: Mapping[str, Any], value: Any, where: str, *, from_text: bool) -> float:
        name = feature["name"]
        if value is None or (from_text and not str(value).strip()):
            return MISSING
        if feature["type"] == NUMBER:
            if from_text:
                try:
                    number = float(str(value).strip())
                except ValueError:
                    raise InvalidArgument(f"{where}: feature {name!r} must be a number, got {str(value)[:40]!r}") from None
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArgument(f"{where}: feature {name!r} must be a number, got {type(value).__name__}")
            else:
                number = float(value)
            if math.isinf(number):
                raise InvalidArgument(f"{where}: feature {name!r} must be finite, got {value!r}")
            return number
        text = str(value).strip() if from_text or isinstance(value, str) else None
        if text is None:
            raise InvalidArgument(f"{where}: feature {name!r} is a category (one of {feature['categories'][:20]}), "
                                  f"got {type(value).__name__}")
        code = self._codes[name].get(text)
        if code is None:
            raise InvalidArgument(f"{where}: feature {name!r} has the unseen category {text[:40]!r}; known: "
                                  f"{feature['categories'][:20]}")
        return float(code)


def decode_features(column: Sequence[bytes], width: int) -> np.ndarray:
    """A dataset's ``features`` column (float32 bytes per row) -> (N, width) float32."""
    if len(column) == 0:
        return np.zeros((0, width), dtype=np.float32)
    return np.frombuffer(b"".join(column), dtype=np.float32).reshape(len(column), width)


def schema_of(spec: Mapping[str, Any]) -> FeatureSchema:
    """The feature schema of a model's ``input`` block or a dataset manifest's ``table`` block."""
    features: Optional[Sequence[Mapping[str, Any]]] = spec.get("features")
    if not isinstance(features, list):
        raise InvalidArgument("A table model's input needs its 'features' list")
    return FeatureSchema(features)
