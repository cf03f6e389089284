"""The task store: state machine, priorities, idempotency, queries, counts, durability."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.tasks.queue import (
    CANCELLED,
    CREATED,
    FAILED,
    QUEUED,
    REASON_INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    TaskStore,
)
from tests.factories import make_task


@pytest.fixture()
def store(tmp_path: Path) -> TaskStore:
    return TaskStore(tmp_path / "tasks.sqlite")


def test_a_task_walks_the_state_machine_to_success(store: TaskStore) -> None:
    task = make_task(store)
    assert task.state == CREATED and task.attempts == 0
    assert store.start(task.id).state == QUEUED
    running = store.claim(task.id, "job-1")
    assert (running.state, running.ray_job_id, running.attempts) == (RUNNING, "job-1", 1)
    store.report_progress(task.id, {"epoch": 1, "epochs": 2, "val_accuracy": 0.5})
    store.report_progress(task.id, {"epoch": 2, "epochs": 2, "val_accuracy": 0.7})
    store.report_progress(task.id, {"epoch": 2, "epochs": 2, "val_accuracy": 0.8})  # resumed epoch
    done = store.finish(task.id, SUCCEEDED, result={"model": "m", "version": 3})
    assert done.state == SUCCEEDED and done.result == {"model": "m", "version": 3} and done.finished_at
    assert done.progress["epoch"] == 2 and done.progress["metrics"]["val_accuracy"] == 0.8
    assert [m["val_accuracy"] for m in store.metrics_history(task.id)] == [0.5, 0.8]
    # repeating the last write (an actor call retried after a restart) changes nothing
    assert store.finish(task.id, SUCCEEDED).updated_at == done.updated_at


@pytest.mark.parametrize(
    "setup, action, message",
    [
        (lambda s, t: s.cancel(t.id), lambda s, t: s.start(t.id), "only a CREATED task can be started"),
        (lambda s, t: None, lambda s, t: s.claim(t.id, "j"), "cannot become RUNNING"),
        (lambda s, t: None, lambda s, t: s.finish(t.id, SUCCEEDED), "cannot become SUCCEEDED"),
        (
            lambda s, t: (s.start(t.id), s.claim(t.id, "j"), s.finish(t.id, SUCCEEDED)),
            lambda s, t: s.cancel(t.id),
            "already SUCCEEDED; there is nothing to cancel",
        ),
    ],
)
def test_illegal_transitions_are_conflicts_and_change_nothing(store: TaskStore, setup, action, message) -> None:  # type: ignore[no-untyped-def]
    task = make_task(store)
    setup(store, task)
    before = store.get(task.id)
    with pytest.raises(Conflict, match=message):
        action(store, task)
    assert store.get(task.id) == before


def test_queued_order_is_priority_then_age(store: TaskStore) -> None:
    low = make_task(store, priority=-5, start=True)
    first = make_task(store, start=True)
    urgent = make_task(store, priority=10, start=True)
    second = make_task(store, start=True)
    make_task(store)  # CREATED: not waiting
    assert [t.id for t in store.queued()] == [urgent.id, first.id, second.id, low.id]


def test_the_scheduler_sees_each_projects_first_tasks_however_long_another_queue_is(store: TaskStore) -> None:
    flood = [make_task(store, priority=9, start=True, project="busy") for _ in range(5)]
    quiet = make_task(store, priority=-1, start=True, project="quiet")
    assert [t.id for t in store.queued(limit=3)] == [*(t.id for t in flood[:3]), quiet.id]
    assert len(store.queued(limit=100)) == 6


def test_idempotency_key_returns_the_same_task(store: TaskStore) -> None:
    first = make_task(store, idempotency_key="k1")
    assert make_task(store, idempotency_key="k1").id == first.id
    assert store.counts()["total"] == 1
    with pytest.raises(Conflict, match="different template or parameters"):
        make_task(store, idempotency_key="k1", params={"epochs": 9})


def test_cancel_queued_at_once_and_running_on_request(store: TaskStore) -> None:
    queued = make_task(store, start=True)
    assert store.cancel(queued.id).state == CANCELLED
    running = make_task(store, start=True)
    store.claim(running.id, "job")
    marked = store.cancel(running.id)
    assert marked.state == RUNNING and marked.cancel_requested
    # the stopped job ends FAILED from its own point of view; the task says CANCELLED
    assert store.finish(running.id, FAILED, error="SIGTERM").state == CANCELLED


def test_interrupted_task_is_requeued_while_it_has_retries(store: TaskStore) -> None:
    task = make_task(store, start=True, max_retries=1)
    store.claim(task.id, "job-a")
    again = store.interrupt(task.id, "job-a is gone")
    assert (again.state, again.error_reason, again.ray_job_id) == (QUEUED, REASON_INTERRUPTED, None)
    store.claim(task.id, "job-b")
    failed = store.interrupt(task.id, "job-b is gone")
    assert (failed.state, failed.error_reason, failed.attempts) == (FAILED, REASON_INTERRUPTED, 2)


def test_queries_and_counts(store: TaskStore) -> None:
    a = make_task(store, template="cnn-classification")
    b = make_task(store, template="text-classification", start=True)
    c = make_task(store, start=True)
    store.claim(c.id, "j")
    assert [t.id for t in store.list()] == [c.id, b.id, a.id]
    assert [t.id for t in store.list(states=[QUEUED, RUNNING])] == [c.id, b.id]
    assert [t.id for t in store.list(template="text-classification")] == [b.id]
    assert [t.id for t in store.list(since=b.created_at)] == [c.id, b.id]
    assert [t.id for t in store.list(until=b.created_at)] == [a.id]
    assert [t.id for t in store.list(limit=1, offset=1)] == [b.id]
    counts = store.counts()
    assert (counts["waiting"], counts["running"], counts["finished"], counts[CREATED]) == (1, 1, 0, 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.get("nope"), "Task 'nope' not found"),
        (lambda s: s.list(states=["DONE"]), "Unknown task state 'DONE'"),
        (lambda s: s.list(limit=0), "limit must be between 1"),
        (lambda s: make_task(s, priority=101), "priority must be an integer from -100 to 100"),
        (lambda s: make_task(s, max_retries=-1), "max_retries must be >= 0"),
    ],
)
def test_bad_input_names_the_problem(store: TaskStore, call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((InvalidArgument, NotFound), match=message):
        call(store)
    assert store.counts()["total"] == 0


def test_everything_survives_reopening(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.sqlite")
    task = make_task(store, start=True, idempotency_key="key")
    store.claim(task.id, "job")
    store.report_progress(task.id, {"epoch": 1, "epochs": 1, "train_loss": 0.3})
    store.close()
    reopened = TaskStore(tmp_path / "tasks.sqlite")
    assert reopened.get(task.id).state == RUNNING
    assert reopened.metrics_history(task.id) == [{"epoch": 1, "epochs": 1, "train_loss": 0.3}]
    assert make_task(reopened, idempotency_key="key").id == task.id


def test_pages_by_cursor_over_several_states_in_order(store: TaskStore) -> None:
    made = [
        make_task(store, start=i % 3 == 0, running=i % 3 == 1, running_job_id=f"job-{i}" if i % 3 == 1 else None)
        for i in range(14)
    ]
    wanted = [t.id for t in reversed(made) if t.state in (CREATED, RUNNING)]
    pages, before = [], None
    while True:
        page = store.list(states=[RUNNING, CREATED, RUNNING], limit=4, before=before)
        pages.extend(t.id for t in page)
        if len(page) < 4:
            break
        before = page[-1].id
    assert pages == wanted
    assert [t.id for t in store.list(states=[CREATED, RUNNING], limit=3, offset=3)] == wanted[3:6]
    assert [t.id for t in store.list(limit=5, before=made[5].id)] == [t.id for t in reversed(made[:5])]
    with pytest.raises(InvalidArgument, match="not a task id"):
        store.list(before="nope")


@pytest.mark.parametrize(
    "filters, index",
    [
        ({"states": [QUEUED]}, "tasks_by_state"),
        ({"states": [QUEUED, RUNNING, FAILED]}, "tasks_by_state"),
        ({"template": "cnn-classification"}, "tasks_by_template"),
    ],
)
def test_every_filter_reads_an_index(store: TaskStore, filters: dict, index: str) -> None:  # type: ignore[type-arg]
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.list(limit=50, **filters)
    store._db.set_trace_callback(None)
    select = next(s for s in statements if s.startswith("SELECT * FROM (SELECT"))
    plan = [row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {select}")]
    scans = [step for step in plan if "tasks" in step]
    assert scans and all(f"USING INDEX {index}" in step for step in scans), plan
