"""Benchmark: weighted fair share and quotas in the task scheduler, on a contended cluster.

    python bench/fair_share.py [--seconds 120] [--alone-seconds 30] [--cpus 8]

A local Ray with ``--cpus`` logical CPUs (more than the machine has: the tasks only hold them),
the platform's real queue actor and the real ``TaskManager.reconcile`` run in a loop as the
scheduler actor runs it, admitting by ``aiplatform.tasks.fair_share``. What a task's Ray job
would be is a Ray task that holds the task's CPU (``train_worker_cpus`` = 1, one worker) for a
fixed run and then records its task SUCCEEDED in the queue, as the training job does: the bench
measures the scheduler, not training.

1. Contended: projects a, b, c with weights 1:1:2 (CPU quotas 5, 5, 6; 20 queued tasks each),
   their runs 2.0, 3.0 and 2.5 s long (shares are by CPU-seconds, not by task count); a feeder
   keeps each one's queue ``--depth`` deep for ``--seconds``. Prints each project's share of the
   CPU-seconds its tasks held within that time (from the queue's own task records) against its
   weight's share; passes when every share is within 10% of its target.
2. No quota exceeded: from the scheduler's admission record (``QuotaStore.admissions``), each
   admission's own check (held before + the task <= quota), and the most CPUs each project's
   admitted tasks held at once (from admission to the scheduler seeing the end) against its quota.
3. Alone: project d, with no quota, alone with a full queue for ``--alone-seconds``: the most
   CPUs it held at once (all of them) and its mean use of the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray

from aiplatform.access import AccessStore
from aiplatform.access.quotas import Admission, Quota, QuotaStore
from aiplatform.settings import Settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import QUEUED, SUCCEEDED, Task, TaskClient
from aiplatform.tasks.ray_jobs import JobState

PARAMS = {"epochs": 1, "max_rows": 600, "conv_channels": [4], "hidden_units": 16}
WEIGHTS = {"a": 1.0, "b": 1.0, "c": 2.0}
CPU_QUOTAS = {"a": 5.0, "b": 5.0, "c": 6.0}
RUN_S = {"a": 2.0, "b": 3.0, "c": 2.5, "d": 2.0}
QUEUED_QUOTA = 20
TOLERANCE = 0.10


@ray.remote(max_retries=0)
def hold(settings: Settings, task_id: str, seconds: float) -> None:
    """A task's job: hold its CPU for the run, then record the task SUCCEEDED (as jobs/train does)."""
    time.sleep(seconds)
    TaskClient.connect(settings).finish(task_id, SUCCEEDED, result={"held_s": seconds})


class HeldJobs:
    """Ray's job API as the task manager uses it; each job is a :func:`hold` Ray task."""

    def __init__(self, settings: Settings, queue: TaskClient) -> None:
        self.settings = settings
        self.queue = queue
        self.refs: dict[str, ray.ObjectRef] = {}

    def submit(self, submission_id: str, entrypoint: str, env_vars: Any = None, metadata: Any = None) -> None:
        task = self.queue.get(metadata["aip_task_id"])
        cpus = self.settings.train_worker_cpus
        self.refs[submission_id] = hold.options(num_cpus=cpus).remote(self.settings, task.id, RUN_S[task.project])

    def states(self, submission_ids: Iterable[str]) -> dict[str, JobState]:
        refs = {job: self.refs[job] for job in submission_ids if job in self.refs}
        done, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=0) if refs else ([], [])
        ended = set(done)
        return {job: JobState(job, "SUCCEEDED" if ref in ended else "RUNNING", None) for job, ref in refs.items()}

    def state(self, submission_id: str) -> JobState | None:
        return self.states([submission_id]).get(submission_id)

    def stop(self, submission_id: str) -> None:
        ray.cancel(self.refs[submission_id], force=True)

    def logs(self, submission_id: str) -> str:
        return ""

    def job_url(self, submission_id: str) -> str | None:
        return None


def scheduler_loop(manager: TaskManager, wake: threading.Event, stop: threading.Event) -> None:
    """``SchedulerActor._loop``: a round every ``task_poll_interval_s``, or at once when woken."""
    while not stop.is_set():
        manager.reconcile()
        wake.wait(manager.settings.task_poll_interval_s)
        wake.clear()


def feed(manager: TaskManager, projects: list[str], depth: int, until: float) -> int:
    """Keep each project's queue ``depth`` deep until ``until``; returns the tasks created."""
    made = 0
    while time.time() < until:
        for project in projects:
            for _ in range(depth - manager.queue.counts(project).get(QUEUED, 0)):
                manager.create("cnn-classification", dict(PARAMS), project=project, start=True)
                made += 1
        time.sleep(0.1)
    return made


def drain(manager: TaskManager, projects: list[str]) -> None:
    """Cancel the projects' queued tasks and wait for the running ones to end."""
    for task in manager.queue.queued(limit=10_000):
        if task.project in projects:
            manager.queue.cancel(task.id)
    while any(t.project in projects for t in manager.queue.running()):
        time.sleep(0.2)


def all_tasks(queue: TaskClient) -> list[Task]:
    """Every task in the queue (its listing pages 1000 at a time)."""
    tasks: list[Task] = []
    while True:
        page = queue.list(limit=1000, offset=len(tasks))
        tasks += page
        if len(page) < 1000:
            return tasks


def cpu_seconds(tasks: list[Task], cpus: float, start: float, end: float) -> dict[str, float]:
    """CPU-seconds each project's tasks held within [start, end], from the queue's records."""
    used: dict[str, float] = {}
    for task in tasks:
        if task.started_at is None:
            continue
        finished = task.finished_at if task.finished_at is not None else end
        held = max(0.0, min(finished, end) - max(task.started_at, start))
        used[task.project] = used.get(task.project, 0.0) + held * cpus
    return used


