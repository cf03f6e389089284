"""Deploy a registered model version to production (or roll back), with the accuracy gate.

python -m jobs.deploy --model mnist-cnn --version 3
python -m jobs.deploy --model mnist-cnn --rollback
python -m jobs.deploy --model mnist-cnn --canary 4 --weight 10   # 90% production, 10% v4
python -m jobs.deploy --model mnist-cnn --clear-canary
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiplatform.errors import AIPError
from aiplatform.registry import RegistryClient
from aiplatform.runtime import connect
from aiplatform.serving.deployer import (
    DEFAULT_TOLERANCE,
    deploy,
    describe_split,
    rollback,
    set_canary,
    warm_on_serve,
)
from aiplatform.serving.pools import pool_routes
from aiplatform.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.deploy", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", type=int)
    target.add_argument("--rollback", action="store_true")
    target.add_argument(
        "--canary",
        type=int,
        metavar="VERSION",
        help="send --weight percent of the default route to VERSION (warmed first)",
    )
    target.add_argument("--clear-canary", action="store_true")
    parser.add_argument("--weight", type=float, default=10.0, help="canary percent, 0 < w < 100")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--force", action="store_true", help="skip the accuracy gate")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        connect(settings)
        registry = RegistryClient.connect(settings)
        warm = warm_on_serve(settings.serve_app_name, pool_routes(settings))
        if args.canary is not None or args.clear_canary:
            print(describe_split(args.model, set_canary(registry, args.model, args.canary, args.weight, warm)))
            return 0
        if args.rollback:
            result = rollback(registry, args.model, warm=warm)
        else:
            result = deploy(registry, args.model, args.version, warm=warm, tolerance=args.tolerance, force=args.force)
    except AIPError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
