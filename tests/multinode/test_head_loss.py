"""Losing the head node with Ray's GCS fault tolerance (issue 33): a head and two worker nodes on
this machine (``ray.cluster_utils.Cluster``), Ray's control store (GCS) kept in a real Redis
server on loopback, the platform's head actors keeping their SQLite files in the state folder.
The head's processes are all SIGKILLed at once (a lost machine), then the head is started again
with the same Redis and state folder.

Clients use the gateway replicas' own listener (``aiplatform.serving.ingress``), which every
gateway replica binds on its node: Serve's proxy runs on the head only and dies with it. The
replicas here are all on the worker nodes (the head has no CPUs for them, as production heads are
configured). Inference answers during the outage: the gateways' routers keep their last
resolutions while the registry on the head cannot answer (``aiplatform.serving.router``).

Like tests/multinode/test_cluster.py this starts a Ray of its own (tests/conftest.py runs the
multinode tests first).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from aiplatform.results import ResultClient
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import RUNNING, SUCCEEDED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import (
    TINY_CNN_PARAMS,
    fault_table_figure,
    free_port,
    platform_settings,
    wait_for,
    wait_for_task,
)
from tests.multinode.head_loss import (
    ANSWER_WITHIN_S,
    CLIENTS,
    REDIS_SERVER,
    REQUEST_KINDS,
    AcknowledgedWrites,
    Clients,
    HeadLossCluster,
    environment,
    redis_server,
    serve_replicas,
    soft_wait,
    stored_result_ids,
    three_nodes,
    times_to_answer,
)

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("CI"),
    reason="needs Debian's redis-server: scripts/install-system-packages.sh",
)

RECONNECT_TIMEOUT_S = 180
"""How long worker nodes (their raylets and workers) wait for the GCS to come back before they
exit (Ray's ``gcs_rpc_server_reconnect_timeout_s``, 60 s by default): above the outage here."""
OUTAGE_S = 20.0
"""How long the head stays away (a replacement head takes longer; the platform's behaviour
during the outage is the same after a few seconds)."""
TRAINING_PARAMS = {"epochs": 4, "workers": 1, "max_rows": 3000, "batch_size": 32, "conv_channels": [8, 16]}
"""A training task whose epochs take long enough that the head is lost between two of them."""
SWEEP_PARAMS = {
    "template": "cnn-classification",
    "params": TINY_CNN_PARAMS,
    "space": {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
    "trials": 1,
    "max_concurrent_trials": 1,
    "scheduler": {"type": "none"},
}
TASK_WAIT_S = 600
"""A training run on the 2-core machine shared with the cluster, the clients and the replicas:
minutes (the dataset is built in the job's driver before Ray Train starts)."""


@pytest.fixture(scope="module")
def head_loss_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadLossCluster]:
    if ray.is_initialized():
        pytest.fail(
            "the multi-node tests need a Ray of their own; run them first (tests/conftest.py orders "
            "them) or on their own: scripts/test.sh tests/multinode"
        )
    # The environment only while the cluster runs: the session's own Ray, started later, must not
    # use this Redis.
    with (
        redis_server(tmp_path_factory.mktemp("redis")) as redis_address,
        environment(RAY_REDIS_ADDRESS=redis_address, RAY_external_storage_namespace=uuid.uuid4().hex),
        three_nodes(RECONNECT_TIMEOUT_S) as nodes,
    ):
        yield nodes


def test_losing_the_head_loses_no_acknowledged_write_and_the_platform_answers_again(
    head_loss_cluster: HeadLossCluster, tmp_path: Path
) -> None:
    """Predictions from 4 clients and task creations through the API run before, during and after
    the head's loss; the head stays down ``OUTAGE_S``, then is started again."""
    from serve_apps.app import start_app

    nodes = head_loss_cluster
    with platform_settings(
        tmp_path, "headloss", serve_min_replicas=2, serve_max_replicas=2, serve_gateway_replicas=2
    ) as settings:
        # Acknowledged writes made by the driver before the loss: two model versions and an alias,
        # an open alert.
        acknowledged = AcknowledgedWrites(settings)
        # A training task running at the loss (it may run once more, never twice at once), and a
        # sweep queued behind it (one task runs at a time here).
        ensure_scheduler(settings)
        manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
        training = manager.create("cnn-classification", TRAINING_PARAMS, priority=5, max_retries=1, start=True)
        sweep = manager.create("sweep", SWEEP_PARAMS, priority=0, start=True)
        url = start_app(settings, free_port(), 0)
        app = settings.serve_app_name
        servers, gateways = serve_replicas(app, "ModelServer"), serve_replicas(app, "Gateway")
        head_id = nodes.cluster.head_node.node_id
        assert len(servers) == 2 and len(gateways) == 2, (servers, gateways)
        assert head_id not in {*servers.values(), *gateways.values()}, (head_id, servers, gateways)

        with Clients(url) as clients:
            wait_for(lambda: clients.answered(0) >= 50, 120, "50 predictions before the loss")
            # Each epoch's report carries its checkpoint: epoch 1 reported = a checkpoint to resume from.
            at_loss = wait_for_task(
                manager.queue, training.id, lambda t: t.finished or (t.progress or {}).get("epoch", 0) >= 1, TASK_WAIT_S
            )
            assert at_loss.state == RUNNING, f"the training task ended before the head could be lost: {at_loss}"
            assert manager.queue.get(sweep.id).state == "QUEUED"
            killed = nodes.lose_head()
            lost_at, lost_wall = time.monotonic(), time.time()
            time.sleep(OUTAGE_S)  # the scenario: the head is away this long (not a wait for work)
            raylets = nodes.worker_raylets_alive()
            restart_at = time.monotonic()
            nodes.start_head()
            head_started_s = time.monotonic() - restart_at
            back_in = times_to_answer(url, restart_at, 2 * ANSWER_WITHIN_S)
            wait_for(
                lambda: clients.answered(restart_at + max(back_in.values(), default=0)) >= 50,
                120,
                "50 predictions after the head's return",
            )
        nodes.connect()
        trained, swept, runs = _training_and_sweep_after_the_loss(settings, training.id, sweep.id, head_id, lost_wall)
        replaced = {
            name: len(set(before) - set(serve_replicas(app, name)))
            for name, before in (("Gateway", gateways), ("ModelServer", servers))
        }

        in_outage = [p for p in clients.predictions if lost_at < p[0] < restart_at]
        answered_in_outage = [p for p in in_outage if p[2] == 200 and p[1] < restart_at]
        failed = [p for p in clients.predictions if p[2] != 200]
        summary = (
            f"{killed} head processes SIGKILLed; the head away {OUTAGE_S:.0f} s, started again in "
            f"{head_started_s:.1f} s; worker raylets alive through it: {raylets}; predictions sent in the "
            f"outage {len(in_outage)}, answered in it {len(answered_in_outage)}; failed overall "
            f"{len(failed)} of {len(clients.predictions)} {sorted({p[2] for p in failed})}; every kind of "
            f"request answering again after (s from the head's start) {back_in}; replicas replaced after "
            f"the head's return {replaced}"
        )
        print("\nHEAD-LOSS", summary)
        assert all(raylets), summary
        assert set(back_in) == set(REQUEST_KINDS) and max(back_in.values()) <= ANSWER_WITHIN_S, summary
        # Every acknowledged write is there (the clients' own records are the reference).
        created, missing_tasks = acknowledged.missing_tasks(settings, clients)
        results = ResultClient.connect(settings)
        predicted = [rid for _, _, status, rid in clients.predictions if status == 200 and rid]
        # The gateways resend the result records the head's result store did not acknowledge.
        soft_wait(lambda: set(predicted) <= stored_result_ids(results), 30)
        missing_results = sorted(set(predicted) - stored_result_ids(results))
        fault_table_figure(
            "head-loss-gcs-ft",
            f"{summary}; {len(created)} task creations acknowledged, "
            f"{len(missing_tasks)} missing; {len(predicted)} predictions answered, "
            f"{len(missing_results)} of their results missing; {runs}",
        )
        assert not missing_tasks, f"{len(missing_tasks)} acknowledged tasks lost: {missing_tasks[:5]}"
        # The training task ran again from its checkpoint (never twice at once), the sweep started.
        assert trained.state == SUCCEEDED and trained.attempts == 2, (trained, runs)
        history = manager.queue.metrics_history(training.id)
        assert [m["epoch"] for m in history] == list(range(1, TRAINING_PARAMS["epochs"] + 1)), history
        assert history[-1]["resumed_from_epoch"] >= 1, f"the run restarted from scratch: {history}"
        assert swept.started_at is not None, swept
        # Inference went on from the worker nodes while the head was away: the gateways' routers
        # answered from their last resolutions (aiplatform.serving.router), and the restarted Serve
        # controller kept the gateway replicas it found (their log handlers intact).
        assert len(answered_in_outage) >= OUTAGE_S, f"inference stopped with the head: {summary}"
        assert not replaced["Gateway"], f"the restarted Serve controller replaced the gateways: {summary}"
        assert not missing_results, f"{len(missing_results)} of {len(predicted)} results lost: {missing_results[:5]}"
        # No gateway ran on the head: at most the requests in flight at the loss may fail.
        assert len(failed) <= CLIENTS, summary


def _training_and_sweep_after_the_loss(
    settings: Any, training_id: str, sweep_id: str, lost_head: str, lost_at: float
) -> tuple[Any, Any, str]:
    """After the head's return: the training task (re-queued as interrupted, it runs again and
    resumes) to its end, then the sweep queued behind it to its start, then the sweep cancelled;
    with a line saying how the runs went (their Ray jobs' start and end, none overlapping)."""
    manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
    trained = wait_for_task(manager.queue, training_id, lambda t: t.finished, TASK_WAIT_S)
    swept = wait_for_task(manager.queue, sweep_id, lambda t: t.finished or t.started_at is not None, TASK_WAIT_S)
    manager.cancel(sweep_id)
    jobs = [manager.jobs.client.get_job_info(f"aip-task-{training_id}-{attempt}") for attempt in (1, 2)]
    first, second = jobs
    # Never twice at once: the lost run's driver was on the lost head, dead before the next began.
    assert first.driver_node_id == lost_head and second.start_time / 1000 > lost_at, (first, second, lost_at)
    runs = (
        f"the training task's run lost with the head was re-queued and ran again "
        f"{second.start_time / 1000 - lost_at:.1f} s after the loss, resuming from "
        f"epoch {manager.queue.metrics_history(training_id)[-1]['resumed_from_epoch']}: {trained.state} in "
        f"{trained.attempts} attempts; the queued sweep started {swept.state}"
    )
    return trained, swept, runs
