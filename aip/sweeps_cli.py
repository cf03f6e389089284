"""``aip sweeps create|list|show|watch|stop|resume|extend``: hyperparameter sweeps on Ray Tune
through the platform's REST API.

    aip sweeps create cnn-classification --param epochs=4 --space learning_rate=loguniform:1e-4:1e-2 \\
        --space hidden_units=choice:32|64|128 --metric val_accuracy --trials 12 --concurrent 2 --watch

A dimension is ``NAME=uniform:LOW:HIGH``, ``loguniform:LOW:HIGH``, ``int:LOW:HIGH`` (inclusive) or
``choice:V1|V2|...`` (each value read as JSON when it parses: ``choice:[16]|[16,32]``). With
``--entry`` the trials run your own function (the working directory is uploaded as for
``aip tasks submit``) and the searched names are keys of its config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from aip.api_client import PlatformAPI
from aip.tasks_cli import FINISHED, USER_CODE_TEMPLATE, parse_param, user_code_params
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings

EXIT_SWEEP_FAILED = 1
RANGE_TYPES = ("uniform", "loguniform", "int")


def parse_dimension(item: str) -> tuple[str, dict[str, Any]]:
    """``NAME=TYPE:ARGS`` as the API's dimension."""
    name, sep, spec = item.partition("=")
    kind, _, rest = spec.partition(":")
    if not sep or not name or not rest:
        raise InvalidArgument(
            f"--space {item!r} must look like NAME=loguniform:1e-4:1e-2, NAME=int:1:4 or NAME=choice:a|b|c"
        )
    if kind == "choice":
        return name, {"type": "choice", "values": [parse_param(f"v={v}")[1] for v in rest.split("|")]}
    if kind not in RANGE_TYPES:
        raise InvalidArgument(f"--space {item!r}: unknown type {kind!r}; use uniform, loguniform, int or choice")
    low, colon, high = rest.partition(":")
    if not colon:
        raise InvalidArgument(f"--space {item!r}: a {kind} range needs LOW:HIGH")
    try:
        return name, {"type": kind, "low": float(low), "high": float(high)}
    except ValueError:
        raise InvalidArgument(f"--space {item!r}: LOW and HIGH must be numbers") from None


