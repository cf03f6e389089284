#!/usr/bin/env bash
# Install (if needed), then train the MNIST CNN on an embedded local Ray, register it, deploy it
# on Ray Serve (127.0.0.1:8000) and classify real MNIST test digits through the HTTP upload endpoint.
# Extra arguments go to jobs.train (e.g. --epochs 5 --augment).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m jobs.train --template cnn-classification --dataset mnist --epochs 3 --deploy "$@"
