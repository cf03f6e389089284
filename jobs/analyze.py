"""Analyse data: the profile of a dataset version, or the drift of a model's recent inputs.

    python -m jobs.analyze profile --dataset mnist@3f2a...
    python -m jobs.analyze drift --model mnist-cnn [--version 3] [--limit 1000] [--out report-dir]

Reports and charts are stored under ``reports/analysis/`` in the platform's storage; ``--out``
also writes them to a local folder. Exit status 0, or 2 with a message for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiplatform.errors import AIPError

EXIT_ERROR = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.analyze", description=__doc__.split("\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    profile = kinds.add_parser("profile", help="profile of a dataset version")
    profile.add_argument("--dataset", required=True, help="NAME@VERSION")
    profile.add_argument("--refresh", action="store_true", help="compute again even if stored")
    drift = kinds.add_parser("drift", help="drift of a model's recent inputs against its training data")
    drift.add_argument("--model", required=True)
    drift.add_argument("--version", type=int)
    drift.add_argument("--dataset", help="reference NAME@VERSION (default: the model's)")
    drift.add_argument("--split", default="val", help="reference split (default: the held-out validation split)")
    drift.add_argument("--limit", type=int, default=1000, help="most recent predictions compared")
    for sub in (profile, drift):
        sub.add_argument("--out", type=Path, help="also write the report and charts to this folder")
        sub.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from aiplatform.analysis import service
        from aiplatform.runtime import connect, quiet_ray_data
        from aiplatform.settings import Settings
        from aiplatform.storage import storage_from_settings

        settings = Settings()
        connect(settings)
        quiet_ray_data()
        if args.kind == "profile":
            report = service.profile(settings, args.dataset, args.refresh)
        else:
            report = service.drift(settings, args.model, args.version, args.dataset, args.split, args.limit)
        if args.out:
            _write_local(args.out, report, storage_from_settings(settings))
    except AIPError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(report) if args.json else "\n".join(_summary(args.kind, report)))
    return 0


def _write_local(folder: Path, report: dict[str, Any], storage: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    for key in report.get("charts", {}).values():
        (folder / key.rsplit("/", 1)[-1]).write_bytes(storage.get_bytes(key))


def _summary(kind: str, report: dict[str, Any]) -> list[str]:
    if kind == "profile":
        lines = [
            f"{report['dataset']} ({report['kind']}): "
            + ", ".join(
                f"{split} {s['rows']} rows ({s['duplicates']} duplicates)" for split, s in report["splits"].items()
            )
        ]
        lines.append(
            f"  class balance: {report['class_balance']['shares']} "
            f"(largest/smallest {report['class_balance']['imbalance_ratio']})"
        )
        lines.append(f"  leakage between splits: {report['leakage']['pairs']}")
    else:
        lines = [
            f"{report['model']} against {report['dataset']} ({report['split']}): drift {report['verdict']} "
            f"(PSI {report['score']:.3f}, worst {report['worst_feature']}) over {report['live_samples']} "
            "recent predictions"
        ]
        lines += [f"  {name}: PSI {f['psi']:.3f} ({f['verdict']})" for name, f in report["features"].items()]
    lines.append(f"  charts: {', '.join(report.get('charts', {}).values())}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