def most_held(admissions: list[Admission], now: float) -> dict[str, float]:
    """The most CPUs each project's admitted tasks held at once (admission to seen ended)."""
    events: list[tuple[float, int, str, float]] = []
    for a in admissions:
        events += [(a.admitted_at, 1, a.project, a.cpus), (a.ended_at or now, 0, a.project, -a.cpus)]
    held: dict[str, float] = {}
    peak: dict[str, float] = {}
    for _, _, project, cpus in sorted(events):  # at one instant, ends (0) before starts (1)
        held[project] = held.get(project, 0.0) + cpus
        peak[project] = max(peak.get(project, 0.0), held[project])
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--alone-seconds", type=float, default=30.0)
    parser.add_argument("--cpus", type=int, default=8)
    parser.add_argument("--depth", type=int, default=8, help="queued tasks kept per project")
    args = parser.parse_args()

    from aiplatform.runtime import connect

    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="aip-bench-fair-")),
        ray_num_cpus=args.cpus,
        ray_dashboard=False,
        ray_namespace=f"bench-{uuid.uuid4().hex[:8]}",
        ray_temp_dir=Path(f"/tmp/aip-bench-ray-{os.getpid()}"),
        api_auth="off",
        task_max_running=1024,
        task_poll_interval_s=0.25,
        train_worker_cpus=1.0,
    )
    connect(settings)
    access = AccessStore.in_state_dir(settings.resolved_state_dir)
    quotas = QuotaStore.in_state_dir(settings.resolved_state_dir)
    for project in (*WEIGHTS, "d"):
        access.create_project(project, by="bench")
    for project, weight in WEIGHTS.items():
        quotas.set(Quota(project, cpus=CPU_QUOTAS[project], queued=QUEUED_QUOTA, weight=weight), by="bench")
    queue = TaskClient.connect(settings)
    wake, stop = threading.Event(), threading.Event()
    manager = TaskManager(queue, HeldJobs(settings, queue), settings, wake_scheduler=wake.set)  # type: ignore[arg-type]
    loop = threading.Thread(target=scheduler_loop, args=(manager, wake, stop), daemon=True)
    loop.start()
    report: dict[str, Any] = {"cpus": args.cpus, "seconds": args.seconds, "weights": WEIGHTS, "run_s": RUN_S}
    try:
        t0 = time.time()
        made = feed(manager, list(WEIGHTS), args.depth, t0 + args.seconds)
        t1 = time.time()
        drain(manager, list(WEIGHTS))
        tasks = all_tasks(manager.queue)
        used = cpu_seconds(tasks, settings.train_worker_cpus, t0, t1)
        total = sum(used.values())
        shares = {}
        for project, weight in WEIGHTS.items():
            target = weight / sum(WEIGHTS.values())
            share = used.get(project, 0.0) / total
            shares[project] = {
                "share": round(share, 4),
                "target": round(target, 4),
                "off": round(share / target - 1, 4),
            }
        report["contended"] = {
            "tasks_created": made,
            "cpu_seconds": {p: round(v, 1) for p, v in used.items()},
            "cluster_use": round(total / (args.cpus * (t1 - t0)), 3),
            "shares": shares,
        }

        t2 = time.time()
        feed(manager, ["d"], args.depth, t2 + args.alone_seconds)
        t3 = time.time()
        drain(manager, ["d"])
        alone = cpu_seconds(all_tasks(manager.queue), settings.train_worker_cpus, t2, t3).get("d", 0.0)
        admissions = quotas.admissions()
        peaks = most_held(admissions, time.time())
        own_checks = [
            a for a in admissions if a.quota_cpus is not None and a.cpus_in_use + a.cpus > a.quota_cpus + 1e-9
        ]
        report["quotas"] = {
            "admissions": len(admissions),
            "over_quota_by_own_check": len(own_checks),
            "most_cpus_held": {p: peaks.get(p, 0.0) for p in (*WEIGHTS, "d")},
            "cpu_quota": CPU_QUOTAS,
        }
        report["alone"] = {
            "most_cpus_held": peaks.get("d", 0.0),
            "cluster_use": round(alone / (args.cpus * (t3 - t2)), 3),
        }
    finally:
        stop.set()
        wake.set()
        loop.join(timeout=10)
        ray.shutdown()

    print(json.dumps(report, indent=1))
    fair = all(abs(s["off"]) <= TOLERANCE for s in report["contended"]["shares"].values())
    within = report["quotas"]["over_quota_by_own_check"] == 0 and all(
        report["quotas"]["most_cpus_held"][p] <= CPU_QUOTAS[p] + 1e-9 for p in WEIGHTS
    )
    whole = report["alone"]["most_cpus_held"] == args.cpus
    for project, s in report["contended"]["shares"].items():
        print(
            f"project {project} (weight {WEIGHTS[project]:g}): {s['share']:.1%} of CPU-seconds, target {s['target']:.1%} ({s['off']:+.1%})"
        )
    print(f"shares within {TOLERANCE:.0%} of the weights' shares: {'yes' if fair else 'NO'}")
    print(f"quota never exceeded ({report['quotas']['admissions']} admissions): {'yes' if within else 'NO'}")
    print(
        f"a project alone: held {report['alone']['most_cpus_held']:g} of {args.cpus} CPUs at most, "
        f"{report['alone']['cluster_use']:.0%} of the cluster on average: {'yes' if whole else 'NO'}"
    )
    raise SystemExit(0 if fair and within and whole else 1)


if __name__ == "__main__":
    main()
