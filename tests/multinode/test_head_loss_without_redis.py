"""Losing the head node without Ray's GCS fault tolerance (issue 33): Ray's control store dies
with the head, so the whole cluster starts again empty (its worker nodes too, as KubeRay and the
cluster launcher replace them); the platform comes back from its state folder and storage. A head
and two worker nodes on this machine (``ray.cluster_utils.Cluster``), all their processes
SIGKILLed at once, then a new cluster started and the platform started on it as ``aip up`` or a
RayService does.

What must hold: nothing acknowledged is lost (the clients' own records are the reference; a
prediction's record is written behind its answer, so the records of the answers given in the
moment before every node was lost may go with the gateways' buffers), the task that was running
is interrupted and re-queued by its retry policy (its Ray job is gone with the old cluster), its
lost run's log is still readable, and models are served again.

Like tests/multinode/test_cluster.py this starts a Ray of its own (tests/conftest.py runs the
multinode tests first).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from aiplatform.results import ResultClient
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.history import TaskHistory
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import RUNNING, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import fault_table_figure, free_port, platform_settings, wait_for, wait_for_task
from tests.multinode.head_loss import (
    ANSWER_WITHIN_S,
    REQUEST_KINDS,
    AcknowledgedWrites,
    Clients,
    HeadLossCluster,
    soft_wait,
    stored_result_ids,
    three_nodes,
    times_to_answer,
)

OUTAGE_S = 5.0
"""How long the cluster stays away (its replacement's start is what takes time)."""
TRAINING_PARAMS = {"epochs": 50, "workers": 1, "max_rows": 600, "batch_size": 64, "conv_channels": [4]}
"""A training task that runs until it is lost (it is cancelled once it runs again)."""
UNFLUSHED_WINDOW_S = 5.0
"""A prediction's record is written behind its answer (``aiplatform.results.actor.ResultWriter``:
the request path never waits on the head): when every node is lost at once, the records still in
the gateways' buffers go with them. Those of answers older than this must all be stored."""
TASK_WAIT_S = 600
"""A task's Ray job starting on the 2-core machine shared with the cluster and the replicas."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[HeadLossCluster]:
    if ray.is_initialized():
        pytest.fail(
            "the multi-node tests need a Ray of their own; run them first (tests/conftest.py orders "
            "them) or on their own: scripts/test.sh tests/multinode"
        )
    with three_nodes() as nodes:
        yield nodes


def test_a_cluster_restarted_after_losing_its_head_recovers_the_platform_from_its_state_folder(
    cluster: HeadLossCluster, tmp_path: Path
) -> None:
    from serve_apps.app import start_app

    nodes = cluster
    with platform_settings(
        tmp_path,
        "headloss-noredis",
        serve_min_replicas=1,
        serve_max_replicas=1,
        serve_gateway_replicas=1,
        task_log_archive_interval_s=1.0,  # the running task's log copied to storage every second
    ) as settings:
        acknowledged = AcknowledgedWrites(settings)
        ensure_scheduler(settings)
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        training = manager.create("cnn-classification", TRAINING_PARAMS, max_retries=1, start=True)
        port = free_port()
        url = start_app(settings, port, 0)
        running = wait_for_task(
            manager.queue,
            training.id,
            lambda t: t.finished or (t.ray_job_id and manager.jobs.state(t.ray_job_id).status == "RUNNING"),
            TASK_WAIT_S,
        )
        assert running.state == RUNNING, running
        lost_job = running.ray_job_id
        history = TaskHistory(storage_from_settings(settings), settings.task_log_archive_max_bytes)
        started_line = f"task {training.id} ("  # what jobs.train prints first
        wait_for(
            lambda: any(started_line in log.text for log in history.logs(training.id)),
            TASK_WAIT_S,
            "the running task's log copied to storage",
        )
        with Clients(url, clients=2) as clients:
            wait_for(
                lambda: _answered_before(clients, time.monotonic() - UNFLUSHED_WINDOW_S) >= 100,
                120,
                f"100 predictions answered over {UNFLUSHED_WINDOW_S:.0f} s before the loss",
            )
            lost_at = time.monotonic()  # when the loss begins (the kill itself takes seconds)
            killed = nodes.lose_cluster()
            time.sleep(OUTAGE_S)  # the scenario: the cluster is away this long (not a wait for work)
            restart_at = time.monotonic()
            nodes.start_head()
            nodes.start_workers()
            nodes.connect()
            # The platform started again on the new cluster (`aip up`, or KubeRay deploying the
            # RayService's Serve config): its head actors reopen their SQLite files.
            ensure_scheduler(settings)
            start_app(settings, port, 0)
            started_s = time.monotonic() - restart_at
            back_in = times_to_answer(url, restart_at, 2 * ANSWER_WITHIN_S)
        failed = [p for p in clients.predictions if p[2] != 200]
        summary = (
            f"{killed} processes of the head and both worker nodes SIGKILLed; the cluster away {OUTAGE_S:.0f} s; "
            f"the new cluster and the platform on it started in {started_s:.1f} s; every kind of request "
            f"answering after (s from the new head's start) {back_in}; predictions failed while the "
            f"cluster was away {len(failed)} of {len(clients.predictions)}"
        )
        print("\nHEAD-LOSS-NO-REDIS", summary)
        assert set(back_in) == set(REQUEST_KINDS) and max(back_in.values()) <= ANSWER_WITHIN_S, summary
        # Nothing acknowledged is lost: the state folder is the reference, not Ray.
        created, missing_tasks = acknowledged.missing_tasks(settings, clients)
        results = ResultClient.connect(settings)
        answered = [(done, rid) for _, done, status, rid in clients.predictions if status == 200 and rid]
        predicted = [rid for done, rid in answered if done < lost_at]
        settled = {rid for done, rid in answered if done < lost_at - UNFLUSHED_WINDOW_S}
        soft_wait(lambda: settled <= stored_result_ids(results), 30)
        stored = stored_result_ids(results)
        missing_results = sorted(set(predicted) - stored)
        missing_settled = sorted(settled - stored)
        oldest_missing = min((done for done, rid in answered if rid in set(missing_results)), default=lost_at)
        unflushed = f" (answered in its last {lost_at - oldest_missing:.1f} s)" if missing_results else ""
        # The running task: its job went with the old cluster; interrupted, re-queued, running again.
        queue = TaskClient.connect(settings)
        again = wait_for_task(queue, training.id, lambda t: t.finished or t.attempts >= 2, TASK_WAIT_S)
        manager = TaskManager(queue, RayJobs(settings), settings)
        manager.cancel(training.id)
        fault_table_figure(
            "head-loss-no-gcs-ft",
            f"{summary}; {len(created)} task creations acknowledged, {len(missing_tasks)} missing; "
            f"{len(predicted)} predictions answered before the loss, {len(missing_results)} of their results "
            f"missing{unflushed}, {len(missing_settled)} of the {len(settled)} answered over "
            f"{UNFLUSHED_WINDOW_S:.0f} s before it; the running task re-queued and started again (attempt {again.attempts}, Ray job "
            f"{again.ray_job_id})",
        )
        assert not missing_tasks, f"{len(missing_tasks)} acknowledged tasks lost: {missing_tasks[:5]}"
        assert settled and not missing_settled, f"{len(missing_settled)} of {len(settled)} settled results lost"
        assert again.attempts == 2 and again.ray_job_id == f"aip-task-{training.id}-2", again
        assert lost_job == f"aip-task-{training.id}-1"
        # The lost run's log, gone from Ray with the old cluster, is read from storage.
        assert manager.jobs.state(lost_job) is None
        lost_log = next(log for log in history.logs(training.id) if log.attempt == 1)
        assert started_line in lost_log.text, lost_log.text[-2000:]


def _answered_before(clients: Clients, moment: float) -> int:
    return sum(1 for _, done, status, _ in list(clients.predictions) if status == 200 and done < moment)
