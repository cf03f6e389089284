"""The scheduler's policy between projects (``aiplatform.tasks.fair_share``) on a simulated clock,
and the quota store it reads (``aiplatform.access.quotas``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.access import AccessStore
from aiplatform.access.quotas import Admission, Quota, QuotaStore
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.tasks import fair_share
from aiplatform.tasks.fair_share import Candidate, Resources

ONE = Resources(1.0)


def _line(project: str, count: int, start: int = 0) -> list[Candidate]:
    return [Candidate(f"{project}-{i}", project, ONE) for i in range(start, start + count)]


def test_weights_1_1_2_share_a_full_cluster_by_weight_over_the_window() -> None:
    """Three projects keep the queue full of 1-CPU tasks of uneven lengths on 4 CPUs: over the
    window each one's CPU-seconds come to its weight's share."""
    quotas = {"a": Quota("a", weight=1), "b": Quota("b", weight=1), "c": Quota("c", weight=2)}
    lengths = {"a": 7.0, "b": 3.0, "c": 5.0}  # uneven on purpose: shares are by time held, not by count
    made = dict.fromkeys(quotas, 0)
    admissions: list[Admission] = []
    running: list[tuple[Admission, float]] = []  # (admission, when it ends)
    now = 0.0
    while now < 3000.0:
        for admission, ends in [r for r in running if r[1] <= now]:
            running.remove((admission, ends))
            admissions[admissions.index(admission)] = Admission(**{**admission.to_dict(), "ended_at": ends})
        queued = []
        for project in ("a", "b", "c"):  # queue order favours a: the policy must not
            queued += _line(project, 3, made[project])
        held = fair_share.in_use((adm.project, ONE) for adm, _ in running)
        window = [a for a in admissions if a.ended_at is None or a.ended_at >= now - fair_share.WINDOW_S]
        run_s = fair_share.typical_run_s(window, now)
        used = fair_share.cpu_seconds(window, now, run_s=run_s)
        free = Resources(4.0 - len(running))
        for chosen in fair_share.plan(queued, quotas, held, used, free, slots=100, run_s=run_s).admitted:
            made[chosen.project] += 1
            admission = Admission(chosen.task_id, chosen.project, now, 1.0, 0.0, 0.0, 0.0, None, None)
            admissions.append(admission)
            running.append((admission, now + lengths[chosen.project]))
        now += 1.0
    used = fair_share.cpu_seconds(admissions, now)  # the last WINDOW_S seconds
    total = sum(used.values())
    assert total == pytest.approx(4 * fair_share.WINDOW_S, rel=0.02)  # the cluster was kept full
    for project, share in (("a", 0.25), ("b", 0.25), ("c", 0.5)):
        assert used[project] / total == pytest.approx(share, abs=0.03), used


def test_a_project_alone_gets_the_whole_cluster_and_its_priorities_hold() -> None:
    alone = fair_share.plan(_line("a", 10), {"a": Quota("a", weight=1)}, {}, {}, Resources(8.0), slots=100)
    assert [c.task_id for c in alone.admitted] == [f"a-{i}" for i in range(8)]
    # b is far behind a: b goes first, but b's own tasks keep their queue order (priority, age)
    queue = [Candidate("a-urgent", "a", ONE), Candidate("b-high", "b", ONE), Candidate("b-low", "b", ONE)]
    plan = fair_share.plan(queue, {}, {}, {"a": 100.0, "b": 0.0}, Resources(2.0), slots=10)
    assert [c.task_id for c in plan.admitted] == ["b-high", "b-low"]


def test_a_task_past_its_quota_waits_saying_why_and_others_go_ahead() -> None:
    quotas = {"a": Quota("a", cpus=8)}
    queue = [Candidate("a-1", "a", ONE), Candidate("a-2", "a", ONE), Candidate("b-1", "b", ONE)]
    plan = fair_share.plan(queue, quotas, {"a": Resources(8.0)}, {}, Resources(4.0), slots=10)
    assert [c.task_id for c in plan.admitted] == ["b-1"]
    assert plan.waiting["a-1"] == "project quota: 8 of 8 CPUs in use (it needs 1)"
    assert plan.waiting["a-2"].startswith("behind a-1 of its project")
    # within quota up to the limit, never past it
    plan = fair_share.plan(_line("a", 5), {"a": Quota("a", cpus=3)}, {"a": Resources(1.0)}, {}, Resources(8.0), 10)
    assert len(plan.admitted) == 2 and plan.waiting["a-2"].startswith("project quota: 3 of 3 CPUs")
    gpu = fair_share.quota_refusal(Quota("a", gpus=0), Resources(0.0), Resources(1.0, 1.0))
    assert gpu == "project quota: 0 of 0 GPUs in use (it needs 1)"
    # the chosen project's task waits for room the queue's running tasks will free; a smaller
    # task of another does not jump it
    queue = [Candidate("big", "a", Resources(4.0)), Candidate("small", "b", ONE)]
    plan = fair_share.plan(queue, {}, {"c": Resources(2.0)}, {"b": 50.0}, Resources(2.0), slots=10)
    assert plan.admitted == [] and "needs 4 CPU, 2 CPU free now" in plan.waiting["big"]
    assert plan.waiting["small"] == fair_share.CLUSTER_BUSY


def test_a_task_that_cannot_fit_what_the_queue_could_free_does_not_stop_other_projects() -> None:
    """4 of 6 CPUs are held outside the queue (model servers): a's 4-CPU task could not start even
    if every queued task ended, so b's and c's tasks that fit start; a's own tasks stay behind it.
    Once the room outside shrinks (a task of b holds 2 of the 6), the room is held for it again."""
    queue = [
        Candidate("a-big", "a", Resources(4.0)),
        Candidate("a-small", "a", ONE),
        Candidate("b-1", "b", ONE),
        Candidate("c-1", "c", ONE),
    ]
    plan = fair_share.plan(queue, {}, {}, {"b": 50.0, "c": 60.0}, Resources(2.0), slots=10)
    assert [c.task_id for c in plan.admitted] == ["b-1", "c-1"]
    assert plan.waiting["a-big"].startswith("needs 4 CPU, 2 CPU free now; the rest is held outside the queue")
    assert plan.waiting["a-small"].startswith("behind a-big of its project")
    plan = fair_share.plan(queue, {}, {"b": Resources(2.0)}, {"b": 50.0, "c": 60.0}, Resources(2.0), slots=10)
    assert plan.admitted == [] and plan.waiting["a-big"].startswith("its project's turn")


def test_a_task_past_its_whole_quota_never_holds_its_project_and_reasons_stay_in_the_project() -> None:
    """The quota was lowered below a queued task's needs: it waits saying it cannot start until
    the quota is raised, and its project's tasks behind it go ahead. Every reason names only the
    task's own project's tasks."""
    quotas = {"a": Quota("a", cpus=2), "b": Quota("b", gpus=0)}
    queue = [
        Candidate("a-big", "a", Resources(4.0)),
        Candidate("a-1", "a", ONE),
        Candidate("b-gpu", "b", Resources(1.0, 1.0)),
        Candidate("b-1", "b", ONE),
        Candidate("b-2", "b", ONE),
    ]
    plan = fair_share.plan(queue, quotas, {}, {"b": 10.0}, Resources(8.0), slots=2)
    assert [c.task_id for c in plan.admitted] == ["a-1", "b-1"]
    assert (
        plan.waiting["a-big"]
        == "needs 4 CPUs, more than its project's quota of 2 CPUs: it cannot start until the quota is raised"
    )
    assert plan.waiting["b-gpu"].startswith("needs 1 GPUs, more than its project's quota of 0 GPUs")
    assert plan.waiting["b-2"] == fair_share.MOST_AT_ONCE
    for task_id, reason in plan.waiting.items():
        other = "b-" if task_id.startswith("a-") else "a-"
        assert other not in reason, (task_id, reason)
    # full: quotas still say why; the rest wait for a slot
    plan = fair_share.plan(queue[1:], {"a": Quota("a", cpus=1)}, {"a": ONE}, {}, Resources(8.0), slots=0)
    assert plan.admitted == [] and plan.waiting["a-1"].startswith("project quota: 1 of 1 CPUs")
    assert plan.waiting["b-gpu"] == fair_share.MOST_AT_ONCE
    assert plan.waiting["b-1"] == f"behind b-gpu of its project, which waits: {fair_share.MOST_AT_ONCE}"


def test_quota_store_keeps_quotas_refuses_bad_ones_and_records_admissions(tmp_path: Path) -> None:
    access = AccessStore(tmp_path / "access.db")
    access.create_project("team-a", by="platform")
    quotas = QuotaStore(tmp_path / "access.db")
    assert quotas.get("team-a") == Quota("team-a")  # none set: unlimited, weight 1
    with pytest.raises(NotFound, match="Project 'nope' not found"):
        quotas.get("nope")
    with pytest.raises(NotFound):
        quotas.set(Quota("nope", cpus=1), by="platform")
    with pytest.raises(InvalidArgument, match="weight must be > 0"):
        Quota("team-a", weight=0)
    with pytest.raises(Conflict, match=r"holding 4 CPUs now \(t1, t2\)") as refused:
        quotas.set(Quota("team-a", cpus=2), by="platform", cpus_in_use=4, running=["t1", "t2"])
    assert "team-a" in refused.value.message and quotas.get("team-a") == Quota("team-a")  # nothing stored
    quotas.set(Quota("team-a", cpus=4, queued=20, replicas=2, weight=2), by="platform", cpus_in_use=4)
    assert QuotaStore(tmp_path / "access.db").quotas() == {"team-a": Quota("team-a", 4, None, 20, 2, 2)}

    quotas.record_admission(Admission("t1", "team-a", 100.0, 2.0, 0.0, 0.0, 0.0, 4.0, None))
    quotas.record_admission(Admission("t2", "team-a", 110.0, 2.0, 0.0, 2.0, 0.0, 4.0, None))
    assert quotas.end_admissions({"t2"}, at=130.0) == 1
    assert [(a.task_id, a.ended_at) for a in quotas.admissions()] == [("t1", 130.0), ("t2", None)]
    assert fair_share.cpu_seconds(quotas.admissions(since=0.0), now=140.0) == {"team-a": 2 * 30 + 2 * 30}
    assert fair_share.cpu_seconds(quotas.admissions(), now=140.0, window_s=20.0) == {"team-a": 2 * 10 + 2 * 20}
    access.close()
    quotas.close()
