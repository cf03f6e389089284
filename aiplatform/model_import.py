"""Importing a model trained elsewhere: an ONNX graph checked, described, tried and published.

The graph's signature goes into the typed model config (``architecture.signature``), its input
becomes a kind's input spec (an image model's height, width and channels from the graph's input
shape; a table model's features, named by the caller), smoke predictions at several batch sizes
run through the package as the model servers will load it, and only then is the package stored
and registered, with ``imported`` lineage (the source file's sha256). Nothing is stored when any
step fails. Imports are checked in a memory-capped child process, ``ImportSlots`` of them at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.evaluation import evaluate_model, table_batches
from aiplatform.kinds import kind_for
from aiplatform.kinds.tabular import MAX_FEATURES
from aiplatform.packaging import build_package, load_package
from aiplatform.packaging.config import ModelConfig
from aiplatform.packaging.onnx_graph import ONNX_ARCHITECTURE, RUN_TIMEOUT_S, SCORES, inspect_graph
from aiplatform.registry.publish import publish_package
from aiplatform.registry.store import ModelVersion, RegistryAPI, validate_model_name
from aiplatform.storage import Storage, sha256_bytes

if TYPE_CHECKING:
    from aiplatform.datasets import DatasetManager

IMPORTED_TEMPLATE = "imported-onnx"
IMPORTABLE_KINDS = ("image", "tabular")
"""Kinds whose inputs a graph can take as they are decoded (a text model needs its tokenizer,
which an ONNX file does not carry)."""
TABLE_ENCODING = "numbers as given, categories as their index, missing as NaN"
MAX_LABELS = 10_000
MAX_IMAGE_SIDE = 4096
MAX_REQUEST_INPUT_BYTES = 1024**3
"""One request's inputs as a model server holds them (float32, or the graph's wider type): an
imported model's input row times the rows a request may carry (``AIP_MAX_REQUEST_ROWS``, 256 by
default) must fit, so with the defaults a row is at most 4 MiB (a 512x512 RGB image is 3 MiB)."""
DEFAULT_MAX_REQUEST_ROWS = 256
FLOAT_DATATYPES = ("FP32", "FP16", "FP64")
_ITEM_BYTES = {"FP64": 8, "INT64": 8}
"""Bytes of one input value as the graph takes it (float32, 4 bytes, when not listed)."""
DEFAULT_MAX_ONNX_BYTES = 512 * 1024**2
CHECK_MEMORY_BYTES = 6 * 1024**3
"""Address space of the child that parses and tries an imported graph (torch and ONNX Runtime
loaded take ~1.5 GiB of it)."""
CHECK_TIMEOUT_S = 300.0
SMOKE_BATCHES = (1, 2, 3)
SMOKE_INPUT_BYTES = 16 * 1024**2
"""Besides ``SMOKE_BATCHES``, the smoke prediction runs the most rows (up to ``SMOKE_MAX_ROWS``)
whose input fits in this: a graph that only behaves at one batch size is refused at import."""
SMOKE_MAX_ROWS = 32
MAX_EVALUATION_ROWS = 20_000
"""An import is evaluated on at most this many test rows (the split is held by the API server)."""


def onnx_model_config(*, name: str, kind: str, labels: list[str], signature: dict[str, Any],
                      preprocessing: Optional[Mapping[str, Any]] = None, scores: str = "logits",
                      template: str = IMPORTED_TEMPLATE, max_rows: int = DEFAULT_MAX_REQUEST_ROWS) -> ModelConfig:
    """The model config of an imported graph: its kind's input spec read off the graph's input,
    which must fit a serving replica: ``max_rows`` (a request's rows) of it in
    ``MAX_REQUEST_INPUT_BYTES``."""
    if kind not in IMPORTABLE_KINDS:
        raise InvalidArgument(f"Models of kind {kind!r} cannot be imported from ONNX; importable: {list(IMPORTABLE_KINDS)}")
    if scores not in SCORES:
        raise InvalidArgument(f"scores must be one of {list(SCORES)}, got {scores!r}")
    labels = [str(label).strip() for label in labels]
    if not labels or len(labels) > MAX_LABELS or any(not label for label in labels) or len(set(labels)) != len(labels):
        raise InvalidArgument(f"labels must be 1 to {MAX_LABELS} distinct non-empty names, got {labels[:20]}")
    classes = signature["outputs"][0]["shape"][1]
    if classes > 0 and classes != len(labels):
        raise InvalidArgument(f"The ONNX model's output {signature['outputs'][0]['name']!r} has {classes} classes "
                              f"but {len(labels)} labels were given")
    if kind == "tabular":
        spec, steps, layout = table_input(signature["inputs"][0], dict(preprocessing or {})), \
            {"encoding": TABLE_ENCODING}, "NF"
    else:
        height, width, channels, layout = _image_geometry(signature["inputs"][0])
        spec = {"type": "image", "height": height, "width": width, "channels": channels}
        steps = image_preprocessing_steps(dict(preprocessing or {}), channels,
                                          floating=signature["inputs"][0]["datatype"] in FLOAT_DATATYPES)
        _check_input_size(signature["inputs"][0], f"{height}x{width}x{channels}", height * width * channels, max_rows)
    return ModelConfig.parse({
        "name": name, "template": template, "input": spec, "labels": labels, "preprocessing": steps,
        "architecture": {"type": ONNX_ARCHITECTURE, "signature": signature, "layout": layout, "scores": scores},
    }, stored=False)


def import_onnx(data: bytes, *, name: str, kind: str, labels: list[str], storage: Storage, registry: RegistryAPI,
                preprocessing: Optional[Mapping[str, Any]] = None, scores: str = "logits",
                filename: Optional[str] = None, max_bytes: int = DEFAULT_MAX_ONNX_BYTES,
                isolate: bool = True, test_split: Optional["TestSplit"] = None,
                max_rows: int = DEFAULT_MAX_REQUEST_ROWS, run_timeout_s: float = RUN_TIMEOUT_S) -> ModelVersion:
    """Check, package, try and register an ONNX graph as the next version of ``name``; with a
    ``test_split``, evaluated on it first, as a trained model is (accuracy, macro-F1, where it errs).

    ``isolate``: the untrusted graph is parsed, run, evaluated and packaged in a child process
    whose memory is capped (``CHECK_MEMORY_BYTES``): a graph that allocates without bound fails
    there, not in the API server. ``max_rows``: the rows a prediction request may carry (the
    input's size is capped by it); ``run_timeout_s``: the model servers' deadline of one ONNX
    Runtime call, which every smoke prediction must meet too."""
    validate_model_name(name)
    request = {"name": name, "kind": kind, "labels": list(labels), "preprocessing": dict(preprocessing or {}),
               "scores": scores, "filename": filename, "max_bytes": max_bytes, "max_rows": max_rows,
               "run_timeout_s": run_timeout_s}
    with tempfile.TemporaryDirectory(prefix="aip-import-test-") as folder:
        if test_split is not None:
            request["evaluation"] = test_split.written(Path(folder) / "test.parquet", list(labels))
        package, lineage, config, metrics = (_prepare_isolated if isolate else _prepare)(data, request)
    # The same file with the same settings is the same version; other labels, preprocessing or test
    # split, a new one.
    same_import = sha256_bytes(json.dumps([lineage["imported"]["sha256"], config, lineage.get("dataset")],
                                          sort_keys=True).encode())
    return publish_package(package, name=name, template=IMPORTED_TEMPLATE, storage=storage, registry=registry,
                           metrics=metrics, lineage=lineage, idempotency_key=f"import-{same_import}")


@dataclass(frozen=True)
class TestSplit:
    """A built dataset version's test split, to evaluate an imported model on."""

    __test__ = False  # not a pytest test class

    ref: str
    labels: list[str]
    table: Any
    """The split as an Arrow table, its ``label`` column indexing ``labels``."""

    @classmethod
    def of(cls, datasets: "DatasetManager", ref: str) -> "TestSplit":
        dataset = datasets.get_ref(ref)
        if not dataset.rows("test"):
            raise InvalidArgument(f"Dataset {ref} has no test rows to evaluate on")
        table = datasets.read_split_table(dataset, "test")
        return cls(dataset.ref, list(dataset.labels), table.slice(0, MAX_EVALUATION_ROWS))

    def written(self, path: Path, model_labels: list[str]) -> dict[str, Any]:
        """The split in ``path`` with its labels as the model's class indices (the model's labels
        must be the dataset's, in any order)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if sorted(model_labels) != sorted(self.labels):
            missing, extra = sorted(set(self.labels) - set(model_labels)), sorted(set(model_labels) - set(self.labels))
            raise InvalidArgument(f"The model's labels are not dataset {self.ref}'s: "
                                  + "; ".join(part for part in (f"missing {missing}" if missing else "",
                                                                f"not in the dataset {extra}" if extra else "") if part))
        to_model = np.array([model_labels.index(label) for label in self.labels], dtype=np.int64)
        labels = to_model[self.table.column("label").to_numpy(zero_copy_only=False).astype(np.int64)]
        table = self.table.set_column(self.table.schema.get_field_index("label"), "label", pa.array(labels))
        pq.write_table(table, path)
        return {"path": str(path), "dataset": self.ref}


def _prepare(data: bytes, request: dict[str, Any]) -> tuple[bytes, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(package, lineage, model.json, metrics) of a checked, tried (and, if asked, evaluated) graph."""
    signature = inspect_graph(data, max_bytes=int(request["max_bytes"]))
    config = onnx_model_config(name=request["name"], kind=request["kind"], labels=request["labels"],
                               signature=signature, preprocessing=request["preprocessing"], scores=request["scores"],
                               max_rows=int(request.get("max_rows", DEFAULT_MAX_REQUEST_ROWS)))
    source = {"format": "onnx", "sha256": sha256_bytes(data), "bytes": len(data), "opset": signature["opset"]}
    if request.get("filename"):
        source["filename"] = str(request["filename"])[:200]
    lineage: dict[str, Any] = {"imported": source}
    package = build_package(model_config=config, metrics={}, lineage=lineage, model_file=data)
    smoke_prediction(package, run_timeout_s=float(request.get("run_timeout_s", RUN_TIMEOUT_S)))
    metrics: dict[str, Any] = {}
    if request.get("evaluation"):
        metrics = _evaluate(package, request["evaluation"]["path"])
        lineage["dataset"] = request["evaluation"]["dataset"]
        package = build_package(model_config=config, metrics=metrics, lineage=lineage, model_file=data)
    return package, lineage, config.to_json_dict(), metrics


def _evaluate(package: bytes, test_path: str) -> dict[str, Any]:
    """The test split's accuracy, macro-F1, loss and where the model errs (``evaluation.py``)."""
    import pyarrow.parquet as pq

    loaded = load_package(package)
    try:
        return evaluate_model(loaded.model, table_batches(pq.read_table(test_path)), loaded.config,
                              len(loaded.labels), loaded.labels)
    except (ValueError, RuntimeError, KeyError, Unavailable) as exc:
        raise InvalidArgument(f"The model cannot be evaluated on the test split: {str(exc)[:300]}") from exc


def _prepare_isolated(data: bytes, request: dict[str, Any]) -> tuple[bytes, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """:func:`_prepare` in ``python -m aiplatform.model_import`` with its memory capped."""
    with tempfile.TemporaryDirectory(prefix="aip-import-") as folder:
        work = Path(folder)
        (work / "graph.onnx").write_bytes(data)
        (work / "request.json").write_text(json.dumps(request))
        try:
            child = subprocess.run([sys.executable, "-m", "aiplatform.model_import", str(work), str(CHECK_MEMORY_BYTES)],
                                   capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise InvalidArgument(f"Checking the ONNX model took longer than {CHECK_TIMEOUT_S:g} s") from None
        if (work / "error.json").exists():
            raise InvalidArgument(json.loads((work / "error.json").read_text())["message"])
        if child.returncode != 0 or not (work / "package.zip").exists():
            tail = (child.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise InvalidArgument(f"The ONNX model could not be checked within {CHECK_MEMORY_BYTES / 2**30:g} GiB "
                                  f"of memory and {CHECK_TIMEOUT_S:g} s ({tail[0][:300]})")
        done = json.loads((work / "done.json").read_text())
        return (work / "package.zip").read_bytes(), done["lineage"], done["config"], done["metrics"]


def _check_in_child(folder: str, memory_bytes: int) -> int:
    """The child's side of :func:`_prepare_isolated`: cap memory, then prepare."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    work = Path(folder)
    try:
        package, lineage, config, metrics = _prepare((work / "graph.onnx").read_bytes(),
                                                     json.loads((work / "request.json").read_text()))
    except InvalidArgument as exc:
        (work / "error.json").write_text(json.dumps({"message": exc.message}))
        return 0
    except MemoryError:
        (work / "error.json").write_text(json.dumps({"message": "The ONNX model needs more memory than "
                                                                 f"{memory_bytes / 2**30:g} GiB to run"}))
        return 0
    (work / "package.zip").write_bytes(package)
    (work / "done.json").write_text(json.dumps({"lineage": lineage, "config": config, "metrics": metrics}))
    return 0


def smoke_prediction(package: bytes, run_timeout_s: float = RUN_TIMEOUT_S) -> None:
    """Load the package as a model server does and classify batches of inputs of its kind, of
    each size in ``SMOKE_BATCHES`` and one larger, each within the servers' deadline
    (``run_timeout_s``): the scores must be finite, one per label and input."""
    loaded = load_package(package)
    kind = kind_for(loaded.config)
    if hasattr(loaded.model, "run_timeout_s"):
        loaded.model.run_timeout_s = run_timeout_s
    if loaded.config.input_type == "tabular":
        row: tuple[int, ...] = (len(loaded.config.input["features"]),)
    else:
        row = tuple(int(loaded.config.input[k]) for k in ("height", "width", "channels"))
    largest = min(SMOKE_MAX_ROWS, max(SMOKE_BATCHES[-1] + 1, SMOKE_INPUT_BYTES // (4 * int(np.prod(row)))))
    for rows in (*SMOKE_BATCHES, largest):
        if loaded.config.input_type == "tabular":
            examples = np.zeros((rows, *row), dtype=np.float32)
        else:
            examples = np.random.default_rng(rows).integers(0, 256, (rows, *row), dtype=np.uint8)
        try:
            scores = loaded.model(kind.to_tensor(examples))
        except (InvalidArgument, Unavailable) as exc:
            raise InvalidArgument(f"The ONNX model's smoke prediction on {rows} input(s) failed: {exc.message}") from None
        if tuple(scores.shape) != (rows, len(loaded.labels)) or not bool(np.isfinite(scores.numpy()).all()):
            raise InvalidArgument(f"The ONNX model's smoke prediction on {rows} input(s) gave scores of shape "
                                  f"{tuple(scores.shape)} (expected ({rows}, {len(loaded.labels)}), all finite)")


class ImportSlots:
    """At most ``limit`` imports checked at once (each a child process of up to
    ``CHECK_MEMORY_BYTES`` for up to ``CHECK_TIMEOUT_S``); one more is refused at once with
    :class:`Unavailable` (503, Retry-After) rather than queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise Unavailable(f"{self.limit} model import(s) are being checked already, the most at once "
                              "(AIP_MAX_CONCURRENT_IMPORTS); retry when one is done")
        try:
            yield
        finally:
            self._free.release()


def _check_input_size(spec: dict[str, Any], shape: str, values: int, max_rows: int) -> None:
    """A served request's inputs (``max_rows`` rows of ``values`` each) must fit
    ``MAX_REQUEST_INPUT_BYTES`` as the model servers hold them."""
    row_bytes = values * _ITEM_BYTES.get(spec["datatype"], 4)
    if row_bytes * max_rows > MAX_REQUEST_INPUT_BYTES:
        raise InvalidArgument(f"The ONNX model's input {spec['name']!r} is {shape} values a row ({row_bytes / 2**20:.1f} MiB "
                       f"served); a request of {max_rows} rows (AIP_MAX_REQUEST_ROWS) of it would be over the "
                       f"{MAX_REQUEST_INPUT_BYTES / 2**30:g} GiB an imported model's requests may hold, so a row may "
                       f"be at most {MAX_REQUEST_INPUT_BYTES // max_rows / 2**20:.1f} MiB: export it for smaller "
                       "inputs (224x224 or 512x512 images fit)")


def _image_geometry(spec: dict[str, Any]) -> tuple[int, int, int, str]:
    """(height, width, channels, layout) of an image graph's input: (N, C, H, W) or (N, H, W, C),
    square (as the image kind decodes uploads) and at most ``MAX_IMAGE_SIDE`` pixels a side."""
    shape = spec["shape"]
    found = None
    if len(shape) == 4 and shape[1] in (1, 3) and shape[2] > 0 and shape[3] > 0:
        found = (shape[2], shape[3], shape[1], "NCHW")
    elif len(shape) == 4 and shape[3] in (1, 3) and shape[1] > 0 and shape[2] > 0:
        found = (shape[1], shape[2], shape[3], "NHWC")
    if found is not None:
        height, width = found[0], found[1]
        if height != width or height > MAX_IMAGE_SIDE:
            raise InvalidArgument(f"The ONNX model's input {spec['name']!r} is {height}x{width} pixels; image models "
                                  f"here take square images of at most {MAX_IMAGE_SIDE} pixels a side")
        return found
    raise InvalidArgument(f"The ONNX model's input {spec['name']!r} has shape {shape}; an image model takes "
                          "(batch, channels, height, width) or (batch, height, width, channels) with 1 or 3 "
                          "channels and a fixed height and width")


def table_input(spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The input spec of a table graph: a float (batch, F) input and, in ``given['features']``,
    the F features in column order: names (numbers) or ``{"name", "type": "number"}`` /
    ``{"name", "type": "category", "categories": [...]}`` (sent as the category's index).
    Without them the features are ``f0``, ``f1``, ... (numbers)."""
    shape = spec["shape"]
    if len(shape) != 2 or shape[1] <= 0 or spec["datatype"] not in FLOAT_DATATYPES:
        raise InvalidArgument(f"The ONNX model's input {spec['name']!r} is {spec['datatype']} of shape {shape}; a table "
                              "model takes a float (batch, features) matrix with a fixed number of features")
    unknown = sorted(set(given) - {"features"})
    if unknown:
        raise InvalidArgument(f"Unknown table preprocessing keys {unknown}; known: features")
    if shape[1] > MAX_FEATURES:
        raise InvalidArgument(f"The ONNX model's input {spec['name']!r} has {shape[1]:,} features; a table model "
                              f"takes at most {MAX_FEATURES}, as a table dataset does")
    raw = given.get("features") or [f"f{i}" for i in range(shape[1])]
    if not isinstance(raw, list) or len(raw) != shape[1]:
        raise InvalidArgument(f"The ONNX model takes {shape[1]} features; preprocessing.features must name "
                              f"{shape[1]}, got {len(raw) if isinstance(raw, list) else type(raw).__name__}")
    features = [_feature(item) for item in raw]
    names = [f["name"] for f in features]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"preprocessing.features names a feature twice: {names}")
    return {"type": "tabular", "features": features, "accepts": ["json features", "json rows", "text/csv"]}


def _feature(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        item = {"name": item, "type": "number"}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not 0 < len(item["name"]) <= 128:
        raise InvalidArgument(f"A feature is a name or {{'name', 'type'[, 'categories']}}, got {str(item)[:80]}")
    kind = item.get("type", "number")
    if kind == "number" and set(item) <= {"name", "type"}:
        return {"name": item["name"], "type": "number"}
    categories = item.get("categories")
    if kind != "category" or set(item) - {"name", "type", "categories"} or not isinstance(categories, list) \
            or not categories or not all(isinstance(c, str) and c for c in categories) \
            or len(set(categories)) != len(categories):
        raise InvalidArgument(f"Feature {item['name']!r}: a number ({{'name', 'type': 'number'}}) or a category with "
                              "its distinct non-empty 'categories'")
    return {"name": item["name"], "type": "category", "categories": list(categories)}


def image_preprocessing_steps(given: dict[str, Any], channels: int, floating: bool = True) -> dict[str, Any]:
    """How pixels become the graph's input: ``value * scale``, then ``(value - mean) / std`` per
    channel (default for a float input: 0..255 -> 0..1; an integer input takes the pixels as
    they are, and nothing else: its values would be truncated)."""
    unknown = sorted(set(given) - {"scale", "mean", "std"})
    if unknown:
        raise InvalidArgument(f"Unknown image preprocessing keys {unknown}; known: mean, scale, std")
    identity = {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
    if not floating:
        if given and {**identity, **given} != identity:
            raise InvalidArgument("The ONNX model takes integer pixels: it cannot be given scale, mean or std")
        return identity
    steps = {"scale": 1 / 255, "mean": [0.0] * channels, "std": [1.0] * channels, **given}
    try:
        scale = float(steps["scale"])
        mean = [float(v) for v in steps["mean"]]
        std = [float(v) for v in steps["std"]]
    except (TypeError, ValueError):
        raise InvalidArgument("preprocessing scale must be a number and mean, std lists of numbers") from None
    if len(mean) != channels or len(std) != channels or not all(np.isfinite([scale, *mean, *std])) \
            or any(s <= 0 for s in std) or scale <= 0:
        raise InvalidArgument(f"preprocessing needs a positive scale and {channels} mean and positive std values "
                              f"(one per channel), got {given}")
    return {**steps, "scale": scale, "mean": mean, "std": std}


if __name__ == "__main__":
    sys.exit(_check_in_child(sys.argv[1], int(sys.argv[2])))
