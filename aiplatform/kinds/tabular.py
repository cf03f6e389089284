"""The ``tabular`` kind: rows of named features. JSON ``{"features": {...}}``, a CSV upload of many
rows, FP32 v2 tensors [N, F]; one row is one model input (a float32 vector, see ``rows``); drift
features are the row's own feature values, and a dataset's profile summarises (and charts) every
column. An ONNX graph of a float (batch, features) matrix imports as one, its features named by
the caller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from aiplatform.errors import InvalidArgument
from aiplatform.feature_bytes import decode_features
from aiplatform.kinds.base import (
    BarChart,
    BatchConverter,
    Chart,
    DatasetKind,
    ImportedInput,
    InputConverter,
    ManyInputs,
    ModelKind,
    Submit,
)
from aiplatform.kinds.rows import CATEGORY, CSV_EXTENSIONS, NUMBER, FeatureSchema, schema_of
from aiplatform.kinds.tensors import FLOAT_DATATYPES, V2_DATATYPES, single_input
from aiplatform.limits import RequestLimits

if TYPE_CHECKING:  # torch is imported where tensors are made (model servers, training workers)
    import torch

FEATURES_KEY, ROWS_KEY = "features", "rows"
"""A v1 JSON body's one row (``{"features": {name: value}}``) and many (``{"rows": [...]}``)."""
TABLE_ENCODING = "numbers as given, categories as their index, missing as NaN"
HISTOGRAM_BINS = 12
MAX_FEATURES = 512
"""Features of one table: a dataset's columns and an imported model's inputs alike."""


