#!/usr/bin/env bash
# Where the serving path's CPU goes under load: bench/serve.py's gateway (MNIST CNN, direct ingress),
# 20 s per concurrency; during the c=32 point py-spy samples the gateway and the model-server replicas
# (12 s at 50 Hz) into raw folded stacks: $OUT/gateway.txt and $OUT/model_server.txt.
#   bench/profile_gateway.sh [OUT]     (default OUT: /tmp/aip-profile)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/aip-profile}
mkdir -p "$OUT"
.venv/bin/python bench/serve.py --repeats 1 --seconds 20 --mode direct --only gateway > "$OUT/bench.log" 2>&1 &
BENCH=$!
until grep -q "gateway (direct) at" "$OUT/bench.log"; do sleep 1; kill -0 $BENCH; done
sleep 50  # the c=1 and c=8 points
for deployment in Gateway ModelServer; do
  pid=$(pgrep -f "ServeReplica:aiplatform:$deployment" | head -1)
  .venv/bin/py-spy record -p "$pid" -d 12 -r 50 -f raw --nonblocking \
    -o "$OUT/$( [ $deployment = Gateway ] && echo gateway || echo model_server ).txt" >/dev/null 2>&1 &
done
wait $BENCH
grep "repeat 1" "$OUT/bench.log"
