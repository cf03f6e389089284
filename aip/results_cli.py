"""``aip results``: past predictions from the result store, a page at a time, and one in full;
their true labels (``label``) and the live quality those labels measure (``quality``)."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
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
        truth = f"  true: {record['feedback']['label']}" if record.get("feedback") else ""
        print(
            f"{record['id']:<34} {_when(record['created_at'])}  {record['model']} v{record['version']:<4} "
            f"{answer}  {record['latency_ms']:.1f} ms{truth}"
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
    if record.get("feedback"):
        truth = record["feedback"]
        print(f"  true label: {truth['label']} (given by {truth['labeled_by']} at {_when(truth['labeled_at'])})")
    for label, probability in sorted(output.get("probabilities", {}).items(), key=lambda kv: -kv[1]):
        print(f"    {label:<24} {probability:.4f}")
    for name, value in sorted(record.get("features", {}).items()):
        print(f"  drift feature {name}: {value:.4g}")
    print(
        f"  input sha256 {record['input_digest']}"
        + ("; input kept (GET /v1/results/{id}/input)" if record.get("input_uri") else "")
    )


def cmd_results_label(args: argparse.Namespace, settings: Settings) -> None:
    """One label (``ID LABEL``) or a file of many (a CSV with a header, or a JSON list), all
    stored or none."""
    api = PlatformAPI(settings)
    if args.file:
        if args.id or args.label or args.client_request_id or args.index is not None:
            raise InvalidArgument("Give either ID LABEL or --file, not both")
        path = Path(args.file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"Cannot read {path}: {exc.strerror}") from None
        kind = "application/json" if path.suffix.lower() == ".json" else "text/csv"
        answer = api.post("/v1/results/feedback", content=data, headers={"Content-Type": kind})
        changes = answer["results"]
    elif args.id and args.label:
        if args.client_request_id or args.index is not None:
            row: dict[str, Any] = {"client_request_id" if args.client_request_id else "request_id": args.id}
            if args.index is not None:
                row["index"] = args.index
            changes = api.post("/v1/results/feedback", json=[{**row, "label": args.label}])["results"]
        else:
            changes = [api.post(f"/v1/results/{quote(args.id, safe='')}/feedback", json={"label": args.label})]
    else:
        raise InvalidArgument("Give ID LABEL (one result) or --file labels.csv (many)")
    if args.json:
        print(json.dumps(changes))
        return
    for change in changes:
        was = f" (was {change['previous_label']})" if change["previous_label"] and change["changed"] else ""
        verdict = "right" if change["correct"] else f"wrong: predicted {change['predicted']}"
        print(f"{change['id']:<34} {change['model']} v{change['version']:<4} {change['label']}{was}  {verdict}")
    print(f"labeled {len(changes)} ({sum(c['changed'] for c in changes)} changed)")


def quality_lines(figures: dict[str, Any]) -> list[str]:
    """Per version: accuracy, macro-F1 and how many labeled predictions they are over."""
    if not figures["versions"]:
        return ["no labeled predictions in the window"]
    return [
        f"{q['model']} v{q['version']:<4} accuracy {q['accuracy'] * 100:5.1f}%  macro-F1 {q['macro_f1']:.3f}  "
        f"over {q['labeled']} labeled ({q['correct']} right)"
        for q in figures["versions"]
    ]


def cmd_results_quality(args: argparse.Namespace, settings: Settings) -> None:
    params = {key: value for key, value in (("model", args.model), ("version", args.version)) if value is not None}
    since = parse_since(args.since)
    if since is not None:
        params["since"] = since
    figures = PlatformAPI(settings).get("/v1/results/quality", params=params)
    print(json.dumps(figures) if args.json else "\n".join(quality_lines(figures)))


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
    label = results.add_parser(
        "label",
        help="give past predictions their true label: one (ID LABEL) or many (--file: a CSV with a header "
        "label,id or label,client_request_id..., or a JSON list); all stored or none",
    )
    label.add_argument("id", nargs="?", help="a result id (a v2 answer's parameters.request_id)")
    label.add_argument("label", nargs="?", help="one of the model version's classes")
    label.add_argument("--file", help="a .csv (or .json) of labels")
    label.add_argument("--client-request-id", action="store_true", help="ID is the id the client gave its v2 request")
    label.add_argument("--index", type=int, help="which input of a request with many")
    label.add_argument("--json", action="store_true")
    label.set_defaults(run=cmd_results_label)
    quality = results.add_parser(
        "quality", help="accuracy and macro-F1 of labeled predictions per model version (AIP_QUALITY_WINDOW_S)"
    )
    quality.add_argument("--model")
    quality.add_argument("--version", type=int)
    quality.add_argument("--since", help="an age (30m, 2h, 7d) or an ISO time (default: the quality window)")
    quality.add_argument("--json", action="store_true")
    quality.set_defaults(run=cmd_results_quality)
