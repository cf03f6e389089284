"""The task history archive on local storage: every attempt's log kept and bounded, a shorter copy
never replacing a longer one, the record read back as the task (the integration test runs the real
thing: tests/integration/test_task_history.py)."""

from __future__ import annotations

from pathlib import Path

from aiplatform.storage import LocalStorage
from aiplatform.tasks.history import TaskHistory
from aiplatform.tasks.queue import SUCCEEDED, TaskStore
from tests.factories import make_task


def test_every_attempt_is_kept_bounded_and_never_shortened(tmp_path: Path) -> None:
    history = TaskHistory(LocalStorage(tmp_path / "artifacts"), max_log_bytes=64 * 1024)
    assert history.log("t1") is None and history.logs("t1") == []
    history.save_log("t1", 1, "first attempt\n")
    assert history.log("t1") == "first attempt\n"  # one attempt: its log as it was
    assert history.save_log("t1", 2, "second attempt\n" + "x" * 100_000)
    assert not history.save_log("t1", 1, "")  # a new head's Ray that lost the file
    text = history.log("t1") or ""
    assert text.startswith(
        "=== attempt 1 ===\nfirst attempt\n=== attempt 2 ===\n[... the first 34479 bytes of this log are not kept]\nx"
    )
    assert text.endswith("x\n") and len(history.logs("t1")[1].text) < 64 * 1024 + 100
    assert history.log("../etc") is None and history.record("../etc") is None


def test_the_record_is_read_back_as_the_task(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.sqlite")
    task = make_task(store, start=True)
    store.claim(task.id, "job-1")
    store.report_progress(task.id, {"epoch": 1, "epochs": 1, "val_accuracy": 0.5})
    done = store.finish(task.id, SUCCEEDED, result={"model": "m", "version": 1})
    history = TaskHistory(LocalStorage(tmp_path / "artifacts"), max_log_bytes=64 * 1024)
    history.save_record(done, store.metrics_history(task.id))
    assert history.task(task.id) == done
    assert history.record(task.id)["metrics_history"] == [{"epoch": 1, "epochs": 1, "val_accuracy": 0.5}]  # type: ignore[index]
    store.close()
