"""``aip loops create|show|list|delete|trigger|runs|run``: retraining loops through the REST API.

    aip loops create penguins --on-alert quality-low --schedule "0 3 * * *" --margin 0.01 \\
        --canary-weight 10 --watch-s 600 --max-labeled 5000 --holdout 0.3 --cooldown-s 3600
    aip loops trigger penguins          # a run by hand (or why none started)
    aip loops runs penguins             # its runs, newest first
    aip loops run loop-1a2b3c4d5e6f     # one run's steps with their links
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from urllib.parse import quote

from aip.api_client import PlatformAPI
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings

EXIT_SKIPPED = 3
"""``aip loops trigger`` when the trigger started nothing (a run is open, the cool-down)."""


def policy_body(args: argparse.Namespace) -> dict[str, Any]:
    """The policy the flags describe (``--json`` takes a whole policy instead)."""
    if args.json_policy:
        try:
            body = json.loads(args.json_policy)
        except ValueError as exc:
            raise InvalidArgument(f"--policy is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("--policy must be a JSON object")
        return {**body, "model": args.model}
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--param {item!r} must look like KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    body: dict[str, Any] = {
        "model": args.model,
        "enabled": not args.disabled,
        "schedule": args.schedule,
        "on_alerts": args.on_alert,
        "on_new_data": args.on_new_data,
        "cooldown_s": args.cooldown_s,
        "data": {"max_labeled": args.max_labeled, "holdout_fraction": args.holdout, "seed": args.seed},
        "train": {"params": params},
        "gate": {"margin": args.margin},
        "canary": {"weight": args.canary_weight, "watch_s": args.watch_s},
    }
    if args.min_labeled is not None:
        body["data"]["min_labeled"] = args.min_labeled
    if args.sweep:
        try:
            body["train"]["sweep"] = json.loads(args.sweep)
        except ValueError as exc:
            raise InvalidArgument(f"--sweep is not JSON: {exc}") from None
    return body


def describe_policy(policy: dict[str, Any]) -> list[str]:
    triggers = []
    if policy.get("schedule"):
        triggers.append(f"schedule {policy['schedule']!r} (UTC)")
    if policy.get("on_alerts"):
        triggers.append(f"alerts {', '.join(policy['on_alerts'])}")
    if policy.get("on_new_data"):
        triggers.append("a new version of its dataset")
    triggers.append("by hand")
    return [
        f"{policy['model']}: {'enabled' if policy['enabled'] else 'disabled'}; cool-down {policy['cooldown_s']:g} s",
        f"  triggers: {'; '.join(triggers)}",
        f"  data: up to {policy['data']['max_labeled']} labeled predictions, "
        f"{policy['data']['holdout_fraction']:.0%} held out (seed {policy['data']['seed']})",
        f"  train: production's template and parameters{' with ' + json.dumps(policy['train']['params']) if policy['train']['params'] else ''}"
        + (f"; a sweep over {', '.join(policy['train']['sweep']['space'])}" if policy["train"].get("sweep") else ""),
        f"  gate: beat production by {policy['gate']['margin']} accuracy on its test split and the held-out slice",
        f"  canary: {policy['canary']['weight']:g}% for {policy['canary']['watch_s']:g} s; "
        f"rolled back on {', '.join(policy['canary']['alerts'])}",
    ]


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "-"


def describe_step(step: dict[str, Any]) -> str:
    """A step's line: when, outcome and its links."""
    shown = {k: v for k, v in step.items() if k not in ("step", "at", "outcome", "params", "holdout_path")}
    links = " ".join(f"{k}={_short(v)}" for k, v in shown.items() if v not in (None, "", {}, []))
    return f"  {_when(step['at'])}  {step['step']:<9} {step['outcome']:<14} {links}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 120 else text[:117] + "..."


def describe_run(run: dict[str, Any]) -> list[str]:
    lines = [f"{run['id']} {run['model']}: {run['state']} (started {_when(run['created_at'])})"]
    lines += [describe_step(step) for step in run["steps"]]
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    return lines


def _model_path(model: str, *rest: str) -> str:
    return "/".join(["/v1/loops", quote(model, safe=""), *rest])


def cmd_create(args: argparse.Namespace, settings: Settings) -> None:
    policy = PlatformAPI(settings).post("/v1/loops", json=policy_body(args))
    print("\n".join(describe_policy(policy)))


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    policies = PlatformAPI(settings).get("/v1/loops")["policies"]
    if args.json:
        print(json.dumps(policies, indent=2))
    elif not policies:
        print("no loop policies")
    for policy in policies if not args.json else []:
        print("\n".join(describe_policy(policy)))


