"""Benchmark: the tabular-classification template on Ray Train's XGBoost trainer vs plain XGBoost
on the same encoded rows, parameters, rounds and cores.

    python bench/train_tabular.py --repeats 3 [--rows 200000]

Two tables: the real penguins (344 rows) and a larger one made from scikit-learn's real
breast-cancer table (569 rows x 30 features) by jitter: every copy of a row is moved by 2% of each
feature's spread, ``--rows`` rows in all, written as parquet and read as ``parquet:<path>``. For each,
the template's whole ``fit`` (Ray Train worker group, shards into DMatrix, per-round reports and
JSON checkpoints, test evaluation) and its boosting alone (the trainer's ``fit``) against
``xgboost.train`` in this process on the dataset version's own train rows. Early stopping is off in
both, so both boost the same number of rounds. Medians over ``--repeats``; ratios plain/Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from aiplatform.datasets import DatasetManager, DatasetVersion  # noqa: E402
from aiplatform.feature_bytes import decode_features  # noqa: E402
from aiplatform.settings import Settings  # noqa: E402
from aiplatform.storage import open_storage  # noqa: E402
from aiplatform.training.catalog import get_template  # noqa: E402


def jittered_breast_cancer(rows: int, folder: Path) -> str:
    """A parquet table of ``rows`` rows made from the real breast-cancer table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn.datasets

    bunch = sklearn.datasets.load_breast_cancer()
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(bunch.data), rows)
    values = bunch.data[index] + rng.normal(0, 0.02, (rows, bunch.data.shape[1])) * bunch.data.std(axis=0)
    columns = {name.replace(" ", "_"): values[:, i] for i, name in enumerate(bunch.feature_names)}
    columns["diagnosis"] = np.array(bunch.target_names)[bunch.target[index]]
    path = folder / "breast-cancer-jittered.parquet"
    pq.write_table(pa.table(columns), path)
    return f"parquet:{path}"


def plain_xgboost(datasets: DatasetManager, version: DatasetVersion, config: dict) -> float:  # type: ignore[type-arg]
    """Seconds of ``xgboost.train`` on the version's train rows (validation rows as its eval set)."""
    import xgboost

    width = len(version.manifest["table"]["features"])
    matrices = []
    for split in ("train", "val"):
        table = datasets.read_split_table(version, split)
        matrices.append(
            xgboost.DMatrix(
                decode_features(table.column("features").to_pylist(), width),
                label=table.column("label").to_numpy(),
                missing=np.nan,
            )
        )
    started = time.perf_counter()
    xgboost.train(
        config,
        matrices[0],
        num_boost_round=config.pop("rounds"),
        evals=[(matrices[0], "train"), (matrices[1], "val")],
        verbose_eval=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()

    import ray

    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
    )
    from aiplatform.runtime import quiet_ray_data

    quiet_ray_data()
    template = get_template("tabular-classification")
    report = {}
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        storage = open_storage(str(Path(home) / "artifacts"))
        datasets = DatasetManager(storage)
        tables = {
            "penguins": {"dataset": "penguins"},
            f"breast-cancer x{args.rows:,} rows": {
                "dataset": jittered_breast_cancer(args.rows, Path(home)),
                "label_column": "diagnosis",
            },
        }
        for label, source in tables.items():
            params = template.parse_params({**source, "num_boost_round": args.rounds, "early_stopping_rounds": None})
            build_started = time.perf_counter()
            version = datasets.build(template.dataset_spec(params))
            build_seconds = time.perf_counter() - build_started
            runs = {"ray_fit": [], "ray_boosting": [], "plain": []}
            accuracy = None
            for repeat in range(args.repeats):
                xgb_params = template.booster_params(params, len(version.labels), threads=os.cpu_count() or 1)
                if repeat % 2 == 0:  # alternate which goes first: the machine drifts
                    runs["plain"].append(plain_xgboost(datasets, version, {**xgb_params, "rounds": args.rounds}))
                started = time.perf_counter()
                outcome = template.fit(
                    params,
                    settings=settings,
                    storage=storage,
                    datasets=datasets,
                    run_name=f"bench-{uuid_hex()}",
                    callbacks=None,
                )
                runs["ray_fit"].append(time.perf_counter() - started - outcome.timings["dataset_seconds"])
                runs["ray_boosting"].append(outcome.timings["fit_seconds"])
                if repeat % 2 == 1:
                    runs["plain"].append(plain_xgboost(datasets, version, {**xgb_params, "rounds": args.rounds}))
                accuracy = outcome.test_metrics["test_accuracy"]
                print(
                    f"{label} repeat {repeat + 1}: " + json.dumps({k: round(v[-1], 2) for k, v in runs.items()}),
                    flush=True,
                )
            medians = {k: statistics.median(v) for k, v in runs.items()}
            report[label] = {
                "train_rows": version.rows("train"),
                "build_seconds": round(build_seconds, 2),
                "test_accuracy": round(accuracy or 0, 4),
                **{f"{k}_seconds": round(v, 2) for k, v in medians.items()},
                "plain/ray_boosting": round(medians["plain"] / medians["ray_boosting"], 3),
                "plain/ray_fit": round(medians["plain"] / medians["ray_fit"], 3),
            }
    ray.shutdown()
    print(f"\nmedians over {args.repeats} runs, {args.rounds} rounds, {os.cpu_count()} cores:")
    for label, row in report.items():
        print(f"  {label}: {row}")
    print(json.dumps(report))


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


if __name__ == "__main__":
    main()
