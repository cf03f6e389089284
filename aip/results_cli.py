"""``aip results``: past predictions from the result store, a page at a time, and one in full."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aip.api_client import PlatformAPI
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings

SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``--since``: an age (``30m``, ``2h``, ``7d``) or an ISO 8601 time -> epoch seconds."""
    if text is None:
        return None
    unit = SINCE_UNITS.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return (time.time() if now is None else now) - int(text[:-1]) * unit
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"--since {text!r}: give an age such as 30m, 2h or 7d, or an ISO time such as 2026-12-03T10:00"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_results_list(args: argparse.Namespace, settings: Settings) -> None:
    params: dict[str, Any] = {"limit": args.limit}
    for key, value in (
        ("model", args.model),
        ("version", args.version),
        ("before", args.before),
        ("since", parse_since(args.since)),
    ):
        if value is not None:
            params[key] = value
    page = PlatformAPI(settings).get("/v1/results", params=params)
    if args.json:
        print(json.dumps(page))
        return
    if not page["results"]:
        print("no results")
    for record in page["results"]:
        output = record["output"]
        answer = str(output.get("label", "-"))
        if output.get("probability") is not None:
            answer += f" (p={output['probability']:.3f})"
        print(
            f"{record['id']:<34} {_when(record['created_at'])}  {record['model']} v{record['version']:<4} "
            f"{answer}  {record['latency_ms']:.1f} ms"
        )
    if page.get("next_cursor"):
        print(
            f"more: aip results list --before {page['next_cursor']}"
            + "".join(f" --{k} {params[k]}" for k in ("model", "version") if k in params)
        )


def cmd_results_show(args: argparse.Namespace, settings: Settings) -> None:
    record = PlatformAPI(settings).get(f"/v1/results/{quote(args.id, safe='')}")
    if args.json:
        print(json.dumps(record))
        return
    output = record["output"]
    print(
        f"result {record['id']}: {record['model']} v{record['version']} at {_when(record['created_at'])}, "
        f"{record['latency_ms']:.1f} ms"
    )
    if "label" in output:
        print(f"  answer: {output['label']} (p={output.get('probability', 0):.3f})")
    for label, probability in sorted(output.get("probabilities", {}).items(), key=lambda kv: -kv[1]):
        print(f"    {label:<24} {probability:.4f}")
    for name, value in sorted(record.get("features", {}).items()):
        print(f"  drift feature {name}: {value:.4g}")
    print(
        f"  input sha256 {record['input_digest']}"
        + ("; input kept (GET /v1/results/{id}/input)" if record.get("input_uri") else "")
    )


def add_results_commands(commands: Any) -> None:
    results = commands.add_parser("results", help="past predictions").add_subparsers(dest="results", required=True)
    listing = results.add_parser("list", help="predictions, newest first, a page at a time")
    listing.add_argument("--model")
    listing.add_argument("--version", type=int)
    listing.add_argument("--since", help="an age (30m, 2h, 7d) or an ISO time")
    listing.add_argument("--before", help="the cursor a previous page printed")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_results_list)
    show = results.add_parser("show", help="one prediction: every class's probability, drift features, input digest")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_results_show)
