"""Compress a registered model version into a new version, with a before/after report.

    python -m jobs.compress --model mnist-cnn@3 --method int8
    ray job submit -- python -m jobs.compress --model tweets-text@production --method prune:0.5

Exit status: 0 registered, 1 refused by the accuracy gate (the report says why), 2 bad input or
another error (a message on stderr; nothing stored is changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from aiplatform.errors import AIPError

EXIT_REFUSED = 1
EXIT_ERROR = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.compress", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="NAME@VERSION or NAME@ALIAS")
    parser.add_argument("--method", required=True, help="int8 | fp16 | prune:AMOUNT (e.g. prune:0.5)")
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="test accuracy the new version may lose (0.01 = one point; default from settings)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from aiplatform.compression.compressor import CompressionReport
        from aiplatform.compression.methods import parse_method
        from aiplatform.compression.service import compress
        from aiplatform.registry import parse_model_ref
        from aiplatform.runtime import connect, quiet_ray_data
        from aiplatform.settings import Settings

        name, ref = parse_model_ref(args.model)
        parse_method(args.method)
        settings = Settings()
        connect(settings)
        quiet_ray_data()
        report = compress(settings, name, ref, args.method, args.max_accuracy_drop)
    except AIPError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report))
    else:
        print("\n".join(CompressionReport(**report).summary_lines()))
    return 0 if report["registered"] else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
