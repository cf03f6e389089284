#!/usr/bin/env bash
# Copy the browser tests' screenshots of each page (test-artifacts/screenshots/, written by
# tests/e2e) into docs/screenshots/, which the README shows. Run after the e2e tests.
set -euo pipefail
cd "$(dirname "$0")/.."
from=test-artifacts/screenshots
mkdir -p docs/screenshots
for pair in "2-task-succeeded:training" "3-task-detail-curves:task" "2b-task-waiting:task-waiting" \
            "4-inference:inference" "5-models:models" "5b-where-it-errs:where-it-errs" \
            "6-datasets:datasets" "20-monitoring:monitoring" "9-alerts:alerts" "4b-result:result" \
            "7-sweep:sweep" "8-compare:compare"; do
  source="$from/${pair%%:*}.png"
  [ -f "$source" ] || { echo "missing $source: run the e2e tests first" >&2; exit 1; }
  cp "$source" "docs/screenshots/${pair##*:}.png"
done
ls -la docs/screenshots
