"""``aip quotas``: a project's quota and weight (``show`` for its members, ``set`` for platform admins)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from aip.api_client import PlatformAPI
from aiplatform.settings import Settings

FIELDS = ("cpus", "gpus", "queued", "replicas", "weight")


def _path(project: str) -> str:
    return f"/v1/projects/{quote(project, safe='')}/quota"


def _limit(value: Any) -> str:
    return "unlimited" if value is None else f"{value:g}"


def describe(quota: dict[str, Any]) -> str:
    used = quota["in_use"]
    return (
        f"{quota['project']}: weight {quota['weight']:g}\n"
        f"  cpus      {used['cpus']:g} in use of {_limit(quota['cpus'])}\n"
        f"  gpus      {used['gpus']:g} in use of {_limit(quota['gpus'])}\n"
        f"  queued    {used['queued']:g} of {_limit(quota['queued'])}\n"
        f"  replicas  {_replicas(quota)}"
    )


def _replicas(quota: dict[str, Any]) -> str:
    if quota["replicas"] is None:
        return "unlimited (the shared model servers)"
    running = quota["in_use"].get("replicas")
    return f"{running or 0:g} running of {quota['replicas']:g} (model servers of its own)"


def cmd_quotas_show(args: argparse.Namespace, settings: Settings) -> None:
    quota = PlatformAPI(settings).get(_path(args.project))
    print(json.dumps(quota) if args.json else describe(quota))


def cmd_quotas_set(args: argparse.Namespace, settings: Settings) -> None:
    """Change the fields given, keep the others (``unlimited`` lifts a limit)."""
    api = PlatformAPI(settings)
    current = api.get(_path(args.project))
    body = {name: current[name] for name in FIELDS}
    for name in FIELDS:
        given = getattr(args, name)
        if given is not None:
            body[name] = (
                None if given == "unlimited" else float(given) if name in ("cpus", "gpus", "weight") else int(given)
            )
    quota = api.request("PUT", _path(args.project), json=body)
    print(json.dumps(quota) if args.json else describe(quota))


def _amount(text: str) -> str:
    if text == "unlimited":
        return text
    try:
        if float(text) < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'unlimited', got {text!r}") from None
    return text


def _weight(text: str) -> str:
    try:
        if not float(text) > 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    return text


def _count(text: str) -> str:
    if text == "unlimited" or (text.isdigit() and text.isascii()):
        return text
    raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or 'unlimited', got {text!r}")


def add_quotas_commands(commands: Any) -> None:
    quotas = commands.add_parser("quotas", help="projects' quotas and fair-share weights").add_subparsers(
        dest="quotas", required=True
    )
    show = quotas.add_parser("show", help="a project's quota, weight and what it uses now")
    show.add_argument("project")
    show.set_defaults(run=cmd_quotas_show)
    set_ = quotas.add_parser("set", help="change a project's quota (platform admins); fields not given stay")
    set_.add_argument("project")
    set_.add_argument("--cpus", type=_amount, help="CPUs its running tasks may hold ('unlimited' lifts it)")
    set_.add_argument("--gpus", type=_amount, help="GPUs its running tasks may hold")
    set_.add_argument("--queued", type=_count, help="tasks it may have queued at once")
    set_.add_argument("--replicas", type=_count, help="serving replicas: model servers of its own, at most this many")
    set_.add_argument("--weight", type=_weight, help="its share of a contended cluster (default 1)")
    set_.set_defaults(run=cmd_quotas_set)
    for command in (show, set_):
        command.add_argument("--json", action="store_true")
