#!/usr/bin/env bash
# Debian packages the test suite runs for real: Chromium for the browser test (Playwright drives
# it; `playwright install` is never run, so no browser is downloaded from outside the package
# registries), Prometheus for the monitoring test and Redis for the head-loss test (Ray's GCS
# fault tolerance; tests/multinode/test_head_loss.py), both started by the tests on 127.0.0.1.
# With --bench also wrk, the C load generator of the serving benchmarks (bench/wrk.py).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${1:-}" = "--bench" ]; then
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
