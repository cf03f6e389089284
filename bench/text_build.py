"""Benchmark: dropping duplicate texts when a text dataset version is built.

    python bench/text_build.py [--repeats 3] [--max-rows N]

On the tweets corpus the package ships (38,158 rows, 955 duplicates), cleaned once, then
deduplicated the way the platform does it (rows sorted by id, a whole block at a time:
``colocated`` + ``deduplicate``) and the way Ray Data's API suggests (``groupby("id").map_groups``
keeping one row per group, the baseline), each timed in the same process on the same cores. Both
must keep the same rows. Prints each one's median seconds and the ratio, then the whole build's
time for context.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def one_per_group(group: dict[str, Any]) -> dict[str, Any]:
    """The baseline's UDF, called once per id: the same choice as the platform's, on one group."""
    from aiplatform.datasets.text_builder import deduplicate

    return deduplicate(group)


def timed(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rows", type=int, default=None, help="a seeded subset of the corpus")
    args = parser.parse_args()

    import ray

    from aiplatform.datasets import DatasetManager
    from aiplatform.datasets.execution import shuffle_strategy
    from aiplatform.datasets.text_builder import clean_rows, colocated, deduplicate
    from aiplatform.datasets.text_sources import read_text_source
    from aiplatform.storage import open_storage
    from aiplatform.training.catalog import get_template

    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="aip-bench-ray-"),
    )
    template = get_template("text-classification")
    spec = template.dataset_spec(template.parse_params({"max_rows": args.max_rows} if args.max_rows else {}))
    with shuffle_strategy("sort"):
        source = read_text_source(spec, None, None).dataset
        cleaned = source.map_batches(clean_rows, fn_kwargs={"min_chars": spec.min_chars}, batch_size=2048).materialize()
        rows = cleaned.count()

        def blocks() -> set[tuple[int, str, str]]:
            kept = colocated(cleaned, "id", 2).map_batches(deduplicate, batch_size=None).take_all()
            return {(int(r["id"]), str(r["text"]), str(r["label_name"])) for r in kept}

        def groups() -> set[tuple[int, str, str]]:
            kept = cleaned.groupby("id", num_partitions=2).map_groups(one_per_group).take_all()
            return {(int(r["id"]), str(r["text"]), str(r["label_name"])) for r in kept}

        platform_s, platform_rows = timed(blocks, args.repeats)
        baseline_s, baseline_rows = timed(groups, args.repeats)
    if platform_rows != baseline_rows:
        raise SystemExit("the two ways kept different rows")
    build_s, _ = timed(lambda: DatasetManager(open_storage(tempfile.mkdtemp())).build(spec), 1)
    print(f"{rows} cleaned rows, {rows - len(platform_rows)} duplicates dropped, median of {args.repeats}:")
    print(f"  groupby('id').map_groups (baseline): {baseline_s:7.2f} s")
    print(f"  sorted blocks, deduplicate:           {platform_s:7.2f} s   ({baseline_s / platform_s:.0f}x faster)")
    print(f"  the whole version's build:            {build_s:7.2f} s")


if __name__ == "__main__":
    main()
