"""Where a command's CPU goes, by kind of process, and how many Ray worker processes it starts.

    .venv/bin/python bench/process_cpu.py -- .venv/bin/python -m pytest -q tests/integration/test_loops.py

Every process on the machine is sampled every 0.5 s while the command runs (a process is put
under its Ray task or actor name, else what its command line runs); a process that lives less
than a sample is missed, so the totals are a lower bound. A Ray worker's CPU before it takes its
first task or actor (importing Ray twice, through ``setup_worker.py``, connecting) shows as
"worker start". Run it on two commits one after the other to compare them: it measures work,
not speed, and the machine's other load adds to every kind alike.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import threading
import time

import psutil

SAMPLE_S = 0.5
PROGRAMS = ("jobs.train", "jobs.batch", "jobs.analyze", "jobs.compress", "-m aip", "pytest", "gcs_server")
PROGRAMS += ("dashboard/agent", "dashboard.py", "runtime_env/agent", "log_monitor", "monitor.py")
PROGRAMS += ("chromium", "prometheus", "redis-server", "wrk")


def is_worker(command: str) -> bool:
    """Whether the process is a Ray worker (titled by its task, or still starting)."""
    return command.startswith("ray::") or "default_worker.py" in command or "setup_worker.py" in command


def kind(command: str) -> str:
    """The kind a process is counted under, from its command line (Ray sets a worker's to its task)."""
    if command.startswith("ray::"):
        title = command.split()[0]
        if title == "ray::IDLE":
            return "worker start or idle"
        title = re.sub(r"_ray_internal_job_actor_[^:]*:", "", title)
        title = re.sub(r"SERVE_REPLICA::[^:]*:", "", title)
        return title.split(".")[0]
    if is_worker(command):
        return "worker start or idle"
    for program in PROGRAMS:
        if program in command:
            return program
    if "/raylet/raylet" in command:
        return "raylet"
    return command[:40]


class Sampler:
    """CPU seconds by kind and the Ray worker processes first seen while it runs."""

    def __init__(self) -> None:
        self.cpu: collections.Counter[str] = collections.Counter()
        self.workers: set[int] = set()
        self._seen = {p.pid: self._cpu(p) for p in psutil.process_iter()}
        self._before = set(self._seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def sample(self) -> None:
        for process in psutil.process_iter(["pid", "cmdline", "name"]):
            try:
                command = " ".join(process.info["cmdline"] or []) or process.info["name"] or "?"
            except psutil.Error:
                continue
            used = self._cpu(process)
            self.cpu[kind(command)] += used - self._seen.get(process.pid, 0.0)
            self._seen[process.pid] = used
            if is_worker(command) and process.pid not in self._before:
                self.workers.add(process.pid)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, default=20, help="kinds shown")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    started = time.perf_counter()
    with Sampler() as sampler:
        status = subprocess.call(command)
    wall = time.perf_counter() - started
    total = sum(sampler.cpu.values())
    for name, seconds in sampler.cpu.most_common(args.top):
        print(f"{seconds:8.1f} s {100 * seconds / total:5.1f}%  {name}")
    print(
        f"{total:8.1f} s of CPU in {wall:.1f} s ({total / wall:.2f} cores); {len(sampler.workers)} Ray worker processes started"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
