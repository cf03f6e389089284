"""Benchmark: a batch inference job (Ray Data, an actor pool, Parquet parts written) against the
same model called in this process in a plain loop over the same rows, with the same decoding and
the same torch/XGBoost threads: the loop is the limit the job's overhead is measured against.

    python bench/batch.py [--cases table,mnist,text] [--table-rows 62500,1000000] [--mnist-rows 10000]
                          [--text-rows 0] [--repeats 1]

Cases: ``table``: an XGBoost booster (the tabular template's format, 4 features, one a category)
over an uploaded CSV of each of ``--table-rows`` rows (several sizes: memory flat from one to the
next), decoded as served CSV uploads are; ``mnist``: a 28x28 CNN (the cnn-classification
architecture) over the train split of an MNIST dataset version of ``--mnist-rows`` rows (no
validation rows: at most the source's 60,000 training digits), decoded as evaluation does;
``text``: the text-classification template's model (a tokenizer fitted on the corpus, 64 words a
window, random weights) over the tweets-sentiment corpus (``--text-rows``, 0: all 38,158) as an
uploaded JSON lines file, decoded and windowed as served texts are. The job runs as ``jobs.batch`` does, minus
the queue (``aiplatform.batch.job.run_batch``), one actor holding every core's threads. Figures:
rows/s of each and the ratio job/loop (1.0: no overhead), medians over ``--repeats``; the model
actor's peak resident memory (flat in the input's size: it holds one part).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from aiplatform.batch.inputs import BatchInputs  # noqa: E402
from aiplatform.batch.job import make_plan, run_batch  # noqa: E402
from aiplatform.batch.params import BatchParams  # noqa: E402
from aiplatform.batch.scoring import RowScorer, choose_batch_size, row_ranges  # noqa: E402
from aiplatform.batch.sources import DATASET, RowSource  # noqa: E402
from aiplatform.registry.store import RegistryStore  # noqa: E402
from aiplatform.serving.runner import ModelRunner  # noqa: E402
from aiplatform.settings import Settings  # noqa: E402
from aiplatform.storage import sha256_bytes, storage_from_settings  # noqa: E402


def table_case(storage: Any, registry: RegistryStore, rows: int) -> dict[str, Any]:
    import xgboost

    from aiplatform.packaging import build_package

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    x[:, 3] = rng.integers(0, 2, 2000)
    y = (x[:, 0] > 0).astype(int) + (x[:, 3] > 0).astype(int)
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3}, xgboost.DMatrix(x, label=y), 50)
    features = [{"name": n, "type": "number"} for n in "abc"] + [
        {"name": "colour", "type": "category", "categories": ["red", "blue"]}
    ]
    package = build_package(
        model_config={
            "name": "bench-table",
            "template": "tabular-classification",
            "labels": ["low", "mid", "high"],
            "architecture": {"type": "xgboost", "num_features": 4, "num_classes": 3},
            "input": {"type": "tabular", "features": features},
        },
        model_file=bytes(booster.save_raw("json")),
        metrics={},
        lineage={},
    )
    register(storage, registry, "bench-table", package)
    values = rng.normal(size=(rows, 3))
    lines = ["a,b,c,colour"] + [
        f"{a:.5f},{b:.5f},{c:.5f},{('red', 'blue')[i % 2]}" for i, (a, b, c) in enumerate(values)
    ]
    found = BatchInputs(storage).save("rows.csv", io.BytesIO(("\n".join(lines) + "\n").encode()))
    return {"model": "bench-table", "input": {"upload": found.id}}


def mnist_case(storage: Any, registry: RegistryStore, settings: Settings, rows: int) -> dict[str, Any]:
    import torch

    from aiplatform.datasets import DatasetManager, ImageDatasetSpec
    from aiplatform.networks.architectures import build_model
    from aiplatform.packaging import build_package
    from aiplatform.preprocessing import image_preprocessing

    spec = ImageDatasetSpec(source="mnist", max_rows=rows, val_fraction=0)
    dataset = DatasetManager.from_settings(storage, settings).build(spec)
    torch.manual_seed(0)
    architecture = {"type": "cnn", "in_channels": 1, "image_size": 28, "num_classes": 10, "conv_channels": [32, 64]}
    package = build_package(
        model_config={
            "name": "bench-cnn",
            "template": "cnn-classification",
            "architecture": architecture,
            "labels": dataset.labels,
            "input": {"type": "image", "height": 28, "width": 28, "channels": 1},
            "preprocessing": image_preprocessing(28, 28, 1, 0.1307, 0.3081),
        },
        state_dict=build_model(architecture).state_dict(),
        metrics={},
        lineage={},
    )
    register(storage, registry, "bench-cnn", package)
    return {
        "model": "bench-cnn",
        "input": {"dataset": dataset.name, "dataset_version": dataset.version, "split": "train"},
    }


def text_case(storage: Any, registry: RegistryStore, rows: int) -> dict[str, Any]:
    from types import SimpleNamespace

    import pyarrow.csv as pacsv
    import torch

    from aiplatform.datasets.text_sources import tweets_file
    from aiplatform.networks.architectures import build_model
    from aiplatform.packaging import build_package
    from aiplatform.preprocessing import text_preprocessing
    from aiplatform.text import Tokenizer
    from aiplatform.training.catalog import get_template

    corpus = pacsv.read_csv(tweets_file(), read_options=pacsv.ReadOptions(encoding="latin-1"))
    texts = [t for t in corpus.column("text").to_pylist() if t and t.strip()]
    texts = texts[:rows] if rows else texts
    labels = ["negative", "neutral", "positive"]
    template = get_template("text-classification")
    params = template.parse_params({"max_tokens": 64})
    preprocessing = text_preprocessing(Tokenizer.fit(texts, min_freq=2, max_tokens=64))
    dataset = SimpleNamespace(labels=labels)
    architecture = template.architecture(params, dataset, preprocessing)
    torch.manual_seed(0)
    package = build_package(
        model_config={
            "name": "bench-text",
            "template": template.name,
            "task": template.task,
            "architecture": architecture,
            "labels": labels,
            "input": template.input_spec(dataset, preprocessing),
            "preprocessing": preprocessing,
        },
        state_dict=build_model(architecture).state_dict(),
        metrics={},
        lineage={},
    )
    register(storage, registry, "bench-text", package)
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    found = BatchInputs(storage).save("tweets.jsonl", io.BytesIO(lines.encode()))
    return {"model": "bench-text", "input": {"upload": found.id}}


def register(storage: Any, registry: RegistryStore, name: str, package: bytes) -> None:
    key = f"packages/{name}/{sha256_bytes(package)[:16]}.zip"
    storage.put_bytes(key, package)
    registry.register_version(name, package_key=key, sha256=sha256_bytes(package), template="bench")


class PeakMemory:
    """The largest resident memory of any one process under this one (Ray's workers: the model
    actor among them), sampled every 50 ms while it is open."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.05):
            for child in me.children(recursive=True):
                try:
                    if "MapWorker" in " ".join(child.cmdline()) or "PartScorer" in child.name():
                        self.peak = max(self.peak, child.memory_info().rss)
                except psutil.Error:
                    continue


