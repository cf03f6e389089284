"""``aip batch create|list|show|watch|download|cancel``: batch inference jobs through the REST API.

A batch job scores a dataset version's split, an uploaded file (``--file``: sent to
``/v1/batch-inputs`` first) or a URI the source policy allows, with one model version, on Ray
Data; it is a task of the queue (template ``batch-inference``), so it waits, runs, fails and is
cancelled as every task does. Its output is one Parquet file (``aip batch download``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from aip.api_client import PlatformAPI
from aiplatform.errors import InvalidArgument, Unavailable, error_from_code
from aiplatform.settings import Settings

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
BAR_WIDTH = 30
EXIT_JOB_FAILED = 1
UPLOAD_TIMEOUT_S = 600.0
DOWNLOAD_TIMEOUT_S = 600.0
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


def _job_path(job_id: str, *rest: str) -> str:
    return "/".join([f"/v1/batch-jobs/{quote(job_id, safe='')}", *rest])


def input_spec(api: PlatformAPI, args: argparse.Namespace) -> dict[str, Any]:
    """The job's ``input``: a dataset split, a file uploaded now, or a URI."""
    given = [name for name in ("dataset", "file", "uri") if getattr(args, name)]
    if len(given) != 1:
        raise InvalidArgument("give exactly one input: --dataset NAME, --file PATH or --uri URI")
    if not args.dataset and (args.dataset_version or args.split is not None):
        raise InvalidArgument("--dataset-version and --split go with --dataset")
    if args.dataset:
        spec: dict[str, Any] = {"dataset": args.dataset}
        for key in ("dataset_version", "split"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        return spec
    if args.uri:
        return {"uri": args.uri}
    return {"upload": upload(api, Path(args.file))["id"]}


def upload(api: PlatformAPI, path: Path) -> dict[str, Any]:
    """Send a CSV, a ZIP of images or JSON lines to ``/v1/batch-inputs``; returns the stored input."""
    if not path.is_file():
        raise InvalidArgument(f"--file {path}: no such file")
    with path.open("rb") as data:
        stored = api.post(
            "/v1/batch-inputs",
            files={"file": (path.name, data, "application/octet-stream")},
            timeout_s=UPLOAD_TIMEOUT_S,
        )
    print(
        f"input {stored['id']}: {stored['format']}, {stored['rows']} rows, {stored['bytes']} bytes from {path}",
        file=sys.stderr,
    )
    return stored


def rows_progress(job: dict[str, Any]) -> dict[str, Any]:
    """The job's latest ``rows_done``, ``rows_total`` and ``rows_per_s`` (the task's progress
    metrics, reported as each part is written)."""
    progress = job.get("progress") or {}
    return {**progress, **(progress.get("metrics") or {})}


def progress_line(job: dict[str, Any]) -> str:
    """``[#########.....] 3,000/10,000 rows  812 rows/s  RUNNING``"""
    progress = rows_progress(job)
    done, total = progress.get("rows_done") or 0, progress.get("rows_total") or 0
    filled = min(BAR_WIDTH, int(BAR_WIDTH * done / total)) if total else 0
    rows = f"{done:,}/{total:,} rows" if total else (f"{done:,} rows" if done else "waiting for the first rows")
    rate = progress.get("rows_per_s")
    speed = f"  {rate:,.0f} rows/s" if isinstance(rate, (int, float)) and rate > 0 else ""
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {rows}{speed}  {state_of(job)}"


def state_of(job: dict[str, Any]) -> str:
    return "CANCELLING" if job["state"] == "RUNNING" and job.get("cancel_requested") else str(job["state"])


def describe_outcome(job: dict[str, Any]) -> str:
    """One line: how it ended, its rows and speed, its accuracy where the input had labels."""
    if job["state"] != "SUCCEEDED":
        reason = f" ({job['error_reason']})" if job.get("error_reason") else ""
        error = f": {job['error']}" if job.get("error") else ""
        return f"batch job {job['id']} {job['state']}{reason}{error}"
    summary = job.get("summary") or {}
    parts = [f"batch job {job['id']} SUCCEEDED"]
    if summary.get("rows") is not None:
        parts.append(f"{summary['rows']:,} rows")
    if isinstance(summary.get("rows_per_s"), (int, float)):
        parts.append(f"{summary['rows_per_s']:,.0f} rows/s")
    evaluation = summary.get("evaluation") or {}
    if isinstance(evaluation.get("accuracy"), (int, float)):
        parts.append(f"accuracy {evaluation['accuracy']:.4f}")
    if isinstance(evaluation.get("macro_f1"), (int, float)):
        parts.append(f"macro-F1 {evaluation['macro_f1']:.4f}")
    return ", ".join(parts) + f"; aip batch download {job['id']}"


def watch(api: PlatformAPI, job_id: str, interval_s: float, out: TextIO | None = None) -> dict[str, Any]:
    """Redraw the progress line (on ``out``, default stdout) until the job ends; returns the ended job."""
    out = out or sys.stdout
    interactive = out.isatty()
    last = ""
    while True:
        job = api.get(_job_path(job_id))
        line = progress_line(job)
        if line != last:
            out.write(f"\r\x1b[2K{line}" if interactive else f"{line}\n")
            out.flush()
            last = line
        if job["state"] in FINISHED:
            if interactive:
                out.write("\n")
            return job
        time.sleep(interval_s)


def download(api: PlatformAPI, job_id: str, target: Path) -> int:
    """Stream the job's Parquet file to ``target`` (through a temporary file beside it, so a
    broken download never leaves a half-written file under the name); returns its bytes."""
    partial = target.with_name(f".{target.name}.part")
    written = 0
    try:
        with httpx.stream(
            "GET", f"{api.base_url}{_job_path(job_id, 'output')}", headers=api.headers, timeout=DOWNLOAD_TIMEOUT_S
        ) as response:
            if response.status_code >= 400:
                response.read()
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if isinstance(body, dict) and "message" in body:
                    raise error_from_code(str(body.get("error")), str(body["message"]))
                raise InvalidArgument(f"HTTP {response.status_code} from the job's output: {response.text[:500]}")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
        os.replace(partial, target)
    except httpx.HTTPError as exc:
        raise Unavailable(f"Cannot reach the platform at {api.base_url} ({exc}); is `aip up` running?") from exc
    finally:
        partial.unlink(missing_ok=True)
    return written


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    api = PlatformAPI(settings)
    body: dict[str, Any] = {
        "model": args.model,
        "input": input_spec(api, args),
        "write_results": args.write_results,
        "evaluate": not args.no_evaluate,
        "priority": args.priority,
        "start": not args.no_start,
    }
    for field in ("batch_size", "max_rows", "workers", "gpu", "idempotency_key"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    job = api.post("/v1/batch-jobs", json=body)
    if args.json and not args.watch:
        print(json.dumps(job))
        return 0
    print(f"batch job {job['id']} {job['state']} ({job['params']['model']}, priority {job['priority']})")
    if not args.watch:
        return 0
    ended = watch(api, job["id"], args.interval)
    print(json.dumps(ended) if args.json else describe_outcome(ended))
    return 0 if ended["state"] == "SUCCEEDED" else EXIT_JOB_FAILED


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    data = PlatformAPI(settings).get("/v1/batch-jobs", params={"limit": args.limit, "state": args.state})
    if args.json:
        print(json.dumps(data))
        return 0
    if not data["jobs"]:
        print("no batch jobs")
    for job in data["jobs"]:
        spec = job["params"].get("input") or {}
        source = next((f"{key} {spec[key]}" for key in ("dataset", "upload", "uri") if spec.get(key)), "-")
        print(
            f"{job['id']}  {state_of(job):<10} {job['params'].get('model', '-'):<24} {source:<30} {progress_line(job)}"
        )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(PlatformAPI(settings).get(_job_path(args.job_id)), indent=2))
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    ended = watch(PlatformAPI(settings), args.job_id, args.interval)
    print(describe_outcome(ended))
    return 0 if ended["state"] == "SUCCEEDED" else EXIT_JOB_FAILED


def cmd_download(args: argparse.Namespace, settings: Settings) -> int:
    target = Path(args.output or f"batch-{args.job_id}.parquet")
    if target.is_dir():
        raise InvalidArgument(f"-o {target} is a folder; name the file, e.g. {target / 'scores.parquet'}")
    size = download(PlatformAPI(settings), args.job_id, target)
    print(f"{target} ({size:,} bytes)")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    job = PlatformAPI(settings).post(_job_path(args.job_id, "cancel"))
    print(f"batch job {job['id']} {'CANCELLING' if job['state'] == 'RUNNING' else job['state']}")
    return 0


def add_batch_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser("batch", help="batch inference jobs (score a dataset, a file or a URI)")
    jobs = batch.add_subparsers(dest="batch", required=True)
    create = jobs.add_parser("create", help="score one input with a model version, as a queued job")
    create.add_argument("--model", required=True, help="NAME, NAME@VERSION or NAME@ALIAS (e.g. mnist-cnn@production)")
    create.add_argument("--dataset", help="a built dataset's name (its latest version unless --dataset-version)")
    create.add_argument("--dataset-version", help="with --dataset")
    create.add_argument("--split", help="with --dataset: train, val or test (default test)")
    create.add_argument("--file", help="a CSV of table rows, a ZIP of images or JSON lines of texts (uploaded)")
    create.add_argument("--uri", help="an s3:// prefix or an https URL the source policy allows")
    create.add_argument("--write-results", action="store_true", help="also keep each row in the result store")
    create.add_argument("--no-evaluate", action="store_true", help="skip accuracy even when the input has labels")
    create.add_argument("--batch-size", type=int, help="rows per model call (default: chosen for the model)")
    create.add_argument("--max-rows", type=int, help="score the first N rows only")
    create.add_argument("--workers", type=int, help="model actors, each loading the model once (default 1)")
    create.add_argument("--gpu", choices=("auto", "on", "off"), help="auto: a GPU per actor where the cluster has them")
    create.add_argument("--priority", type=int, default=0, help="-100..100, higher starts first")
    create.add_argument("--idempotency-key", help="repeating the key returns the same job")
    create.add_argument("--no-start", action="store_true", help="create only (start later)")
    create.add_argument("--watch", action="store_true", help="then follow it to the end (exit 1 unless it succeeds)")
    create.add_argument("--interval", type=float, default=1.0)
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=cmd_create)
    listing = jobs.add_parser("list", help="batch jobs, newest first")
    listing.add_argument("--state", action="append", default=[], help="repeat for several")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    for name, handler, text in (
        ("show", cmd_show, "one job as JSON (its summary and evaluation once it is done)"),
        ("watch", cmd_watch, "a progress bar until it ends (exit 1 unless it succeeds)"),
        ("download", cmd_download, "the job's output, one Parquet file"),
        ("cancel", cmd_cancel, "cancel (a running job's Ray job is stopped)"),
    ):
        command = jobs.add_parser(name, help=text)
        command.add_argument("job_id")
        if name == "watch":
            command.add_argument("--interval", type=float, default=1.0)
        if name == "download":
            command.add_argument("-o", "--output", help="the file to write (default batch-ID.parquet)")
        command.set_defaults(run=handler)
