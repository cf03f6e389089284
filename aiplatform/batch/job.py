"""A batch job's run: plan the parts once, score the missing ones on Ray Data, report, summarise.

The plan (``plan.json`` beside the parts) fixes, on the first attempt, what every later attempt
must agree on: the model version an alias meant then, the input's rows and the rows per part. The
parts not yet written go through ``map_batches`` to a fixed pool of model actors
(:class:`PartScorer`: each loads the package once, reads its part's rows from storage, scores them
and writes the part whole), each reserving a Train worker's CPUs (what the scheduler reserved for
the task) and a GPU when the cluster has them; the driver only sees one small row per part. A job
killed and started again finds the parts written and scores only the others.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aiplatform.batch.outputs import BatchOutputs, task_prefix
from aiplatform.batch.params import BatchInputSpec, BatchParams
from aiplatform.batch.scoring import RowScorer, choose_batch_size, row_ranges
from aiplatform.batch.sources import DATASET, RowSource, import_uri, resolve_source
from aiplatform.errors import IntegrityError, InvalidArgument
from aiplatform.evaluation import macro_f1
from aiplatform.settings import Settings
from aiplatform.storage import Storage, sha256_bytes, storage_from_settings
from aiplatform.storage.projects import DEFAULT_PROJECT

logger = logging.getLogger(__name__)
PART_BYTES = 32 << 20
"""Input bytes per part (when the job chooses): memory per actor stays about this."""
MIN_PART_ROWS, MAX_PART_ROWS = 256, 200_000
PLAN_FORMAT = 1

Report = Callable[[dict[str, Any]], None]


def make_plan(
    params: BatchParams, storage: Storage, registry: Any, settings: Settings, project: str = DEFAULT_PROJECT
) -> dict[str, Any]:
    """What every attempt of the job agrees on (see the module docstring); a ``uri`` input is
    read into an upload first, so a later attempt reads the same rows. A dataset input is one
    of ``project``'s (the task's)."""
    from aiplatform.batch.checks import check_fits, check_output_size, model_config
    from aiplatform.kinds import kind_for

    version = registry.resolve(params.model_name, params.model_ref)
    config = model_config(storage, version)
    spec = params.input
    if spec.uri is not None:
        spec = BatchInputSpec(upload=import_uri(spec.uri, storage, settings).id)
    source = resolve_source(spec, storage, project)
    check_fits(kind_for(config), source, storage, f"{version.name}@{version.version}")
    total = check_output_size(params, source.rows, settings.batch_max_output_rows)
    part_rows = params.part_rows or _part_rows(source, storage)
    return {
        "format": PLAN_FORMAT,
        "model": version.name,
        "version": version.version,
        "package_key": version.package_key,
        "sha256": version.sha256,
        "labels": list(config.labels),
        "source": source.to_dict(),
        "rows_total": total,
        "part_rows": part_rows,
        "parts": math.ceil(total / part_rows),
        "batch_size": params.batch_size,
    }


def task_project(task_id: str, settings: Settings) -> str:
    """The project of queued task ``task_id``: where its job reads datasets."""
    from aiplatform.tasks.queue import TaskClient

    return TaskClient.connect(settings).get(task_id).project


def _part_rows(source: RowSource, storage: Storage) -> int:
    size = sum(storage.info(key).size for key, _ in source.files)
    per_row = max(1.0, size / max(1, source.rows))
    return int(min(MAX_PART_ROWS, max(MIN_PART_ROWS, PART_BYTES / per_row)))


class PartScorer:
    """A model actor of the pool: loads the package once, then scores whole parts (Ray Data calls
    it with batches of part numbers) and writes each one; a part already written is skipped."""

    def __init__(self, settings: Settings, task_id: str, plan: dict[str, Any], threads: int, use_gpu: bool) -> None:
        from aiplatform.serving.runner import ModelRunner

        self.storage = storage_from_settings(settings)
        self.outputs = BatchOutputs(self.storage)
        self.task_id = task_id
        self.plan = plan
        self.source = RowSource.from_dict(plan["source"])
        data = self.storage.get_bytes(plan["package_key"])
        if sha256_bytes(data) != plan["sha256"]:
            raise IntegrityError(f"Package of {plan['model']}@{plan['version']} does not match its sha256")
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        runner = ModelRunner.from_bytes(data, device)
        runner.choose_threads(threads, threads)  # times the model once: the batch size follows
        self.scorer = RowScorer(runner, choose_batch_size(runner, plan.get("batch_size")))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts, rows, seconds = [], [], []
        for index in batch["part"].tolist():
            started = time.perf_counter()
            start = index * self.plan["part_rows"]
            stop = min(self.plan["rows_total"], start + self.plan["part_rows"])
            if index not in self.outputs.part_indices(self.task_id):
                table = self.source.read(self.storage, start, stop)
                if self.source.kind == DATASET:
                    scored = self.scorer.score_dataset_rows(table, self.source.labels)
                else:
                    scored = self.scorer.score_uploaded_rows(table, str(self.source.format), str(self.source.filename))
                self.outputs.write_part(self.task_id, index, scored.table(int(self.plan["version"])))
            parts.append(index)
            rows.append(stop - start)
            seconds.append(time.perf_counter() - started)
        return {"part": np.array(parts), "rows": np.array(rows), "seconds": np.array(seconds)}


def run_batch(
    task_id: str,
    params: BatchParams,
    *,
    settings: Settings,
    storage: Storage,
    registry: Any,
    report: Report,
    project: str | None = None,
) -> dict[str, Any]:
    """Score the task's input (resuming from the parts already written); returns the summary.
    A dataset input is read in ``project``, the task's (None: asked of the queue)."""
    import ray
    import ray.data

    from aiplatform.training.template import worker_threads

    outputs = BatchOutputs(storage)
    plan = outputs.plan(task_id)
    if plan is None:
        if project is None:
            project = task_project(task_id, settings)
        plan = make_plan(params, storage, registry, settings, project)
        outputs.write_plan(task_id, plan)
    total, parts = int(plan["rows_total"]), int(plan["parts"])
    done = outputs.part_indices(task_id)
    pending = [index for index, _, _ in row_ranges(total, int(plan["part_rows"])) if index not in done]
    rows_done = sum(min(total, (i + 1) * plan["part_rows"]) - i * plan["part_rows"] for i in done if i < parts)
    started = time.perf_counter()
    report({"epoch": len(done), "epochs": parts, "rows_done": rows_done, "rows_total": total, "rows_per_s": 0.0})
    scored_now = 0
    if pending:
        use_gpu = params.gpu == "on" or (params.gpu == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)
        workers = min(params.workers, len(pending))
        ds = ray.data.from_items([{"part": index} for index in pending], override_num_blocks=len(pending))
        scored = ds.map_batches(
            PartScorer,
            fn_constructor_kwargs={
                "settings": settings,
                "task_id": task_id,
                "plan": plan,
                "threads": worker_threads(workers),
                "use_gpu": use_gpu,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=settings.train_worker_cpus,
            num_gpus=1 if use_gpu else 0,
        )
        for row in scored.iter_rows():
            done.add(int(row["part"]))
            rows_done += int(row["rows"])
            scored_now += int(row["rows"])
            elapsed = time.perf_counter() - started
            report(
                {
                    "epoch": len(done),
                    "epochs": parts,
                    "rows_done": rows_done,
                    "rows_total": total,
                    "rows_per_s": round(scored_now / max(elapsed, 1e-9), 1),
                }
            )
    seconds = time.perf_counter() - started
    missing = sorted(set(range(parts)) - outputs.part_indices(task_id))
    if missing:
        raise InvalidArgument(f"Batch job {task_id} ended with parts {missing[:10]} unwritten")
    summary: dict[str, Any] = {
        "task_id": task_id,
        "model": plan["model"],
        "version": plan["version"],
        "labels": plan["labels"],
        "input": plan["source"]["describe"],
        "rows": total,
        "parts": parts,
        "rows_scored_now": scored_now,
        "seconds": round(seconds, 3),
        "rows_per_s": round(scored_now / seconds, 1) if scored_now and seconds > 0 else None,
        "output": task_prefix(task_id) + "/",
    }
    if params.evaluate:
        evaluation = evaluate_outputs(outputs, task_id, plan["labels"])
        if evaluation is not None:
            summary["evaluation"] = evaluation
    if params.write_results:
        summary["results_written"] = write_results(outputs, task_id, plan, settings)
    outputs.write_summary(task_id, summary)
    return summary


def evaluate_outputs(outputs: BatchOutputs, task_id: str, labels: list[str]) -> dict[str, Any] | None:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class, columns: predicted) over
    the rows whose true label is one of the model's classes; None when no row has one."""
    index = {label: i for i, label in enumerate(labels)}
    confusion = torch.zeros(len(labels), len(labels), dtype=torch.int64)
    unknown = 0
    for key in outputs.parts(task_id):
        part = outputs.read_part(key, columns=["label", "true_label"])
        for predicted, truth in zip(part.column("label").to_pylist(), part.column("true_label").to_pylist()):
            if truth is None:
                continue
            if truth not in index:
                unknown += 1
                continue
            confusion[index[truth], index[predicted]] += 1
    seen = int(confusion.sum())
    if seen == 0:
        return None
    return {
        "accuracy": int(confusion.diag().sum()) / seen,
        "macro_f1": macro_f1(confusion),
        "rows": seen,
        "rows_with_unknown_labels": unknown,
        "labels": labels,
        "confusion_matrix": confusion.tolist(),
    }


RESULT_BATCH_ROWS = 1000


def write_results(outputs: BatchOutputs, task_id: str, plan: dict[str, Any], settings: Settings) -> int:
    """Every prediction into the result store too, under ids made from the task and the row
    (``batch-<task>-<id>``): the store keeps the first record of an id, so a resumed job adds none twice."""
    from aiplatform.results import PredictionRecord
    from aiplatform.results.actor import ResultClient
    from aiplatform.runtime import call

    client = ResultClient.connect(settings)
    written = 0
    for key in outputs.parts(task_id):
        part = outputs.read_part(key)
        records = [
            PredictionRecord(
                id=f"batch-{task_id}-{row['id']}",
                model=str(plan["model"]),
                version=int(plan["version"]),
                input_digest=str(plan["source"]["describe"]),
                output={
                    "label": row["label"],
                    "probability": row["probability"],
                    "probabilities": dict(zip(plan["labels"], row["probabilities"])),
                },
                latency_ms=0.0,
            )
            for row in part.to_pylist()
        ]
        for start in range(0, len(records), RESULT_BATCH_ROWS):
            call(client.handle.record_batch, records[start : start + RESULT_BATCH_ROWS])
        written += len(records)
    return written