def cmd_show(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    policy = api.get(_model_path(args.model))
    runs = api.get(_model_path(args.model, "runs"), params={"limit": 5})["runs"]
    skipped = api.get(_model_path(args.model, "skipped"), params={"limit": 5})["skipped"]
    if args.json:
        print(json.dumps({"policy": policy, "runs": runs, "skipped": skipped}, indent=2))
        return
    print("\n".join(describe_policy(policy)))
    for run in runs:
        print("\n".join(describe_run(run)))
    for skip in skipped:
        print(f"  skipped {_when(skip['at'])} {skip['trigger'].get('kind')}: {skip['reason']}")


def cmd_delete(args: argparse.Namespace, settings: Settings) -> None:
    PlatformAPI(settings).request("DELETE", _model_path(args.model))
    print(f"loop policy of {args.model} deleted")


def cmd_trigger(args: argparse.Namespace, settings: Settings) -> int:
    outcome = PlatformAPI(settings).post(_model_path(args.model, "trigger"), json={"detail": args.detail})
    if args.json:
        print(json.dumps(outcome, indent=2))
    if outcome.get("run"):
        if not args.json:
            print(f"started {outcome['run']['id']}")
        return 0
    if not args.json:
        print(f"started nothing: {outcome['skipped']['reason']}")
    return EXIT_SKIPPED


def cmd_runs(args: argparse.Namespace, settings: Settings) -> None:
    runs = PlatformAPI(settings).get(_model_path(args.model, "runs"), params={"limit": args.limit})["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return
    if not runs:
        print(f"no runs of {args.model}")
    for run in runs:
        last = run["steps"][-1]
        print(
            f"{run['id']}  {_when(run['created_at'])}  {run['trigger'].get('kind'):<8} {run['state']:<11} {last['step']}"
        )


def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    run = api.get(f"/v1/loops/runs/{quote(args.run_id, safe='')}")
    if args.json:
        print(json.dumps(run, indent=2))
        return
    print("\n".join(describe_run(run)))
    chain = api.get(f"/v1/loops/runs/{quote(args.run_id, safe='')}/lineage")["chain"]
    print("  lineage: " + " -> ".join(_link(link) for link in chain))


def _link(link: dict[str, Any]) -> str:
    kind = link["kind"]
    if kind == "alert":
        return f"alert {link.get('alert_id')} ({link.get('detail')})"
    if kind == "dataset":
        return f"dataset {link['ref']} (+{link.get('labeled')} labeled)"
    if kind == "task":
        return f"task {link['id']}"
    if kind == "version":
        return f"{link['model']} v{link['version']}"
    return f"{kind} {link.get('outcome') or link.get('detail') or ''}".strip()


def add_loops_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loops = commands.add_parser("loops", help="retraining loops: policies and their runs").add_subparsers(
        dest="loops", required=True
    )
    create = loops.add_parser("create", help="create or replace MODEL's retraining policy")
    create.add_argument("model")
    create.add_argument("--schedule", help='cron, five fields, UTC, e.g. "0 3 * * *"')
    create.add_argument("--on-alert", action="append", default=[], metavar="RULE", help="an alert rule, or 'any'")
    create.add_argument("--on-new-data", action="store_true", help="a new version of its dataset starts a run")
    create.add_argument("--cooldown-s", type=float, default=3600.0)
    create.add_argument("--max-labeled", type=int, default=10_000)
    create.add_argument("--min-labeled", type=int)
    create.add_argument("--holdout", type=float, default=0.3, help="share of the fresh rows held out for the gate")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a training override")
    create.add_argument(
        "--sweep",
        help='train by a sweep around production\'s parameters, JSON: {"space": {"max_depth": '
        '{"type": "int", "low": 2, "high": 8}}, "trials": 8}',
    )
    create.add_argument("--margin", type=float, default=0.0, help="accuracy the candidate must gain")
    create.add_argument("--canary-weight", type=float, default=10.0, help="percent, 0 < w < 100")
    create.add_argument("--watch-s", type=float, default=300.0, help="seconds of clean canary before promotion")
    create.add_argument("--disabled", action="store_true")
    create.add_argument("--policy", dest="json_policy", help="the whole policy as JSON (the flags are then ignored)")
    create.set_defaults(run=cmd_create)

    listing = loops.add_parser("list", help="every policy")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)

    show = loops.add_parser("show", help="MODEL's policy, its latest runs and skipped triggers")
    show.add_argument("model")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_show)

    delete = loops.add_parser("delete", help="stop retraining MODEL")
    delete.add_argument("model")
    delete.set_defaults(run=cmd_delete)

    trigger = loops.add_parser("trigger", help=f"a run by hand (exit {EXIT_SKIPPED} when none started, and why)")
    trigger.add_argument("model")
    trigger.add_argument("--detail", help="why, for the record")
    trigger.add_argument("--json", action="store_true")
    trigger.set_defaults(run=cmd_trigger)

    runs = loops.add_parser("runs", help="MODEL's runs, newest first")
    runs.add_argument("model")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(run=cmd_runs)

    run = loops.add_parser("run", help="one run's steps, their links and its lineage")
    run.add_argument("run_id")
    run.add_argument("--json", action="store_true")
    run.set_defaults(run=cmd_run)
