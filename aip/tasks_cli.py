"""``aip tasks submit|list|show|watch|cancel|logs|rerun``: training tasks through the platform's REST API.

``aip tasks submit --entry pkg.module:function --working-dir .`` submits the user's own code: the
folder is zipped (``aiplatform.code_archives``), uploaded once by its digest, and the task runs
the ``user-code`` template with ``--param`` values as the function's config."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from aip.api_client import PlatformAPI
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
BAR_WIDTH = 30
EXIT_TASK_FAILED = 1
SHOWN_METRICS = ("train_loss", "val_loss", "val_accuracy", "samples_per_second")


def parse_param(item: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is read as JSON when it parses (``3``, ``[16,32]``, ``true``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise InvalidArgument(f"--param {item!r} must look like KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def progress_line(task: dict[str, Any]) -> str:
    """``[#########.....] epoch 2/3  train_loss=0.1234 val_accuracy=0.9812  RUNNING``"""
    progress = task.get("progress") or {}
    epoch, epochs = progress.get("epoch") or 0, progress.get("epochs") or 0
    filled = int(BAR_WIDTH * epoch / epochs) if epochs else 0
    metrics = progress.get("metrics") or {}
    shown = " ".join(
        f"{k}={metrics[k]:.4f}" if k != "samples_per_second" else f"samples/s={metrics[k]:.0f}"
        for k in SHOWN_METRICS
        if isinstance(metrics.get(k), (int, float))
    )
    where = f"epoch {epoch}/{epochs}" if epochs else "waiting for the first epoch"
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {where}  {shown}  {task['state']}".rstrip()


def describe_outcome(task: dict[str, Any]) -> str:
    if task["state"] == "SUCCEEDED" and task.get("result"):
        result = task["result"]
        accuracy = result.get("test_accuracy")
        tail = f", test accuracy {accuracy:.4f}" if isinstance(accuracy, (int, float)) else ""
        return f"task {task['id']} SUCCEEDED: model {result['model']} version {result['version']}{tail}"
    reason = f" ({task['error_reason']})" if task.get("error_reason") else ""
    error = f": {task['error']}" if task.get("error") else ""
    return f"task {task['id']} {task['state']}{reason}{error}"


def watch(api: PlatformAPI, task_id: str, interval_s: float, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Redraw the progress line until the task finishes; returns the finished task."""
    interactive = out.isatty()
    last = ""
    while True:
        task = api.get(f"/v1/tasks/{task_id}")
        line = progress_line(task)
        if line != last:
            out.write(f"\r\x1b[2K{line}" if interactive else f"{line}\n")
            out.flush()
            last = line
        if task["state"] in FINISHED:
            if interactive:
                out.write("\n")
            return task
        time.sleep(interval_s)


USER_CODE_TEMPLATE = "user-code"
USER_CODE_OPTIONS = ("dataset", "workers", "gpu", "max_rows", "max_failures")


def user_code_params(api: PlatformAPI, args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Upload the working directory (once: the same code has the same digest) and name it."""
    from aiplatform.code_archives import pack_directory  # storage's imports: only for this command

    archive = api.post(
        "/v1/code", content=pack_directory(args.working_dir), headers={"Content-Type": "application/zip"}, timeout_s=300
    )
    print(
        f"code {archive['digest']} ({archive['files']} files, {archive['bytes']} bytes) from {args.working_dir}",
        file=sys.stderr,
    )
    options = {name: getattr(args, name) for name in USER_CODE_OPTIONS if getattr(args, name) is not None}
    return {"entry": args.entry, "code": archive["digest"], "config": config, **options}


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    api = PlatformAPI(settings)
    if bool(args.entry) == bool(args.template):
        raise InvalidArgument("give a template (e.g. cnn-classification) or --entry package.module:function")
    params: dict[str, Any] = {}
    if args.params_json:
        try:
            params.update(json.loads(args.params_json))
        except ValueError as exc:
            raise InvalidArgument(f"--params-json is not valid JSON: {exc}") from exc
    params.update(parse_param(item) for item in args.param)
    template = args.template
    if args.entry:
        template, params = USER_CODE_TEMPLATE, user_code_params(api, args, params)
    body: dict[str, Any] = {
        "template": template,
        "params": params,
        "priority": args.priority,
        "start": not args.no_start,
    }
    for field in ("model_name", "max_retries", "idempotency_key"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    task = api.post("/v1/tasks", json=body)
    if args.json and not args.watch:
        print(json.dumps(task))
        return 0
    print(f"task {task['id']} {task['state']} ({task['template']}, priority {task['priority']})")
    if not args.watch:
        return 0
    finished = watch(api, task["id"], args.interval)
    print(json.dumps(finished) if args.json else describe_outcome(finished))
    return 0 if finished["state"] == "SUCCEEDED" else EXIT_TASK_FAILED


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    query: dict[str, Any] = {"limit": args.limit, "state": args.state}
    if args.template:
        query["template"] = args.template
    data = PlatformAPI(settings).get("/v1/tasks", params=query)
    if args.json:
        print(json.dumps(data))
        return 0
    counts = data["counts"]
    print(f"waiting {counts['waiting']}, running {counts['running']}, finished {counts['finished']}")
    for task in data["tasks"]:
        progress = task.get("progress") or {}
        epochs = f"{progress.get('epoch')}/{progress.get('epochs')}" if progress.get("epochs") else "-"
        result = f"{task['result']['model']} v{task['result']['version']}" if task.get("result") else ""
        print(
            f"{task['id']}  {task['state']:<9}  {task['template']:<22} prio {task['priority']:>4}  "
            f"epoch {epochs:<7} by {task.get('created_by') or 'unknown':<12} {result}"
        )
        if task.get("waiting"):
            print(f"    waiting: {task['waiting']}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(PlatformAPI(settings).get(f"/v1/tasks/{args.task_id}"), indent=2))
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    finished = watch(PlatformAPI(settings), args.task_id, args.interval)
    print(describe_outcome(finished))
    return 0 if finished["state"] == "SUCCEEDED" else EXIT_TASK_FAILED


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    task = PlatformAPI(settings).post(f"/v1/tasks/{args.task_id}/cancel")
    state = "CANCELLING" if task["state"] == "RUNNING" else task["state"]
    print(f"task {task['id']} {state}")
    return 0


def cmd_rerun(args: argparse.Namespace, settings: Settings) -> int:
    api = PlatformAPI(settings)
    task = api.post(f"/v1/tasks/{args.task_id}/rerun", json={"start": not args.no_start})
    print(
        f"task {task['id']} {task['state']} (a rerun of {args.task_id}: {task['template']}, same parameters"
        + (f", code {task['params']['code']}" if task["params"].get("code") else "")
        + ")"
    )
    if not args.watch:
        return 0
    finished = watch(api, task["id"], args.interval)
    print(describe_outcome(finished))
    return 0 if finished["state"] == "SUCCEEDED" else EXIT_TASK_FAILED


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    data = PlatformAPI(settings).get(f"/v1/tasks/{args.task_id}/logs", params={"tail": args.tail})
    print(data["logs"])
    if data.get("source") == "storage" and data.get("ray_job_known") is False:
        print(
            "(Ray no longer has this task's job: this is the copy the platform kept in its storage)",
            file=sys.stderr,
        )
    return 0


def add_tasks_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tasks = commands.add_parser("tasks", help="training tasks").add_subparsers(dest="tasks", required=True)
    submit = tasks.add_parser("submit", help="create a task from a template (or your own code) and queue it")
    submit.add_argument("template", nargs="?", help="e.g. cnn-classification (see GET /v1/templates)")
    submit.add_argument(
        "--entry",
        help="your own training function, package.module:function (the user-code "
        "template): --param values become its config",
    )
    submit.add_argument(
        "--working-dir",
        default=".",
        help="with --entry: the folder your code is in (zipped and uploaded; default: the current one)",
    )
    submit.add_argument("--dataset", help="with --entry: name@version or an image source (default mnist)")
    submit.add_argument("--workers", type=int, help="with --entry: Ray Train workers")
    submit.add_argument("--gpu", choices=("auto", "on", "off"), help="with --entry")
    submit.add_argument("--max-rows", type=int, help="with --entry: first N rows of each split of a source")
    submit.add_argument("--max-failures", type=int, help="with --entry: worker-group restarts before failing")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template parameter; VALUE as JSON when it parses (epochs=3, conv_channels=[16,32])",
    )
    submit.add_argument("--params-json", help="all parameters as one JSON object")
    submit.add_argument("--priority", type=int, default=0, help="-100..100, higher starts first")
    submit.add_argument("--model-name")
    submit.add_argument("--max-retries", type=int)
    submit.add_argument("--idempotency-key", help="repeating the key returns the same task")
    submit.add_argument("--no-start", action="store_true", help="create only (start later from the UI or API)")
    submit.add_argument("--watch", action="store_true", help="then follow it to the end (exit 1 unless it succeeds)")
    submit.add_argument("--interval", type=float, default=1.0)
    submit.add_argument("--json", action="store_true")
    submit.set_defaults(run=cmd_submit)
    rerun = tasks.add_parser("rerun", help="run a task again: same template, parameters and code")
    rerun.add_argument("task_id")
    rerun.add_argument("--no-start", action="store_true")
    rerun.add_argument("--watch", action="store_true")
    rerun.add_argument("--interval", type=float, default=1.0)
    rerun.set_defaults(run=cmd_rerun)
    listing = tasks.add_parser("list", help="tasks, newest first")
    listing.add_argument("--state", action="append", default=[], help="repeat for several")
    listing.add_argument("--template")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    for name, handler, text in (
        ("show", cmd_show, "one task as JSON"),
        ("watch", cmd_watch, "progress bar until it ends (exit 1 unless it succeeds)"),
        ("cancel", cmd_cancel, "cancel (a running task's Ray job is stopped)"),
        ("logs", cmd_logs, "the task's job log"),
    ):
        command = tasks.add_parser(name, help=text)
        command.add_argument("task_id")
        if name == "watch":
            command.add_argument("--interval", type=float, default=1.0)
        if name == "logs":
            command.add_argument("--tail", type=int, default=5000)
        command.set_defaults(run=handler)
