#!/usr/bin/env bash
# Debian's redis-server on 127.0.0.1 for Ray's GCS fault tolerance in a manual run: the head then
# keeps Ray's control state there and can be lost and started again (docs/CLUSTER.md, section 2).
#   scripts/redis-for-ray.sh [PORT] [FOLDER]     (defaults: 6380, ~/.aiplatform/redis)
# Runs in the foreground (Ctrl-C stops it). In another shell:
#   RAY_REDIS_ADDRESS=127.0.0.1:6380 ray start --head --port 6379 ...   # the head, started again the same way
# The tests start their own instance (tests/multinode/test_head_loss.py).
set -euo pipefail
port="${1:-6380}"
folder="${2:-$HOME/.aiplatform/redis}"
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is not installed: scripts/install-system-packages.sh" >&2; exit 1; }
mkdir -p "$folder"
# Append-only file: the GCS's state survives a restart of Redis itself too.
exec redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --dir "$folder" \
  --appendonly yes --save ''
