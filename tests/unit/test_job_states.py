"""How the task manager reads a Ray job's end: a driver lost with its node is an interruption."""

from __future__ import annotations

from types import SimpleNamespace

from ray.job_submission import JobStatus

from aiplatform.tasks.ray_jobs import JobState, _error_type


def test_a_job_whose_supervisor_died_lost_its_driver_and_one_whose_command_failed_did_not() -> None:
    from ray.dashboard.modules.job.common import JobErrorType

    died = SimpleNamespace(status=JobStatus.FAILED, error_type=JobErrorType.JOB_SUPERVISOR_ACTOR_DIED)
    unfound = SimpleNamespace(status=JobStatus.FAILED, error_type=JobErrorType.JOB_SUPERVISOR_ACTOR_START_FAILURE)
    failed = SimpleNamespace(status=JobStatus.FAILED, error_type=JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR)
    for info, lost in ((died, True), (unfound, True), (failed, False)):
        state = JobState("aip-task-x-1", str(info.status), "message", _error_type(info))
        assert state.terminal and state.driver_lost is lost, state
    assert not JobState("aip-task-x-1", "SUCCEEDED", None, None).driver_lost
    assert _error_type(SimpleNamespace()) is None  # a Ray that does not say


def test_a_job_still_running_on_a_dead_node_has_ended_and_lost_its_driver() -> None:
    orphaned = JobState("aip-task-x-1", "RUNNING", "its driver's node is dead", None, driver_node_dead=True)
    assert orphaned.terminal and orphaned.driver_lost
    running = JobState("aip-task-x-1", "RUNNING", None, None)
    assert not running.terminal and not running.driver_lost
