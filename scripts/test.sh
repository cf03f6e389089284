#!/usr/bin/env bash
# Install (if needed), then run the whole test suite (unit, integration, e2e).
# Extra arguments go to pytest (e.g. -m unit for the quick subset).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# The project's own modules compiled once (scripts/install.sh says why: with PYTHONDONTWRITEBYTECODE
# set, each of the hundreds of processes a run starts would compile them again).
.venv/bin/python -m compileall -q -j 0 aiplatform aip jobs serve_apps tests > /dev/null 2>&1 || true
export PATH="$PWD/.venv/bin:$PATH"
# A crash outside a test (at interpreter exit) prints every thread's stack instead of nothing.
export PYTHONFAULTHANDLER=1
# ...and the run leaves with pytest's status once its report is written (tests/conftest.py says why).
export AIP_TESTS_EXIT_AT_UNCONFIGURE=1
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=60 "$@"
