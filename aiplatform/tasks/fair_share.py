"""Which queued tasks start this round: projects' quotas, then weighted fair share between them.

The policy is pure (the task manager hands it the queue, what runs and the record of past
admissions), so it is tested without a cluster:

- a task starts only if its project's running CPUs and GPUs plus its own stay within the
  project's quota; one past it waits, saying ``project quota: 8 of 8 CPUs in use``, and so do the
  tasks of that project behind it (priorities order a project's own tasks). A task that needs
  more than the quota itself (the quota was lowered after it was queued; creation refuses such a
  task) could never start: it waits saying so and the tasks behind it go ahead;
- between projects whose next task is admissible, the one with the fewest CPU-seconds used over
  the last ``WINDOW_S``, divided by its weight, goes first; its next task may then take the
  next free room, so a project alone on the cluster gets all of it. A running task counts as
  what it will have used by the end of a typical run (the mean run of the window's ended tasks),
  and so does each task started in the round: one round's free room is shared by weight
  rather than all given to the project furthest behind;
- the chosen task waits (and so does everything behind it) when the cluster has not the room
  for it now but will once running queued tasks end: a smaller task of another project does
  not jump it, or a large task would never start. When it would not fit even if every task
  the queue runs ended (the rest is held outside the queue: model servers, analysis tasks, a
  loop's gates), holding the room for it would stop every project for as long as those hold
  theirs, so its project sits the round out (its own tasks keep their order behind it) and the
  others' tasks that fit start. It is not starved by them: as soon as the room outside the queue
  shrinks enough for it to fit once the queue's tasks end, the room is held for it again.

Every queued task the policy sees gets a reason it waits that names only its own project's
tasks (``Plan.waiting``): what the task manager shows a project's members.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiplatform.access.quotas import Admission, Quota

WINDOW_S = 900.0
"""How far back fair share counts a project's CPU-seconds (a sliding window)."""


@dataclass(frozen=True)
class Resources:
    """CPUs and GPUs, as Ray counts them."""

    cpu: float
    gpu: float = 0.0

    @classmethod
    def of(cls, ray_resources: Mapping[str, float]) -> Resources:
        return cls(float(ray_resources.get("CPU", 0.0)), float(ray_resources.get("GPU", 0.0)))

    def fits(self, available: Resources) -> bool:
        return self.cpu <= available.cpu + 1e-9 and self.gpu <= available.gpu + 1e-9

    def minus(self, used: Resources) -> Resources:
        return Resources(self.cpu - used.cpu, self.gpu - used.gpu)

    def plus(self, more: Resources) -> Resources:
        return Resources(self.cpu + more.cpu, self.gpu + more.gpu)

    def least(self, other: Resources) -> Resources:
        return Resources(min(self.cpu, other.cpu), min(self.gpu, other.gpu))

    def describe(self) -> str:
        return f"{self.cpu:g} CPU" + (f" and {self.gpu:g} GPU" if self.gpu else "")


NOTHING = Resources(0.0)


@dataclass(frozen=True)
class Candidate:
    """A queued task as the policy sees it (in the queue's order: priority, then age)."""

    task_id: str
    project: str
    needed: Resources


@dataclass
class Plan:
    """The round's outcome: tasks to start, in order, and why others wait."""

    admitted: list[Candidate] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)


def quota_refusal(quota: Quota | None, in_use: Resources, needed: Resources) -> str | None:
    """Why a task needing ``needed`` may not start while its project holds ``in_use`` (None: it may)."""
    if quota is None:
        return None
    for limit, held, want, unit in (
        (quota.cpus, in_use.cpu, needed.cpu, "CPUs"),
        (quota.gpus, in_use.gpu, needed.gpu, "GPUs"),
    ):
        if limit is not None and want > 0 and held + want > limit + 1e-9:
            return f"project quota: {held:g} of {limit:g} {unit} in use (it needs {want:g})"
    return None


DEFAULT_RUN_S = 60.0
"""A typical run's length before any task has ended in the window."""


def typical_run_s(admissions: Iterable[Admission], now: float, window_s: float = WINDOW_S) -> float:
    """The mean run of the tasks that ended within the window (``DEFAULT_RUN_S`` if none has)."""
    runs = [a.ended_at - a.admitted_at for a in admissions if a.ended_at is not None and a.ended_at >= now - window_s]
    return sum(runs) / len(runs) if runs else DEFAULT_RUN_S