class TabularDatasets(DatasetKind):
    name: ClassVar[str] = "tabular"
    dataset_columns: ClassVar[tuple[str, ...]] = ("id", "features", "label")

    @staticmethod
    def sample_previews(table: pa.Table, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """Each row's values by column, categories by name (missing values left out)."""
        schema = schema_of(manifest["table"])
        matrix = decode_features(table.column("features").to_pylist(), schema.width)
        return [{"features": schema.readable(row)} for row in matrix]

    @staticmethod
    def profile_split(table: pa.Table, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        """Per column: a histogram over the training range and the mean (numbers), counts per
        category (categories), and the share of missing values; keys: the encoded rows."""
        schema = schema_of(manifest["table"])
        keys = table.column("features").to_pylist()
        matrix = decode_features(keys, schema.width)
        columns = {}
        for i, feature in enumerate(schema.features):
            values = matrix[:, i]
            present = values[~np.isnan(values)]
            summary: dict[str, Any] = {
                "type": feature["type"],
                "missing_share": round(1 - present.size / max(1, values.size), 6),
            }
            if feature["type"] == NUMBER:
                low, high = float(feature["min"]), float(feature["max"])
                counts, edges = np.histogram(present, bins=HISTOGRAM_BINS, range=(low, high if high > low else low + 1))
                summary.update(
                    mean=round(float(present.mean()), 6) if present.size else None,
                    histogram={"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]},
                )
            else:
                counts = np.bincount(present.astype(np.int64), minlength=len(feature["categories"]))
                summary["counts"] = {c: int(n) for c, n in zip(feature["categories"], counts)}
            columns[feature["name"]] = summary
        return {"columns": columns}, keys

    @staticmethod
    def profile_extra(manifest: dict[str, Any], splits: list[str]) -> dict[str, Any]:
        table = manifest.get("table", {})
        return {
            "table": {
                "label_column": table.get("label_column"),
                "features": table.get("features", []),
                "cleaning": manifest.get("cleaning", {}),
            }
        }

    @staticmethod
    def profile_charts(profile: dict[str, Any]) -> list[Chart]:
        """One chart per column of the train split: a histogram (numbers) or counts per category."""
        charts: list[Chart] = []
        for column, summary in profile["splits"].get("train", {}).get("columns", {}).items():
            if "histogram" in summary:
                edges = summary["histogram"]["edges"]
                charts.append(
                    BarChart(
                        f"column_{column}",
                        f"train: {column} (rows)",
                        summary["histogram"]["counts"],
                        [f"{e:.3g}" for e in edges[:-1]],
                    )
                )
            elif "counts" in summary:
                charts.append(
                    BarChart(
                        f"column_{column}",
                        f"train: {column} (rows)",
                        list(summary["counts"].values()),
                        list(summary["counts"]),
                    )
                )
        return charts

    @staticmethod
    def worker_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
        return {"features": list(manifest["table"]["features"])}

    @staticmethod
    def user_batch_converter(inputs: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> InputConverter:
        """Rows as float32 (N, F) in the dataset's column order: categories as their index,
        missing values as NaN (as the model servers encode a request's rows)."""
        import torch

        width = len(inputs["features"])
        return lambda batch: torch.from_numpy(decode_features(list(batch["features"]), width).copy())


class TabularKind(ModelKind):
    name: ClassVar[str] = "tabular"
    datasets: ClassVar[type[DatasetKind]] = TabularDatasets
    feature_names: ClassVar[tuple[str, ...]] = ()
    """Per model: its features' names (set on the instance from ``input.features``)."""
    importable: ClassVar[bool] = True

    def __init__(self, input_spec: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> None:
        super().__init__(input_spec, preprocessing)
        self.schema: FeatureSchema = schema_of(self.input_spec)
        self.feature_names = self.schema.names  # type: ignore[misc]

    @classmethod
    def request_shape(cls) -> dict[str, Any]:
        return {
            "upload": list(CSV_EXTENSIONS),
            "json_keys": [FEATURES_KEY, ROWS_KEY],
            "paste_key": None,
            "paste_hint": 'a table model: JSON {"features": {...}} or {"rows": [...]}',
            "import_hint": '{"features": ["bill length", {"name": "island", "type": "category", '
            '"categories": ["Biscoe", "Dream"]}]}',
        }

    @classmethod
    def import_input(cls, graph_input: dict[str, Any], given: dict[str, Any]) -> ImportedInput:
        spec = table_input(graph_input, given)
        width = len(spec["features"])
        return ImportedInput(spec, {"encoding": TABLE_ENCODING}, "NF", width, f"{width} features")

    def from_json(self, payload: Any, limits: RequestLimits) -> Any:
        """``{"features": {...}}`` (one row) or ``{"rows": [{...}, ...]}`` (many)."""
        if isinstance(payload, dict) and ROWS_KEY in payload and FEATURES_KEY not in payload:
            rows = payload[ROWS_KEY]
            if not isinstance(rows, list) or not rows:
                raise InvalidArgument("'rows' must be a non-empty list of feature objects")
            limits.check_rows(len(rows), "'rows'")
            return ManyInputs(self.schema.encode_row(row, f"rows[{i}]") for i, row in enumerate(rows))
        if not isinstance(payload, dict) or FEATURES_KEY not in payload:
            raise InvalidArgument(
                'This is a table model: send JSON {"features": {name: value, ...}}, '
                '{"rows": [...]} or upload a .csv file'
            )
        return self.schema.encode_row(payload[FEATURES_KEY])

    def from_upload(self, filename: str | None, data: bytes, limits: RequestLimits) -> ManyInputs:
        if filename and not filename.lower().endswith(CSV_EXTENSIONS):
            raise InvalidArgument(
                f"Uploaded file {filename!r} is not a .csv file; a table model takes CSV rows "
                "with a header row naming the features"
            )
        return ManyInputs(self.schema.encode_csv(data, f"Uploaded file {filename!r}", limits))

    def from_v2(self, body: Any, limits: RequestLimits) -> list[np.ndarray]:
        tensor = single_input(body)
        datatype, shape = tensor["datatype"], tensor["shape"]
        if datatype not in V2_DATATYPES:
            raise InvalidArgument(
                f"This table model takes a numeric tensor (FP32) of shape [N, {self.schema.width}], not {datatype!r}"
            )
        if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise InvalidArgument(f"shape must be [N, {self.schema.width}], got {shape!r}")
        limits.check_rows(shape[0], "The input tensor")
        try:
            values = np.asarray(tensor["data"], dtype=np.float64).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"data is not numeric: {exc}") from exc
        if values.size != shape[0] * shape[1]:
            raise InvalidArgument(f"data has {values.size} values but shape {shape} needs {shape[0] * shape[1]}")
        return self.schema.encode_matrix(values.reshape(shape), f"input {tensor.get('name', 'features')!r}")

    def v2_inputs(self) -> list[dict[str, Any]]:
        return [{"name": "features", "datatype": "FP32", "shape": [-1, self.schema.width]}]

    def v2_parameters(self) -> dict[str, Any]:
        """The features in the order of the tensor's columns, with their types and categories
        (a category is sent as its index)."""
        return {"features": [{k: f[k] for k in ("name", "type", "categories") if k in f} for f in self.schema.features]}

    async def classify(
        self, item: np.ndarray, submit: Submit, labels: list[str], max_chunks: int
    ) -> tuple[dict[str, Any], dict[str, float]]:
        return await submit(item), self.schema.values(item)

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """Encoded rows (N, F) -> float32 (NaN: missing)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))

    def sample_batch(self) -> np.ndarray:
        return np.zeros((1, self.schema.width), dtype=np.float32)

    def smoke_inputs(self, rows: int) -> np.ndarray:
        return np.zeros((rows, self.schema.width), dtype=np.float32)

    def batch_converter(self) -> BatchConverter:
        import torch

        width = self.schema.width

        def table_batch(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
            features = decode_features(list(batch["features"]), width)
            return torch.from_numpy(features.copy()), torch.from_numpy(np.array(batch["label"], dtype=np.int64))

        return table_batch

    def reference_features(self, table: pa.Table, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        """The split's rows decoded with the dataset's own schema, by feature name (a model may take
        its features in another order, or fewer of them)."""
        schema = schema_of(manifest["table"])
        self.schema.check_comparable(schema, f"Dataset {manifest.get('name')}@{manifest.get('version')}")
        matrix = decode_features(table.column("features").to_pylist(), schema.width)
        return {name: matrix[:, i].astype(np.float64) for i, name in enumerate(schema.names)}


def table_input(spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The input spec of a table graph: a float (batch, F) input and, in ``given['features']``,
    the F features in column order: names (numbers) or ``{"name", "type": "number"}`` /
    ``{"name", "type": "category", "categories": [...]}`` (sent as the category's index).
    Without them the features are ``f0``, ``f1``, ... (numbers)."""
    shape = spec["shape"]
    if len(shape) != 2 or shape[1] <= 0 or spec["datatype"] not in FLOAT_DATATYPES:
        raise InvalidArgument(
            f"The ONNX model's input {spec['name']!r} is {spec['datatype']} of shape {shape}; a table "
            "model takes a float (batch, features) matrix with a fixed number of features"
        )
    unknown = sorted(set(given) - {"features"})
    if unknown:
        raise InvalidArgument(f"Unknown table preprocessing keys {unknown}; known: features")
    if shape[1] > MAX_FEATURES:
        raise InvalidArgument(
            f"The ONNX model's input {spec['name']!r} has {shape[1]:,} features; a table model "
            f"takes at most {MAX_FEATURES}, as a table dataset does"
        )
    raw = given.get("features") or [f"f{i}" for i in range(shape[1])]
    if not isinstance(raw, list) or len(raw) != shape[1]:
        raise InvalidArgument(
            f"The ONNX model takes {shape[1]} features; preprocessing.features must name "
            f"{shape[1]}, got {len(raw) if isinstance(raw, list) else type(raw).__name__}"
        )
    features = [_feature(item) for item in raw]
    names = [f["name"] for f in features]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"preprocessing.features names a feature twice: {names}")
    return {"type": TabularKind.name, "features": features, "accepts": ["json features", "json rows", "text/csv"]}


def _feature(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        item = {"name": item, "type": NUMBER}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not 0 < len(item["name"]) <= 128:
        raise InvalidArgument(f"A feature is a name or {{'name', 'type'[, 'categories']}}, got {str(item)[:80]}")
    kind = item.get("type", NUMBER)
    if kind == NUMBER and set(item) <= {"name", "type"}:
        return {"name": item["name"], "type": NUMBER}
    categories = item.get("categories")
    if (
        kind != CATEGORY
        or set(item) - {"name", "type", "categories"}
        or not isinstance(categories, list)
        or not categories
        or not all(isinstance(c, str) and c for c in categories)
        or len(set(categories)) != len(categories)
    ):
        raise InvalidArgument(
            f"Feature {item['name']!r}: a number ({{'name', 'type': 'number'}}) or a category with "
            "its distinct non-empty 'categories'"
        )
    return {"name": item["name"], "type": CATEGORY, "categories": list(categories)}
