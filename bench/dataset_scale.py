"""Benchmark: datasets larger than memory. MNIST at 1x, 4x, 16x (the real 70,000 digits, then
seeded random affine copies of them), written as parquet sources of PNG bytes; each size is built
into a dataset version and trained on for one epoch, in a fresh process with its own embedded Ray.

    python bench/dataset_scale.py [--multiples 1,4,16] [--epochs 1] [--streaming-bytes N]

Per size: build and training time (and each per 1x of data: flat means linear in size), and the
peak memory (proportional set size, so the object store's shared pages count once) of the head's
processes (this driver, GCS, raylet, dashboard) and of Ray's worker processes, sampled every
0.5 s, with the ratio to the 1x run. Versions over ``--streaming-bytes`` (default: the
platform's) are built and trained streaming; the column says which did.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import numpy as np
import psutil

ROWS_PER_FILE = 10_000
AUGMENT = {"rotation_deg": 12.0, "shift_frac": 0.1, "scale_frac": 0.1}
PARAMS = {"epochs": 1, "batch_size": 128, "conv_channels": [8, 16], "hidden_units": 64, "val_fraction": 0.1}


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 real MNIST digits (train then test) from the package the platform reads."""
    from aiplatform.datasets.sources import _mnist_file, _read_mnist_split

    parts = [_read_mnist_split(_mnist_file(), split, slice(None)) for split in ("train", "test")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_copy(job: tuple[int, str]) -> list[str]:
    """Copy ``index`` of MNIST (0: the digits as they are) as parquet files of PNG bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from aiplatform.datasets.augment import random_affine
    from aiplatform.datasets.spec import AugmentSpec

    index, folder = job
    images, labels = mnist_digits()
    if index:
        ids = np.arange(len(images), dtype=np.int64) + index * 1_000_000
        images = random_affine(images[..., None], ids, index, AugmentSpec(**AUGMENT), seed=index)[..., 0]
    paths = []
    for start in range(0, len(images), ROWS_PER_FILE):
        pngs = []
        for image in images[start : start + ROWS_PER_FILE]:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
        path = Path(folder) / f"copy-{index:02d}-{start // ROWS_PER_FILE:02d}.parquet"
        pq.write_table(
            pa.table(
                {
                    "image": pa.array(pngs, pa.binary()),
                    "label": pa.array(labels[start : start + ROWS_PER_FILE].astype(np.int64)),
                }
            ),
            path,
        )
        paths.append(str(path))
    return paths


def make_sources(root: Path, multiples: list[int]) -> dict[int, Path]:
    """One folder per multiple, hard links to the copies it holds (copies are written once)."""
    copies = root / "copies"
    copies.mkdir(parents=True, exist_ok=True)
    with Pool(2) as pool:
        written = pool.map(write_copy, [(i, str(copies)) for i in range(max(multiples))])
    sources = {}
    for multiple in multiples:
        folder = root / f"mnist-{multiple}x"
        folder.mkdir(exist_ok=True)
        for path in (p for copy in written[:multiple] for p in copy):
            target = folder / Path(path).name
            if not target.exists():
                os.link(path, target)
        sources[multiple] = folder
    return sources


class PeakMemory:
    """Peak PSS of this process and its descendants (Ray's head processes and its workers)."""

    def __init__(self) -> None:
        self.head = self.workers = self.total = 0
        self.largest: list[tuple[str, int]] = []
        """The largest processes when the total peaked (name, MB)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.5):
            head = workers = 0
            sizes = []
            for process in [me, *me.children(recursive=True)]:
                try:
                    pss = process.memory_full_info().pss
                    name = process.name()
                    worker = name.startswith("ray::") or "default_worker.py" in " ".join(process.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                sizes.append((name, pss >> 20))
                if worker:
                    workers += pss
                else:
                    head += pss
            self.head, self.workers = max(self.head, head), max(self.workers, workers)
            if head + workers > self.total:
                self.total = head + workers
                self.largest = sorted(sizes, key=lambda entry: -entry[1])[:4]


def child(source: Path, streaming_bytes: int, epochs: int, home: Path) -> dict[str, Any]:
    """Build and train in this (fresh) process, under its own embedded Ray."""
    import ray

    from aiplatform.datasets import DatasetManager
    from aiplatform.runtime import local_runtime_env
    from aiplatform.settings import Settings
    from aiplatform.storage import open_storage
    from aiplatform.training.catalog import get_template
    from aiplatform.training.engine import run_training

    with PeakMemory() as peak:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            configure_logging=False,
            _temp_dir=str(home / "ray"),
            runtime_env=local_runtime_env(),
            namespace="bench-dataset-scale",
        )
        settings = Settings(home=home, dataset_streaming_bytes=streaming_bytes)
        storage = open_storage(str(home / "artifacts"))
        datasets = DatasetManager.from_settings(storage, settings)
        template = get_template("cnn-classification")
        params = template.parse_params({**PARAMS, "epochs": epochs, "dataset": f"parquet:{source}"})
        started = time.perf_counter()
        version = datasets.build(template.dataset_spec(params))
        build_s = time.perf_counter() - started
        build_peak = (peak.head, peak.workers)
        outcome = run_training(
            template, params, settings=settings, storage=storage, datasets=datasets, run_name="bench-dataset-scale"
        )
        ray.shutdown()
    rows = sum(version.rows(split) for split in ("train", "val", "test"))
    return {
        "rows": rows,
        "train_rows": version.rows("train"),
        "build_s": build_s,
        "train_s": outcome.timings["fit_seconds"],
        "streams": datasets.streams(version),
        "version_mb": sum(f["size"] for s in ("train", "val", "test") for f in version.files(s)) / 2**20,
        "accuracy": outcome.test_metrics["test_accuracy"],
        "build_head_mb": build_peak[0] / 2**20,
        "build_workers_mb": build_peak[1] / 2**20,
        "head_mb": peak.head / 2**20,
        "workers_mb": peak.workers / 2**20,
        "total_mb": peak.total / 2**20,
        "largest_at_peak": peak.largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multiples", default="1,4,16")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--streaming-bytes",
        type=int,
        default=None,
        help="AIP_DATASET_STREAMING_BYTES for the runs (default: the platform's)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(child(Path(job["source"]), job["streaming_bytes"], job["epochs"], Path(job["home"]))))
        return
    from aiplatform.settings import Settings

    streaming_bytes = args.streaming_bytes
    if streaming_bytes is None:
        streaming_bytes = Settings.model_fields["dataset_streaming_bytes"].default
    multiples = sorted(int(m) for m in args.multiples.split(","))
    with tempfile.TemporaryDirectory(prefix="aip-bench-datasets-") as tmp:
        started = time.perf_counter()
        sources = make_sources(Path(tmp), multiples)
        print(
            f"sources written in {time.perf_counter() - started:.0f} s "
            f"(streaming above {streaming_bytes / 2**20:.0f} MiB)",
            flush=True,
        )
        runs = {}
        for multiple in multiples:
            home = Path(tmp) / f"home-{multiple}x"
            job = {
                "source": str(sources[multiple]),
                "streaming_bytes": streaming_bytes,
                "epochs": args.epochs,
                "home": str(home),
            }
            done = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(job)], check=True, capture_output=True, text=True
            )
            runs[multiple] = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps({"multiple": multiple, **runs[multiple]}), flush=True)
    base = runs[multiples[0]]
    print(
        "\n| size | rows | version MB | streams | build s (per 1x) | train s (per 1x) | accuracy "
        "| peak head MB | peak workers MB | peak total MB (x 1x) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for multiple, run in runs.items():
        scale = run["rows"] / base["rows"]
        print(
            f"| {multiple}x | {run['rows']:,} | {run['version_mb']:.0f} | {'yes' if run['streams'] else 'no'} "
            f"| {run['build_s']:.1f} ({run['build_s'] / scale:.1f}) | {run['train_s']:.1f} ({run['train_s'] / scale:.1f}) "
            f"| {run['accuracy']:.4f} | {run['head_mb']:.0f} | {run['workers_mb']:.0f} "
            f"| {run['total_mb']:.0f} ({run['total_mb'] / base['total_mb']:.2f}x) |"
        )


if __name__ == "__main__":
    main()
