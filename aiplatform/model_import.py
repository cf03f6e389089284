"""Importing a model trained elsewhere: an ONNX graph checked, described, tried and published.

The graph's signature goes into the typed model config (``architecture.signature``), its input
becomes a kind's input spec (the kind reads it: ``ModelKind.import_input``; an image model's
height, width and channels from the graph's input shape, a table model's features named by the
caller), smoke predictions on the kind's inputs (``ModelKind.smoke_inputs``) at several batch sizes
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.evaluation import evaluate_model, table_batches
from aiplatform.kinds import importable_kinds, kind_for, model_kind_class
from aiplatform.packaging import build_package, load_package
from aiplatform.packaging.config import ModelConfig
from aiplatform.packaging.onnx_graph import ONNX_ARCHITECTURE, RUN_TIMEOUT_S, SCORES, inspect_graph
from aiplatform.registry.publish import publish_package
from aiplatform.registry.store import ModelVersion, RegistryAPI, validate_model_name
from aiplatform.storage import Storage, sha256_bytes

if TYPE_CHECKING:
    from aiplatform.datasets import DatasetManager

IMPORTED_TEMPLATE = "imported-onnx"
MAX_LABELS = 10_000
MAX_REQUEST_INPUT_BYTES = 1024**3
"""One request's inputs as a model server holds them (float32, or the graph's wider type): an
imported model's input row times the rows a request may carry (``AIP_MAX_REQUEST_ROWS``, 256 by
default) must fit, so with the defaults a row is at most 4 MiB (a 512x512 RGB image is 3 MiB)."""
DEFAULT_MAX_REQUEST_ROWS = 256
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


def onnx_model_config(
    *,
    name: str,
    kind: str,
    labels: list[str],
    signature: dict[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    scores: str = "logits",
    template: str = IMPORTED_TEMPLATE,
    max_rows: int = DEFAULT_MAX_REQUEST_ROWS,
) -> ModelConfig:
    """The model config of an imported graph: its kind's input spec read off the graph's input,
    which must fit a serving replica: ``max_rows`` (a request's rows) of it in
    ``MAX_REQUEST_INPUT_BYTES``."""
    if kind not in importable_kinds():  # a text model needs its tokenizer, which an ONNX file does not carry
        raise InvalidArgument(f"Models of kind {kind!r} cannot be imported from ONNX; importable: {importable_kinds()}")
    if scores not in SCORES:
        raise InvalidArgument(f"scores must be one of {list(SCORES)}, got {scores!r}")
    labels = [str(label).strip() for label in labels]
    if not labels or len(labels) > MAX_LABELS or any(not label for label in labels) or len(set(labels)) != len(labels):
        raise InvalidArgument(f"labels must be 1 to {MAX_LABELS} distinct non-empty names, got {labels[:20]}")
    classes = signature["outputs"][0]["shape"][1]
    if classes > 0 and classes != len(labels):
        raise InvalidArgument(
            f"The ONNX model's output {signature['outputs'][0]['name']!r} has {classes} classes "
            f"but {len(labels)} labels were given"
        )
    imported = model_kind_class(kind).import_input(signature["inputs"][0], dict(preprocessing or {}))
    _check_input_size(signature["inputs"][0], imported.row_shape, imported.row_values, max_rows)
    return ModelConfig.parse(
        {
            "name": name,
            "template": template,
            "input": imported.spec,
            "labels": labels,
            "preprocessing": imported.preprocessing,
            "architecture": {
                "type": ONNX_ARCHITECTURE,
                "signature": signature,
                "layout": imported.layout,
                "scores": scores,
            },
        },
        stored=False,
    )


def import_onnx(
    data: bytes,
    *,
    name: str,
    kind: str,
    labels: list[str],
    storage: Storage,
    registry: RegistryAPI,
    preprocessing: Mapping[str, Any] | None = None,
    scores: str = "logits",
    filename: str | None = None,
    max_bytes: int = DEFAULT_MAX_ONNX_BYTES,
    isolate: bool = True,
    test_split: TestSplit | None = None,
    max_rows: int = DEFAULT_MAX_REQUEST_ROWS,
    run_timeout_s: float = RUN_TIMEOUT_S,
    created_by: str | None = None,
) -> ModelVersion:
    """Check, package, try and register an ONNX graph as the next version of ``name``; with a
    ``test_split``, evaluated on it first, as a trained model is (accuracy, macro-F1, where it errs).

    ``isolate``: the untrusted graph is parsed, run, evaluated and packaged in a child process
    whose memory is capped (``CHECK_MEMORY_BYTES``): a graph that allocates without bound fails
    there, not in the API server. ``max_rows``: the rows a prediction request may carry (the
    input's size is capped by it); ``run_timeout_s``: the model servers' deadline of one ONNX
    Runtime call, which every smoke prediction must meet too."""
    validate_model_name(name)
    request = {
        "name": name,
        "kind": kind,
        "labels": list(labels),
        "preprocessing": dict(preprocessing or {}),
        "scores": scores,
        "filename": filename,
        "max_bytes": max_bytes,
        "max_rows": max_rows,
        "run_timeout_s": run_timeout_s,
    }
    with tempfile.TemporaryDirectory(prefix="aip-import-test-") as folder:
        if test_split is not None:
            request["evaluation"] = test_split.written(Path(folder) / "test.parquet", list(labels))
        package, lineage, config, metrics = (_prepare_isolated if isolate else _prepare)(data, request)
    # The same file with the same settings is the same version; other labels, preprocessing or test
    # split, a new one.
    same_import = sha256_bytes(
        json.dumps([lineage["imported"]["sha256"], config, lineage.get("dataset")], sort_keys=True).encode()
    )
    return publish_package(
        package,
        name=name,
        template=IMPORTED_TEMPLATE,
        storage=storage,
        registry=registry,
        metrics=metrics,
        lineage=lineage,
        idempotency_key=f"import-{same_import}",
        created_by=created_by,
    )


@dataclass(frozen=True)
class TestSplit:
    """A built dataset version's test split, to evaluate an imported model on."""

    __test__ = False  # not a pytest test class

    ref: str
    labels: list[str]
    table: Any
    """The split as an Arrow table, its ``label`` column indexing ``labels``."""

    @classmethod
    def of(cls, datasets: DatasetManager, ref: str) -> TestSplit:
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
            raise InvalidArgument(
                f"The model's labels are not dataset {self.ref}'s: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {missing}" if missing else "",
                        f"not in the dataset {extra}" if extra else "",
                    )
                    if part
                )
            )
        to_model = np.array([model_labels.index(label) for label in self.labels], dtype=np.int64)
        labels = to_model[self.table.column("label").to_numpy(zero_copy_only=False).astype(np.int64)]
        table = self.table.set_column(self.table.schema.get_field_index("label"), "label", pa.array(labels))
        pq.write_table(table, path)
        return {"path": str(path), "dataset": self.ref}