def trials_table(sweep: dict[str, Any]) -> list[str]:
    """One line per trial: id, state, epoch, the metric, the values it tried, why it ended."""
    metric = sweep["params"]["metric"]
    lines = [f"{'trial':<14} {'state':<9} {'epoch':>5} {metric:>14}  values"]
    for trial in sweep["trials"]:
        value = trial["metrics"].get(metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        values = " ".join(f"{k}={_short(v)}" for k, v in trial["params"].items())
        lines.append(f"{trial['trial_id']:<14} {trial['state']:<9} {trial['epoch'] or '-':>5} {shown:>14}  {values}")
        if trial.get("error") and trial["state"] in ("FAILED", "STOPPED"):
            lines.append(f"{'':<14} {trial['error']}")
    return lines


def summary_line(sweep: dict[str, Any]) -> str:
    params, counts = sweep["params"], sweep["trial_counts"]
    done = sum(counts.get(s, 0) for s in ("FINISHED", "STOPPED", "FAILED"))
    best = sweep.get("best_trial")
    best_text = f"; best {best['trial_id']} {params['metric']}={best['metrics'][params['metric']]:.4f}" if best else ""
    return (
        f"sweep {sweep['id']} {sweep['state']}: {done}/{params['trials']} trials done "
        f"({counts.get('RUNNING', 0)} running, {counts.get('STOPPED', 0)} stopped early, "
        f"{counts.get('FAILED', 0)} failed){best_text}"
    )


def watch(api: PlatformAPI, sweep_id: str, interval_s: float, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Print the progress whenever it changes until the sweep ends; returns the ended sweep."""
    last = ""
    while True:
        sweep = api.get(f"/v1/sweeps/{sweep_id}")
        view = "\n".join([summary_line(sweep), *trials_table(sweep)])
        if view != last:
            out.write(("\x1b[2J\x1b[H" if out.isatty() else "") + view + "\n")
            out.flush()
            last = view
        if sweep["state"] in FINISHED:
            return sweep
        time.sleep(interval_s)


def outcome_line(sweep: dict[str, Any]) -> str:
    result = sweep.get("result") or {}
    if sweep["state"] == "SUCCEEDED" and result:
        return (
            f"sweep {sweep['id']} SUCCEEDED: best trial {result['best_trial']} "
            f"({sweep['params']['metric']} {result[sweep['params']['metric']]:.4f}) registered as model "
            f"{result['model']} version {result['version']}"
        )
    error = f": {sweep['error']}" if sweep.get("error") else ""
    return f"sweep {sweep['id']} {sweep['state']}{error}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _finish(api: PlatformAPI, sweep: dict[str, Any], args: argparse.Namespace) -> int:
    if not getattr(args, "watch", False):
        print(json.dumps(sweep) if getattr(args, "json", False) else summary_line(sweep))
        return 0
    ended = watch(api, sweep["id"], args.interval)
    print(outcome_line(ended))
    return 0 if ended["state"] == "SUCCEEDED" else EXIT_SWEEP_FAILED


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    api = PlatformAPI(settings)
    if bool(args.entry) == bool(args.template):
        raise InvalidArgument("give a template (e.g. cnn-classification) or --entry package.module:function")
    fixed = dict(parse_param(item) for item in args.param)
    template = args.template
    if args.entry:
        template, fixed = USER_CODE_TEMPLATE, user_code_params(api, args, fixed)
    body: dict[str, Any] = {
        "template": template,
        "params": fixed,
        "space": dict(parse_dimension(item) for item in args.space),
        "metric": args.metric,
        "mode": args.mode,
        "trials": args.trials,
        "max_concurrent_trials": args.concurrent,
        "scheduler": {"type": args.scheduler, "grace_period": args.grace_period},
        "search": args.search,
        "seed": args.seed,
        "max_failures": args.max_trial_failures,
        "deploy": args.deploy,
        "priority": args.priority,
    }
    if args.model_name:
        body["model_name"] = args.model_name
    sweep = api.post("/v1/sweeps", json=body)
    print(
        f"sweep {sweep['id']} {sweep['state']} ({template}, {args.trials} trials, {args.concurrent} at once)",
        file=sys.stderr if args.json else sys.stdout,
    )
    return _finish(api, sweep, args)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    data = PlatformAPI(settings).get("/v1/sweeps", params={"limit": args.limit})
    if args.json:
        print(json.dumps(data))
        return 0
    for sweep in data["sweeps"]:
        params, progress = sweep["params"], sweep.get("progress") or {}
        best = (progress.get("metrics") or {}).get(f"best_{params['metric']}")
        best_text = f"best {params['metric']} {best:.4f}" if isinstance(best, (int, float)) else ""
        print(
            f"{sweep['id']}  {sweep['state']:<9}  {params['template']:<22} "
            f"{progress.get('epoch') or 0}/{params['trials']} trials  by {sweep.get('created_by') or 'unknown':<12} "
            f"{best_text}"
        )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    sweep = PlatformAPI(settings).get(f"/v1/sweeps/{args.sweep_id}")
    if args.json:
        print(json.dumps(sweep))
        return 0
    print("\n".join([summary_line(sweep), *trials_table(sweep)]))
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    ended = watch(PlatformAPI(settings), args.sweep_id, args.interval)
    print(outcome_line(ended))
    return 0 if ended["state"] == "SUCCEEDED" else EXIT_SWEEP_FAILED


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    sweep = PlatformAPI(settings).post(f"/v1/sweeps/{args.sweep_id}/stop")
    print(
        f"sweep {sweep['id']} {'STOPPING' if sweep['state'] == 'RUNNING' else sweep['state']}: "
        "resume it with `aip sweeps resume`"
    )
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    api = PlatformAPI(settings)
    return _finish(api, api.post(f"/v1/sweeps/{args.sweep_id}/resume"), args)


def cmd_extend(args: argparse.Namespace, settings: Settings) -> int:
    api = PlatformAPI(settings)
    return _finish(api, api.post(f"/v1/sweeps/{args.sweep_id}/extend", json={"trials": args.trials}), args)


def add_sweeps_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweeps = commands.add_parser("sweeps", help="hyperparameter sweeps on Ray Tune").add_subparsers(
        dest="sweeps", required=True
    )
    create = sweeps.add_parser("create", help="a sweep over a template (or your own code), queued at once")
    create.add_argument("template", nargs="?", help="the trials' template, e.g. cnn-classification")
    create.add_argument("--entry", help="your own training function, package.module:function")
    create.add_argument("--working-dir", default=".", help="with --entry: the folder your code is in")
    for name in ("dataset", "gpu"):
        create.add_argument(f"--{name}", help="with --entry")
    for name in ("workers", "max-rows", "max-failures"):
        create.add_argument(f"--{name}", type=int, help="with --entry")
    create.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter every trial shares (with --entry: a key of the function's config)",
    )
    create.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=TYPE:ARGS",
        help="a searched parameter: uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH, choice:A|B",
    )
    create.add_argument("--metric", default="val_accuracy")
    create.add_argument("--mode", choices=("max", "min"), default="max")
    create.add_argument("--trials", type=int, default=8)
    create.add_argument("--concurrent", type=int, default=2, help="trials at once")
    create.add_argument("--scheduler", choices=("asha", "none"), default="asha", help="early stopping")
    create.add_argument("--grace-period", type=int, default=1, help="ASHA's first rung, in epochs")
    create.add_argument("--search", choices=("random", "tpe"), default="random")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--max-trial-failures", type=int, default=0, help="retries of a failed trial")
    create.add_argument("--deploy", action="store_true", help="the best model through the deploy gate")
    create.add_argument("--model-name")
    create.add_argument("--priority", type=int, default=0)
    for command in (create,):
        command.add_argument("--watch", action="store_true", help="follow it to the end (exit 1 unless it succeeds)")
        command.add_argument("--interval", type=float, default=2.0)
        command.add_argument("--json", action="store_true")
    create.set_defaults(run=cmd_create)
    listing = sweeps.add_parser("list", help="sweeps, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    for name, handler, text in (
        ("show", cmd_show, "the sweep's progress and every trial"),
        ("watch", cmd_watch, "the progress until it ends (exit 1 unless it succeeds)"),
        ("stop", cmd_stop, "stop it: Tune saves its state, running trials are paused"),
        ("resume", cmd_resume, "go on from where it stopped"),
        ("extend", cmd_extend, "run more trials after it ended"),
    ):
        command = sweeps.add_parser(name, help=text)
        command.add_argument("sweep_id")
        if name == "extend":
            command.add_argument("--trials", type=int, required=True, help="trials to add")
        if name in ("show",):
            command.add_argument("--json", action="store_true")
        if name in ("watch", "resume", "extend"):
            command.add_argument("--interval", type=float, default=2.0)
        if name in ("resume", "extend"):
            command.add_argument("--watch", action="store_true")
        command.set_defaults(run=handler)
