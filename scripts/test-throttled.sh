#!/usr/bin/env bash
# Run the test suite on a slower machine than this one: every process of the run (pytest, Ray and
# everything Ray starts) shares a CPU quota of CPUS cores (default 0.8: about 2.5x slower than two
# free cores, like the slowest CI machines seen). Timing assumptions in tests show up here first.
#
#   scripts/test-throttled.sh                 # the whole suite on 0.8 of a core
#   CPUS=1 scripts/test-throttled.sh -m unit  # pytest arguments as for scripts/test.sh
#
# The quota is a cgroup (v2 cpu.max, or v1 cpu.cfs_quota_us) made for the run and removed after;
# that needs root and a writable cgroup file system. Without one the run is pinned to one core
# with taskset instead (about 2x slower) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
CPUS="${CPUS:-0.8}"
PERIOD_US=100000
QUOTA_US=$(awk -v c="$CPUS" 'BEGIN { printf "%d", c * 100000 }')
group=""

make_group() {
  local name="aip-throttled-$$"
  if [ -w /sys/fs/cgroup/cgroup.subtree_control ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    group="/sys/fs/cgroup/$name"
    mkdir "$group" && echo "$QUOTA_US $PERIOD_US" > "$group/cpu.max"
  elif [ -w /sys/fs/cgroup/cpu ] || [ -w /sys/fs/cgroup/cpu,cpuacct ]; then
    local root=/sys/fs/cgroup/cpu
    [ -d "$root" ] || root=/sys/fs/cgroup/cpu,cpuacct
    group="$root/$name"
    mkdir "$group" && echo "$PERIOD_US" > "$group/cpu.cfs_period_us" && echo "$QUOTA_US" > "$group/cpu.cfs_quota_us"
  else
    return 1
  fi
}

remove_group() {
  [ -n "$group" ] || return 0
  # Processes left behind (none, normally) go back to the parent group so the folder can go.
  if [ -f "$group/cgroup.procs" ]; then
    while read -r pid; do echo "$pid" > "$(dirname "$group")/cgroup.procs" 2>/dev/null || true; done < "$group/cgroup.procs"
  fi
  rmdir "$group" 2>/dev/null || true
}

if make_group 2>/dev/null; then
  trap remove_group EXIT
  echo "throttled: $CPUS CPU(s) for the whole run (cgroup $group)"
  echo $$ > "$group/cgroup.procs"
  started=$(date +%s)
  status=0
  scripts/test.sh "$@" || status=$?
  echo "throttled run ($CPUS CPUs): $(( $(date +%s) - started )) s in all, exit $status"
  exit $status
fi
echo "throttled: no writable cgroup here; pinned to one core with taskset instead (about 2x slower)"
exec taskset -c 0 scripts/test.sh "$@"