def plain_loop(plan: dict[str, Any], storage: Any, threads: int) -> float:
    """Seconds to score every row in this process: the same reads, decoding and forward passes."""
    runner = ModelRunner.from_bytes(storage.get_bytes(plan["package_key"]))
    runner.choose_threads(threads, threads)
    scorer = RowScorer(runner, choose_batch_size(runner, plan.get("batch_size")))
    source = RowSource.from_dict(plan["source"])
    started = time.perf_counter()
    for _, start, stop in row_ranges(plan["rows_total"], plan["part_rows"]):
        table = source.read(storage, start, stop)
        if source.kind == DATASET:
            scorer.score_dataset_rows(table, source.labels)
        else:
            scorer.score_uploaded_rows(table, str(source.format), str(source.filename))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table-rows", default="200000", help="rows, or several: 62500,1000000")
    parser.add_argument("--mnist-rows", type=int, default=10_000)
    parser.add_argument("--text-rows", type=int, default=0, help="tweets scored (0: the whole corpus)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cases", default="table,mnist")
    args = parser.parse_args()

    import ray

    cores = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    from aiplatform.runtime import quiet_ray_data

    quiet_ray_data()
    figures = {}
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        storage = storage_from_settings(settings)
        registry = RegistryStore(Path(home) / "registry.sqlite", storage)
        cases = []
        for case in args.cases.split(","):
            if case == "table":
                cases += [(f"table-{int(n)}", "table", int(n)) for n in args.table_rows.split(",")]
            else:
                cases.append((case, case, args.mnist_rows if case == "mnist" else args.text_rows))
        for case, kind, size in cases:
            started_case = time.perf_counter()
            if kind == "table":
                raw = table_case(storage, registry, size)
            elif kind == "mnist":
                raw = mnist_case(storage, registry, settings, size)
            elif kind == "text":
                raw = text_case(storage, registry, size)
            else:
                raise SystemExit(f"unknown case {case!r}: use table, mnist or text")
            prepared_s = time.perf_counter() - started_case
            params = BatchParams.model_validate(raw)
            plan = make_plan(params, storage, registry, settings)
            loop_s, job_s, peaks = [], [], []
            for repeat in range(args.repeats):
                loop_s.append(plain_loop(plan, storage, cores))
                started = time.perf_counter()
                with PeakMemory() as memory:
                    summary = run_batch(
                        f"bench-{case}-{repeat}",
                        params,
                        settings=settings,
                        storage=storage,
                        registry=registry,
                        report=lambda progress: None,
                    )
                peaks.append(memory.peak)
                job_s.append(time.perf_counter() - started)
                assert summary["rows"] == plan["rows_total"]
            rows = plan["rows_total"]
            loop, job = statistics.median(loop_s), statistics.median(job_s)
            figures[case] = {
                "rows": rows,
                "loop_rows_per_s": round(rows / loop),
                "job_rows_per_s": round(rows / job),
                "job_over_loop": round(loop / job, 2),
                "job_seconds": round(job, 1),
                "actor_peak_rss_mb": round(max(peaks) / 2**20),
                "part_rows": plan["part_rows"],
                "input_prepared_s": round(prepared_s, 1),
                "load_1min": round(os.getloadavg()[0], 1),
            }
            print(json.dumps({case: figures[case]}), flush=True)
    ray.shutdown()
    print(json.dumps({"cores": cores, **figures}))


if __name__ == "__main__":
    sys.exit(main())
