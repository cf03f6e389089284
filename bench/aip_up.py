"""Benchmark: `aip up` as a user runs it, from the command's start to its URLs, against Ray's own
`ray start --head` on the same machine (the part of `up` no platform code can shorten).

    python bench/aip_up.py --repeats 3

Each repeat, in a fresh ``AIP_HOME`` with ports of its own: `ray start --head` with the same
loopback and dashboard options `up` gives it, timed until its GCS port accepts connections, then
`ray stop`; then `python -m aip up` (Prometheus too when installed), timed to its exit and to its
first line of output, then `aip down`. Medians over ``--repeats``; the ratio is `aip up` over the
bare head.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve import aip_up_env  # first: its benchpath puts the working tree ahead

from aip.processes import accepts_connections

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RAY = str(Path(PYTHON).parent / "ray")


def bare_head(home: Path) -> float:
    """Seconds until `ray start --head` accepts connections (then stopped)."""
    home.mkdir(parents=True, exist_ok=True)
    env = aip_up_env(home) | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    Path(env["RAY_AUTH_TOKEN_PATH"]).write_text(os.urandom(16).hex())
    port = int(env["AIP_RAY_PORT"])
    command = [
        RAY,
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={env['AIP_DASHBOARD_PORT']}",
        f"--dashboard-agent-listen-port={env['AIP_DASHBOARD_AGENT_PORT']}",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={env['AIP_RAY_TEMP_DIR']}",
    ]
    started = time.perf_counter()
    subprocess.run(command, env=env, capture_output=True, check=True)
    while not accepts_connections("127.0.0.1", port):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    return elapsed


def aip_up(home: Path) -> tuple[float, float]:
    """Seconds to `aip up`'s first line and to its exit (then `aip down`)."""
    env = aip_up_env(home)
    started = time.perf_counter()
    first = None
    process = subprocess.Popen(
        [PYTHON, "-m", "aip", "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        first = first if first is not None else time.perf_counter() - started
        output.append(line)
    code = process.wait()
    elapsed = time.perf_counter() - started
    subprocess.run([PYTHON, "-m", "aip", "down"], cwd=ROOT, env=env, capture_output=True)
    if code != 0:
        raise SystemExit(f"aip up failed ({code}):\n{''.join(output)[-3000:]}")
    return (first if first is not None else elapsed), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    heads, firsts, ups = [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-up-") as folder:
            heads.append(bare_head(Path(folder) / "head"))
        with tempfile.TemporaryDirectory(prefix="bench-up-") as folder:
            first, up = aip_up(Path(folder))
        firsts.append(first)
        ups.append(up)
        print(f"repeat {repeat + 1}: ray start --head {heads[-1]:.1f} s; aip up {up:.1f} s (first line {first:.1f} s)")
    head, up, first = statistics.median(heads), statistics.median(ups), statistics.median(firsts)
    print(
        f"median of {args.repeats}: ray start --head {head:.1f} s, aip up {up:.1f} s ({up / head:.1f}x), first line {first:.1f} s"
    )
    print(f"prometheus: {'installed' if shutil.which('prometheus') else 'not installed (aip up skips it)'}")


if __name__ == "__main__":
    main()