def cpu_seconds(
    admissions: Iterable[Admission], now: float, window_s: float = WINDOW_S, run_s: float = 0.0
) -> dict[str, float]:
    """CPU-seconds each project's admitted tasks held within the last ``window_s``; a task still
    running counts up to ``now``, plus what it would hold until ``run_s`` after it started
    (0: only what it has used)."""
    start = now - window_s
    used: dict[str, float] = {}
    for admission in admissions:
        end = now if admission.ended_at is None else min(admission.ended_at, now)
        held = max(0.0, end - max(admission.admitted_at, start))
        if admission.ended_at is None:
            held += max(0.0, run_s - (now - admission.admitted_at))
        used[admission.project] = used.get(admission.project, 0.0) + held * admission.cpus
    return used


def in_use(running: Iterable[tuple[str, Resources]]) -> dict[str, Resources]:
    """What each project's running tasks hold, from ``(project, needed)`` pairs."""
    held: dict[str, Resources] = {}
    for project, needed in running:
        held[project] = held.get(project, NOTHING).plus(needed)
    return held


def quota_exceeded(quota: Quota | None, needed: Resources) -> str | None:
    """Why a task needing ``needed`` could never start under ``quota``, even with nothing else of
    its project running (None: it could)."""
    if quota is None:
        return None
    for limit, want, unit in ((quota.cpus, needed.cpu, "CPUs"), (quota.gpus, needed.gpu, "GPUs")):
        if limit is not None and want > limit + 1e-9:
            return f"needs {want:g} {unit}, more than its project's quota of {limit:g} {unit}"
    return None


MOST_AT_ONCE = "the platform already runs as many tasks at once as it may"
CLUSTER_BUSY = "the cluster is busy: its project waits for its fair share turn"


def plan(
    queued: Sequence[Candidate],
    quotas: Mapping[str, Quota],
    held: Mapping[str, Resources],
    used_cpu_s: Mapping[str, float],
    free: Resources,
    slots: int,
    run_s: float = 0.0,
) -> Plan:
    """The tasks to start now, at most ``slots`` of them, within ``free`` (see the module
    docstring); each one started adds its CPUs times ``run_s`` to its project's CPU-seconds.
    ``held`` is what every project's running tasks hold: with ``free`` it is the room the
    queue's tasks would have if all of theirs ended."""
    result = Plan()
    held = dict(held)
    used_cpu_s = dict(used_cpu_s)
    reclaimable = functools.reduce(Resources.plus, held.values(), free)
    lines: dict[str, list[Candidate]] = {}
    for candidate in queued:
        refusal = quota_exceeded(quotas.get(candidate.project), candidate.needed)
        if refusal is not None:  # never admissible: it must not hold its project's line
            result.waiting[candidate.task_id] = f"{refusal}: it cannot start until the quota is raised"
            continue
        lines.setdefault(candidate.project, []).append(candidate)
    order = {c.task_id: i for i, c in enumerate(queued)}
    stopped = MOST_AT_ONCE
    while lines:
        admissible = []
        for project, line in list(lines.items()):
            refusal = quota_refusal(quotas.get(project), held.get(project, NOTHING), line[0].needed)
            if refusal is None:
                admissible.append(project)
                continue
            _wait_line(result, lines.pop(project), refusal)
        if not admissible or slots <= 0:
            break
        chosen = min(admissible, key=lambda p: (_share(p, used_cpu_s, quotas), order[lines[p][0].task_id]))
        head = lines[chosen][0]
        if not head.needed.fits(free):
            room = f"needs {head.needed.describe()}, {free.describe()} free now"
            if head.needed.fits(reclaimable):
                _wait_line(result, lines.pop(chosen), f"its project's turn; {room}")
                stopped = CLUSTER_BUSY
                break
            _wait_line(
                result,
                lines.pop(chosen),
                f"{room}; the rest is held outside the queue (model servers, analysis), so tasks that fit go ahead",
            )
            continue
        lines[chosen].pop(0)
        if not lines[chosen]:
            del lines[chosen]
        result.admitted.append(head)
        free = free.minus(head.needed)
        held[chosen] = held.get(chosen, NOTHING).plus(head.needed)
        used_cpu_s[chosen] = used_cpu_s.get(chosen, 0.0) + head.needed.cpu * run_s
        slots -= 1
    for line in lines.values():
        _wait_line(result, line, stopped)
    return result


def _wait_line(result: Plan, line: Sequence[Candidate], reason: str) -> None:
    """``line``'s head waits for ``reason``, the rest of its project's line behind it."""
    head = line[0]
    result.waiting[head.task_id] = reason
    for behind in line[1:]:
        result.waiting[behind.task_id] = f"behind {head.task_id} of its project, which waits: {reason}"


def _share(project: str, used_cpu_s: Mapping[str, float], quotas: Mapping[str, Quota]) -> float:
    quota = quotas.get(project)
    return used_cpu_s.get(project, 0.0) / (quota.weight if quota is not None else 1.0)
