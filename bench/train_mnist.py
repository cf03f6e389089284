"""Benchmark: Ray Train vs a plain PyTorch loop on the same model, data and cores; and the job's
wall time from submit to registered package.

    python bench/train_mnist.py --repeats 3

Prints samples/s of each (median over the epochs after the first, then over repeats), their ratio,
and the full `python -m jobs.train` run: wall seconds and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from aiplatform.datasets import DatasetManager, DatasetVersion  # noqa: E402
from aiplatform.networks.architectures import build_model  # noqa: E402
from aiplatform.preprocessing import decode_rows, image_preprocessing, images_to_tensor  # noqa: E402
from aiplatform.settings import Settings  # noqa: E402
from aiplatform.storage import Storage, open_storage  # noqa: E402
from aiplatform.training.catalog import get_template  # noqa: E402
from aiplatform.training.engine import run_training  # noqa: E402
from aiplatform.training.loop import make_optimizer, make_scheduler  # noqa: E402


def load_split(storage: Storage, version: DatasetVersion, split: str) -> tuple[np.ndarray, np.ndarray]:
    tables = [pq.read_table(storage.arrow_path(f["key"]), columns=["image", "label"]) for f in version.files(split)]
    images = np.concatenate(
        [decode_rows(np.array(t.column("image").to_pylist(), dtype=object), version.image_shape) for t in tables]
    )
    labels = np.concatenate([t.column("label").to_numpy() for t in tables])
    return images, labels


def plain_pytorch(storage: Storage, version: DatasetVersion, params, architecture) -> list[float]:  # type: ignore[no-untyped-def]
    """The loop a user would write by hand: in-memory arrays, same model, optimizer and schedule."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(params.seed)
    images, labels = load_split(storage, version, "train")
    profile = version.manifest["profile"]["train"]
    h, w, c = version.image_shape
    prep = image_preprocessing(h, w, c, profile["mean_intensity"], profile["std_intensity"])
    model = build_model(architecture)
    optimizer = make_optimizer(params.optimizer, model.parameters(), params.learning_rate)
    steps = -(-len(labels) // params.batch_size)
    scheduler = make_scheduler(
        {"epochs": params.epochs, "steps_per_epoch": steps + 1, "learning_rate": params.learning_rate}, optimizer
    )
    rng = np.random.default_rng(params.seed)
    rates = []
    for _ in range(params.epochs):
        model.train()
        order = rng.permutation(len(labels))
        started = time.perf_counter()
        for start in range(0, len(order), params.batch_size):
            idx = order[start : start + params.batch_size]
            x = images_to_tensor(images[idx], prep)
            y = torch.from_numpy(labels[idx].astype(np.int64))
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
        rates.append(len(order) / (time.perf_counter() - started))
    return rates


def full_job(epochs: int) -> dict:
    """`python -m jobs.train` in a fresh process: Ray start, dataset, training, package, registry."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIP_HOME": home, "AIP_RAY_DASHBOARD": "false"}
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobs.train",
                "--template",
                "cnn-classification",
                "--dataset",
                "mnist",
                "--epochs",
                str(epochs),
                "--json",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - started
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_seconds": wall, "test_accuracy": summary["test_accuracy"], "version": summary["version"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument(
        "--stream-every-epoch",
        action="store_true",
        help="Ray Train reads its shard from Ray Data every epoch (train_keep_shard_bytes=0), as before it was kept",
    )
    args = parser.parse_args()

    import ray

    ray.init(
        address="local",  # its own Ray, never one another program started on this machine
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
    )
    results = {"plain": [], "ray_train": [], "jobs": []}
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), **({"train_keep_shard_bytes": 0} if args.stream_every_epoch else {}))
        storage = open_storage(str(Path(home) / "artifacts"))
        datasets = DatasetManager(storage)
        template = get_template("cnn-classification")
        params = template.parse_params({"epochs": args.epochs})
        version = datasets.build(template.dataset_spec(params))
        architecture = template.architecture(params, version, template.preprocessing(params, version, datasets))
        for repeat in range(args.repeats):
            # Alternate which runs first: the machine is noisy and drifts over a minute or two.
            if repeat % 2 == 0:
                plain = plain_pytorch(storage, version, params, architecture)
            outcome = run_training(
                template, params, settings=settings, storage=storage, datasets=datasets, run_name=f"bench-{repeat}"
            )
            if repeat % 2 == 1:
                plain = plain_pytorch(storage, version, params, architecture)
            ray_rates = [m["samples_per_second"] for m in outcome.history]
            results["plain"].append(statistics.median(plain[1:] or plain))
            results["ray_train"].append(statistics.median(ray_rates[1:] or ray_rates))
            print(
                f"repeat {repeat}: plain {results['plain'][-1]:.0f} samples/s, "
                f"ray train {results['ray_train'][-1]:.0f} samples/s "
                f"(test accuracy {outcome.test_metrics['test_accuracy']:.4f})",
                flush=True,
            )
    ray.shutdown()
    if not args.skip_job:
        for repeat in range(args.repeats):
            results["jobs"].append(full_job(args.epochs))
            print(f"job {repeat}: {results['jobs'][-1]}", flush=True)
    plain, ray_train = statistics.median(results["plain"]), statistics.median(results["ray_train"])
    print()
    print(f"plain PyTorch   : {plain:8.0f} samples/s (median of {args.repeats})")
    print(f"Ray Train       : {ray_train:8.0f} samples/s (median of {args.repeats})")
    print(f"ratio Ray/plain : {ray_train / plain:8.3f}   (target >= 0.9)")
    if results["jobs"]:
        walls = [j["wall_seconds"] for j in results["jobs"]]
        accs = [j["test_accuracy"] for j in results["jobs"]]
        print(
            f"full job        : {statistics.median(walls):8.1f} s wall, submit -> registered package "
            f"(median of {len(walls)}; target <= 300 s)"
        )
        print(f"test accuracy   : {statistics.median(accs):8.4f} (median; min {min(accs):.4f}; target >= 0.990)")


if __name__ == "__main__":
    main()
