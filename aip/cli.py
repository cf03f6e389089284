"""``aip``: the platform's command line. Errors print a message and exit non-zero."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from aip.access_cli import add_access_commands
from aip.api_client import PlatformAPI
from aip.batch_cli import add_batch_commands
from aip.login_cli import add_login_commands, config_path, read_login, with_login
from aip.loops_cli import add_loops_commands
from aip.monitoring_cli import add_monitoring_commands
from aip.projects_cli import add_projects_commands
from aip.quotas_cli import add_quotas_commands
from aip.results_cli import add_results_commands
from aip.sweeps_cli import add_sweeps_commands
from aip.tasks_cli import add_tasks_commands
from aiplatform.errors import AIPError, InvalidArgument
from aiplatform.settings import Settings

EXIT_REFUSED = 1
EXIT_ERROR = 2
COMPRESS_TIMEOUT_S = 1800.0
EVALUATION_KEY = "test_evaluation"
"""aiplatform.evaluation.EVALUATION_KEY, not imported: that module loads torch, seconds at each start."""
WARM_TIMEOUT_S = 150.0
"""Promote, rollback and canary wait while the servers load the version (a little longer than
Serve's own limit on a request, AIP_SERVE_REQUEST_TIMEOUT_S, which answers first)."""


def _model_path(name: str, *rest: str) -> str:
    return "/".join([f"/v1/models/{quote(name, safe='')}", *rest])


def cmd_up(args: argparse.Namespace, settings: Settings) -> None:
    from aip.local import up

    for what, url in up(settings, progress=lambda step: print(f"... {step}", flush=True)).items():
        print(f"{what}: {url}")
    if settings.api_auth == "off":
        print("API authentication is OFF (AIP_API_AUTH=off): anyone who can reach the port can use the platform")


def cmd_down(args: argparse.Namespace, settings: Settings) -> None:
    from aip.local import down

    print("platform stopped" if down(settings) else "no platform started by `aip up` was running")


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    names = [args.name] if args.name else [m["name"] for m in api.get("/v1/models")["models"]]
    rows = []
    for name in names:
        model = api.get(_model_path(name), params={"limit": 1000})
        versions = model["versions"]
        while model.get("next_before"):  # a model with more than one page of versions
            model = api.get(_model_path(name), params={"limit": 1000, "before": model["next_before"]})
            versions += model["versions"]
        aliases: dict[int, list[str]] = {}
        for alias, version in model["aliases"].items():
            aliases.setdefault(version, []).append(alias)
        for entry in versions:
            rows.append(
                {
                    "model": name,
                    "version": entry["version"],
                    "test_accuracy": entry["metrics"].get("test_accuracy"),
                    "aliases": sorted(aliases.get(entry["version"], [])),
                    "created_by": entry.get("created_by"),
                }
            )
    if args.json:
        print(json.dumps(rows))
        return
    if not rows:
        print("no models registered")
    for row in rows:
        accuracy = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        print(
            f"{row['model']:<32} v{row['version']:<5} acc {accuracy:<8} by {row['created_by'] or 'unknown':<12} "
            f"{','.join(row['aliases'])}"
        )


def _metric_text(value: Any) -> str:
    return (
        f"{value:.4f}"
        if isinstance(value, float)
        else json.dumps(value)
        if isinstance(value, (dict, list))
        else str(value)
    )


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """A version's test evaluation as text: per class, the confusion matrix, the worst mistakes."""
    width = max(8, *(len(name) for name in evaluation["labels"]))
    lines = [f"  {'class':<{width}} precision  recall     f1  support"]
    lines += [
        f"  {c['label']:<{width}} {c['precision']:9.4f} {c['recall']:7.4f} {c['f1']:6.4f} {c['support']:8d}"
        for c in evaluation["per_class"]
    ]
    lines.append(f"  confusion matrix (rows: true class, columns: predicted; {', '.join(evaluation['labels'])})")
    lines += ["    " + " ".join(f"{n:6d}" for n in row) for row in evaluation["confusion_matrix"]]
    if evaluation.get("worst"):
        lines.append(
            "  most confidently wrong: "
            + "; ".join(
                f"{w['id']} {w['label']} read as {w['predicted']} (p={w['probability']:.3f})"
                for w in evaluation["worst"][:5]
            )
        )
    return lines


def cmd_models_show(args: argparse.Namespace, settings: Settings) -> None:
    """NAME: its aliases, traffic and newest versions with their metrics; NAME@VERSION (or
    @ALIAS): that version's metrics, package and lineage."""
    api = PlatformAPI(settings)
    name, _, ref = args.model.partition("@")
    model = api.get(_model_path(name), params={"limit": args.limit})
    if not ref:
        if args.json:
            print(json.dumps(model))
            return
        print(f"{name}: aliases {model['aliases'] or '-'}; traffic {model['traffic'] or '-'}")
        for entry in model["versions"]:
            metrics = "  ".join(
                f"{k} {_metric_text(v)}" for k, v in sorted(entry["metrics"].items()) if isinstance(v, (int, float))
            )
            print(f"  v{entry['version']:<5} {entry['template']:<28} {entry['size'] / 1e6:7.2f} MB  {metrics}")
        if model.get("next_before"):
            print(f"  ... older versions: aip models show {name} --limit {args.limit * 10}")
        return
    if not ref.isdigit():
        if ref not in model["aliases"]:
            raise InvalidArgument(
                f"{name} has no version {ref!r} and no alias {ref!r} (aliases: {', '.join(model['aliases']) or 'none'})"
            )
        ref = str(model["aliases"][ref])
    version = api.get(_model_path(name, "versions", ref))
    lineage = api.get(_model_path(name, "versions", ref, "lineage"))["lineage"]
    if args.json:
        print(json.dumps({**version, "lineage_chain": lineage}))
        return
    print(f"{name} v{version['version']} ({version['template']}), aliases {', '.join(version['aliases']) or '-'}")
    print(f"  package {version['package_key']}  {version['size'] / 1e6:.2f} MB  sha256 {version['sha256'][:16]}")
    evaluation = version["metrics"].get(EVALUATION_KEY)
    for key, value in sorted(version["metrics"].items()):
        if key != EVALUATION_KEY:
            print(f"  {key}: {_metric_text(value)}")
    if evaluation:
        print("\n".join(evaluation_lines(evaluation)))
    for step in lineage:
        origin = ", ".join(f"{k} {_metric_text(v)}" for k, v in sorted(step.items()) if k != "version")
        print(f"  lineage v{step['version']}: {origin}")


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> None:
    body = {"version": args.version, "force": args.force, "tolerance": args.tolerance}
    print(PlatformAPI(settings).post(_model_path(args.name, "promote"), json=body, timeout_s=WARM_TIMEOUT_S)["message"])


def cmd_models_rollback(args: argparse.Namespace, settings: Settings) -> None:
    print(PlatformAPI(settings).post(_model_path(args.name, "rollback"), timeout_s=WARM_TIMEOUT_S)["message"])


def cmd_models_canary(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    if args.clear:
        print(api.request("DELETE", _model_path(args.name, "canary"))["message"])
        return
    if args.version is None:
        raise InvalidArgument("Give a VERSION for the canary, or --clear")
    body = {"version": args.version, "weight": args.weight}
    print(api.post(_model_path(args.name, "canary"), json=body, timeout_s=WARM_TIMEOUT_S)["message"])


def cmd_models_compress(args: argparse.Namespace, settings: Settings) -> int:
    from aiplatform.compression.compressor import CompressionReport
    from aiplatform.compression.methods import parse_method
    from aiplatform.registry.refs import parse_model_ref

    name, ref = parse_model_ref(args.model)
    parse_method(args.method)
    body: dict[str, Any] = {"method": args.method, "max_accuracy_drop": args.max_accuracy_drop}
    body["version" if ref.isdigit() else "alias"] = int(ref) if ref.isdigit() else ref
    if ref == "latest":
        del body["alias"]
    answer = PlatformAPI(settings).post(
        _model_path(name, "compress"), json=body, timeout_s=COMPRESS_TIMEOUT_S, answer_statuses=(409,)
    )
    report = answer["report"]
    print(json.dumps(report) if args.json else "\n".join(CompressionReport(**report).summary_lines()))
    return 0 if report["registered"] else EXIT_REFUSED


def cmd_models_import(args: argparse.Namespace, settings: Settings) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise InvalidArgument(f"{path} is not a readable file")
    form = {"labels": args.labels, "scores": args.scores}
    if args.kind:  # the platform checks it against its kinds (GET /v1/kinds)
        form["kind"] = args.kind
    if args.features and args.preprocessing:
        raise InvalidArgument("give --features or --preprocessing, not both")
    if args.features:
        form["preprocessing"] = json.dumps({"features": [f.strip() for f in args.features.split(",") if f.strip()]})
    elif args.preprocessing:
        form["preprocessing"] = args.preprocessing
    if args.evaluate_on:
        form["evaluate_on"] = args.evaluate_on
    version = PlatformAPI(settings).post(
        _model_path(args.name, "import"),
        data=form,
        timeout_s=COMPRESS_TIMEOUT_S,
        files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
    )
    if args.json:
        print(json.dumps(version))
        return
    inputs = version["lineage"]["imported"]
    print(
        f"imported {path.name} as {version['name']} v{version['version']} (sha256 {inputs['sha256'][:12]}, "
        f"opset {inputs['opset']})"
    )
    if "test_accuracy" in version["metrics"]:
        print(
            f"  on {version['lineage']['dataset']}'s test split: accuracy {version['metrics']['test_accuracy']:.4f}, "
            f"macro-F1 {version['metrics']['test_macro_f1']:.4f} ({version['metrics']['test_samples']} samples; "
            f"`aip models show {version['name']}@{version['version']}` says where it errs)"
        )


def cmd_predict(args: argparse.Namespace, settings: Settings) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise InvalidArgument(f"{path} is not a readable file")
    params: dict[str, Any] = {}
    if args.version is not None:
        params["version"] = args.version
    if args.alias:
        params["alias"] = args.alias
    body = PlatformAPI(settings).post(
        _model_path(args.model, "predict"),
        params=params,
        files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
    )
    if args.json:
        print(json.dumps(body))
        return
    if "predictions" in body:  # a CSV of table rows: one line per row, in the file's order
        print(f"{body['model']} v{body['version']}: {body['rows']} rows; request {body['request_id']}")
        for index, answer in enumerate(body["predictions"], start=1):
            print(f"  row {index}: {answer['label']} (p={answer['probability']:.3f})")
        return
    top = sorted(body["probabilities"].items(), key=lambda kv: -kv[1])[:3]
    print(
        f"{body['model']} v{body['version']}: {body['label']} (p={body['probability']:.3f}); "
        f"top: {', '.join(f'{k} {v:.3f}' for k, v in top)}; request {body['request_id']}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aip", description="End-to-end ML platform on Ray")
    parser.add_argument("--project", help="the project to act in (default: AIP_PROJECT, else the key's, else default)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("up", help="start the local platform (Ray head, Serve app, actors)").set_defaults(run=cmd_up)
    commands.add_parser("down", help="stop the local platform").set_defaults(run=cmd_down)

    models = commands.add_parser("models", help="registered models").add_subparsers(dest="models", required=True)
    listing = models.add_parser("list")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_models_list)
    show = models.add_parser(
        "show",
        help="a model's versions with their metrics, or NAME@VERSION (or "
        "NAME@ALIAS) in full: metrics, package, lineage",
    )
    show.add_argument("model", help="NAME, NAME@VERSION or NAME@ALIAS")
    show.add_argument("--limit", type=int, default=20, help="versions listed for NAME")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_models_show)
    promote = models.add_parser("promote", help="gate, warm and move production to VERSION")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--force", action="store_true", help="skip the accuracy gate")
    promote.add_argument("--tolerance", type=float, default=0.005)
    promote.set_defaults(run=cmd_models_promote)
    back = models.add_parser("rollback", help="production back to its previous version")
    back.add_argument("name")
    back.set_defaults(run=cmd_models_rollback)
    canary = models.add_parser("canary", help="send a share of the default route to VERSION")
    canary.add_argument("name")
    canary.add_argument("version", type=int, nargs="?")
    canary.add_argument("--weight", type=float, default=10.0, help="percent, 0 < w < 100")
    canary.add_argument("--clear", action="store_true")
    canary.set_defaults(run=cmd_models_canary)
    compress = models.add_parser(
        "compress",
        help="compress NAME@VERSION into a new version, with a report (exit 1 when the accuracy gate refuses it)",
    )
    compress.add_argument("model", help="NAME@VERSION or NAME@ALIAS")
    compress.add_argument("--method", required=True, help="int8 | fp16 | prune:AMOUNT")
    compress.add_argument("--max-accuracy-drop", type=float, help="0.01 = one point (default from settings)")
    compress.add_argument("--json", action="store_true")
    compress.set_defaults(run=cmd_models_compress)
    imports = models.add_parser("import", help="a model trained elsewhere (an ONNX file) as a new version of --name")
    imports.add_argument("file", help="the .onnx file (weights inside it, not in external data files)")
    imports.add_argument("--name", required=True)
    imports.add_argument(
        "--kind",
        help="the kind of input it takes, one the platform can import (GET /v1/kinds "
        "lists them); left out, the platform's choice (--evaluate-on's dataset's)",
    )
    imports.add_argument("--labels", required=True, help="class names in output order: a,b,c")
    imports.add_argument(
        "--preprocessing",
        help="JSON: pixels * scale, then (x - mean) / std per channel, "
        'e.g. {"scale": 0.00392, "mean": [0.13], "std": [0.31]}; a table '
        'model: {"features": [...]}',
    )
    imports.add_argument(
        "--features",
        help="a table model's feature columns in input order: a,b,c (numbers; categories through --preprocessing)",
    )
    imports.add_argument(
        "--scores", choices=["logits", "probabilities"], default="logits", help="what the graph's output holds"
    )
    imports.add_argument(
        "--evaluate-on",
        metavar="DATASET@VERSION",
        help="a built dataset version whose test split the model is evaluated on (its labels)",
    )
    imports.add_argument("--json", action="store_true")
    imports.set_defaults(run=cmd_models_import)

    add_sweeps_commands(commands)
    add_tasks_commands(commands)
    add_monitoring_commands(commands)
    add_results_commands(commands)
    add_batch_commands(commands)
    add_access_commands(commands)
    add_loops_commands(commands)
    add_projects_commands(commands)
    add_login_commands(commands)
    add_quotas_commands(commands)

    predict = commands.add_parser(
        "predict", help="classify a file through the gateway (an image, a text, a CSV of table rows)"
    )
    predict.add_argument("file")
    predict.add_argument("--model", required=True)
    predict.add_argument("--version", type=int)
    predict.add_argument("--alias")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(run=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Settings], int | None] = args.run
    try:
        from aiplatform.tokens import with_api_token

        settings = Settings()
        if args.run not in (cmd_up, cmd_down):  # `aip login`'s gateway, key and project, under AIP_*
            settings = with_login(settings, read_login(config_path()))
        # The token `aip up` keeps in the state folder, unless AIP_API_TOKEN is set; `up` makes it.
        settings = with_api_token(settings, create=args.run is cmd_up)
        if args.project is not None:
            settings = settings.model_copy(update={"project": args.project})
        if settings.ray_address is None:
            # Before Ray is imported: Ray reads these at import (else 127.0.0.1 becomes eth0's IP).
            from aip.local import LOCAL_RAY_ENV

            os.environ.update(LOCAL_RAY_ENV)
        return run(args, settings) or 0
    except AIPError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except ValidationError as exc:  # a bad AIP_* setting: its name and rule, never its value
        for error in exc.errors():
            print(f"error: setting {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return EXIT_ERROR