def _prepare(data: bytes, request: dict[str, Any]) -> tuple[bytes, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(package, lineage, model.json, metrics) of a checked, tried (and, if asked, evaluated) graph."""
    signature = inspect_graph(data, max_bytes=int(request["max_bytes"]))
    config = onnx_model_config(
        name=request["name"],
        kind=request["kind"],
        labels=request["labels"],
        signature=signature,
        preprocessing=request["preprocessing"],
        scores=request["scores"],
        max_rows=int(request.get("max_rows", DEFAULT_MAX_REQUEST_ROWS)),
    )
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
        return evaluate_model(
            loaded.model, table_batches(pq.read_table(test_path)), loaded.config, len(loaded.labels), loaded.labels
        )
    except (ValueError, RuntimeError, KeyError, Unavailable) as exc:
        raise InvalidArgument(f"The model cannot be evaluated on the test split: {str(exc)[:300]}") from exc


def _prepare_isolated(
    data: bytes, request: dict[str, Any]
) -> tuple[bytes, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """:func:`_prepare` in ``python -m aiplatform.model_import`` with its memory capped."""
    with tempfile.TemporaryDirectory(prefix="aip-import-") as folder:
        work = Path(folder)
        (work / "graph.onnx").write_bytes(data)
        (work / "request.json").write_text(json.dumps(request))
        try:
            child = subprocess.run(
                [sys.executable, "-m", "aiplatform.model_import", str(work), str(CHECK_MEMORY_BYTES)],
                capture_output=True,
                text=True,
                timeout=CHECK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise InvalidArgument(f"Checking the ONNX model took longer than {CHECK_TIMEOUT_S:g} s") from None
        if (work / "error.json").exists():
            raise InvalidArgument(json.loads((work / "error.json").read_text())["message"])
        if child.returncode != 0 or not (work / "package.zip").exists():
            tail = (child.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise InvalidArgument(
                f"The ONNX model could not be checked within {CHECK_MEMORY_BYTES / 2**30:g} GiB "
                f"of memory and {CHECK_TIMEOUT_S:g} s ({tail[0][:300]})"
            )
        done = json.loads((work / "done.json").read_text())
        return (work / "package.zip").read_bytes(), done["lineage"], done["config"], done["metrics"]


def _check_in_child(folder: str, memory_bytes: int) -> int:
    """The child's side of :func:`_prepare_isolated`: cap memory, then prepare."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    work = Path(folder)
    try:
        package, lineage, config, metrics = _prepare(
            (work / "graph.onnx").read_bytes(), json.loads((work / "request.json").read_text())
        )
    except InvalidArgument as exc:
        (work / "error.json").write_text(json.dumps({"message": exc.message}))
        return 0
    except MemoryError:
        (work / "error.json").write_text(
            json.dumps({"message": f"The ONNX model needs more memory than {memory_bytes / 2**30:g} GiB to run"})
        )
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
    row_bytes = 4 * int(np.prod(kind.smoke_inputs(1).shape[1:]))
    largest = min(SMOKE_MAX_ROWS, max(SMOKE_BATCHES[-1] + 1, SMOKE_INPUT_BYTES // row_bytes))
    for rows in (*SMOKE_BATCHES, largest):
        examples = kind.smoke_inputs(rows)
        try:
            scores = loaded.model(kind.to_tensor(examples))
        except (InvalidArgument, Unavailable) as exc:
            raise InvalidArgument(
                f"The ONNX model's smoke prediction on {rows} input(s) failed: {exc.message}"
            ) from None
        if tuple(scores.shape) != (rows, len(loaded.labels)) or not bool(np.isfinite(scores.numpy()).all()):
            raise InvalidArgument(
                f"The ONNX model's smoke prediction on {rows} input(s) gave scores of shape "
                f"{tuple(scores.shape)} (expected ({rows}, {len(loaded.labels)}), all finite)"
            )


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
            raise Unavailable(
                f"{self.limit} model import(s) are being checked already, the most at once "
                "(AIP_MAX_CONCURRENT_IMPORTS); retry when one is done"
            )
        try:
            yield
        finally:
            self._free.release()


def _check_input_size(spec: dict[str, Any], shape: str, values: int, max_rows: int) -> None:
    """A served request's inputs (``max_rows`` rows of ``values`` each) must fit
    ``MAX_REQUEST_INPUT_BYTES`` as the model servers hold them."""
    row_bytes = values * _ITEM_BYTES.get(spec["datatype"], 4)
    if row_bytes * max_rows > MAX_REQUEST_INPUT_BYTES:
        raise InvalidArgument(
            f"The ONNX model's input {spec['name']!r} is {shape} values a row ({row_bytes / 2**20:.1f} MiB "
            f"served); a request of {max_rows} rows (AIP_MAX_REQUEST_ROWS) of it would be over the "
            f"{MAX_REQUEST_INPUT_BYTES / 2**30:g} GiB an imported model's requests may hold, so a row may "
            f"be at most {MAX_REQUEST_INPUT_BYTES // max_rows / 2**20:.1f} MiB: export it for smaller "
            "inputs (224x224 or 512x512 images fit)"
        )


if __name__ == "__main__":
    sys.exit(_check_in_child(sys.argv[1], int(sys.argv[2])))
