"""The platform on a Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``: a
head and two worker nodes, each with its own raylet and object store): the platform's actors on
the head, training and serving spread over nodes, and a node lost during training and under
serving load.

These tests start a Ray of their own, so tests/conftest.py runs them before anything starts the
session's single-node Ray (and they refuse to run inside it).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from aiplatform.alerting.actor import AlertClient
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.runtime import local_runtime_env
from aiplatform.settings import Settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import SUCCEEDED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import ensure_scheduler
from tests.factories import (
    fault_table_figure,
    free_port,
    platform_settings,
    register_versions,
    served_platform,
    wait_for,
    wait_for_task,
)

BODY = {"array": [[0, 255], [255, 0]]}
NODE_CPUS = 2
WORKERS_WAIT_S = 600


class ThreeNodes:
    """The cluster and the ids of its nodes."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    def worker_node(self, node_id: str) -> Any:
        return next(node for node in self.cluster.worker_nodes if node.node_id == node_id)

    def lose(self, node_id: str) -> None:
        """Remove the worker node ``node_id`` at once (its processes killed), as a lost machine."""
        self.cluster.remove_node(self.worker_node(node_id), allow_graceful=False)

    def add_worker(self) -> None:
        self.cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=300 * 1024**2)
        self.cluster.wait_for_nodes()

    def restore(self) -> None:
        """Add worker nodes until there are two again (after a test removed one)."""
        while len(self.cluster.worker_nodes) < 2:
            self.add_worker()


@pytest.fixture(scope="module")
def cluster_nodes() -> Iterator[ThreeNodes]:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.fail(
            "the multi-node tests need a Ray of their own; run them first (tests/conftest.py orders "
            "them) or on their own: scripts/test.sh tests/multinode"
        )
    temp_dir = Path("/tmp") / f"aip-multinode-{os.getpid()}"
    # Cluster records its address in Ray's default temp dir, which a fresh machine does not have.
    os.makedirs(os.path.dirname(ray._common.utils.get_ray_address_file(None)), exist_ok=True)
    cluster = Cluster()
    three = ThreeNodes(cluster)
    try:
        cluster.add_node(
            num_cpus=NODE_CPUS,
            temp_dir=str(temp_dir),
            object_store_memory=300 * 1024**2,
            # The state API (where each actor runs) is served by the head's dashboard.
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=free_port(),
            # Not Ray's fixed 52365: a head left running would take it from the session's Ray,
            # whose job submissions would then all fail ("No available agent").
            dashboard_agent_listen_port=free_port(),
            # A lost node is declared dead after ~3 s instead of Ray's default ~15 s.
            _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        )
        three.restore()
        ray.init(
            address=cluster.address,
            namespace="aiplatform-multinode",
            configure_logging=False,
            runtime_env=local_runtime_env(),
        )
        yield three
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture()
def nodes(cluster_nodes: ThreeNodes) -> ThreeNodes:
    """The module's cluster with three nodes again, whatever node an earlier test lost (restored
    here rather than after each loss, so the last test's loss costs no node start)."""
    cluster_nodes.restore()
    return cluster_nodes


@pytest.fixture(scope="module")
def settings(cluster_nodes: ThreeNodes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One platform (its head actors, in one namespace) for the module's tests: a platform per test
    started five more actors on the cluster each time."""
    with platform_settings(
        tmp_path_factory.mktemp("multinode"), "multinode", train_placement="SPREAD", task_poll_interval_s=0.5
    ) as settings:
        yield settings


def _alive_actor_nodes(class_name_part: str) -> list[str]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False)
    return [a.node_id for a in actors if class_name_part in a.class_name]


def _two_train_worker_nodes() -> list[str] | None:
    """The nodes of a run's two Ray Train workers, once both are alive."""
    found = _alive_actor_nodes("RayTrainWorker")
    return found if len(found) == 2 else None


def test_the_platform_actors_live_on_the_head(nodes: ThreeNodes, settings: Settings) -> None:
    TaskClient.connect(settings).counts()
    RegistryClient.connect(settings).list_models()
    ResultClient.connect(settings).query(limit=1)
    AlertClient.connect(settings).query(limit=1)
    ensure_scheduler(settings)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}  # local-only: loopback
    placed = {
        name: _alive_actor_nodes(name)
        for name in ("TaskActor", "RegistryActor", "ResultActor", "AlertActor", "SchedulerActor")
    }
    assert all(placed.values()), placed
    assert {node for where in placed.values() for node in where} == {nodes.head_id}, placed


def test_a_training_task_spreads_its_workers_and_survives_losing_a_node(nodes: ThreeNodes, settings: Settings) -> None:
    """A platform task (queue -> scheduler -> Ray job on the head) trains with 2 workers placed
    SPREAD; the worker node of one is removed after the first epoch's checkpoint."""
    ensure_scheduler(settings)
    manager = TaskManager(TaskClient.connect(settings), RayJobs(settings), settings)
    task = manager.create(
        "cnn-classification",
        {"epochs": 4, "workers": 2, "max_rows": 3000, "batch_size": 32, "conv_channels": [8, 16]},
        model_name="multinode-cnn",
        start=True,
    )

    def workers_placed() -> list[str] | None:
        found = _two_train_worker_nodes()
        if found is None and manager.queue.get(task.id).finished:  # no point waiting on
            raise AssertionError(f"the task ended before both workers ran: {manager.queue.get(task.id)}")
        return found

    # The job's driver builds the dataset before Ray Train starts its workers: minutes on a slow
    # machine (over 240 s with the suite's CPU quota at one core, scripts/test-throttled.sh).
    worker_nodes = wait_for(workers_placed, WORKERS_WAIT_S, "two Ray Train workers")
    assert len(set(worker_nodes)) == 2, f"both workers on one node: {worker_nodes}"
    # Each epoch's report carries its checkpoint: epoch 1 reported = a checkpoint to resume from.
    reported = wait_for_task(
        manager.queue, task.id, lambda t: t.finished or (t.progress or {}).get("epoch", 0) >= 1, 300
    )
    assert not reported.finished, f"the task ended before a node could be lost: {reported}"
    lost = next(node for node in worker_nodes if node != nodes.head_id)
    lost_at = time.monotonic()
    nodes.lose(lost)
    done = wait_for_task(manager.queue, task.id, lambda t: t.finished, 480)
    recovered_in = time.monotonic() - lost_at
    assert done.state == SUCCEEDED, (done.error, manager.logs(task.id)[-3000:])
    history = manager.queue.metrics_history(task.id)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    resumed = history[-1]["resumed_from_epoch"]
    assert resumed >= 1, "the run restarted from scratch"
    assert done.result["test_accuracy"] > 0.7
    fault_table_figure(
        "multinode-train",
        f"a training task's 2 workers on 2 nodes; the worker node of one removed "
        f"after a checkpoint; resumed from epoch {resumed}, SUCCEEDED with 4/4 epochs "
        f"{recovered_in:.0f} s after the loss, test accuracy {done.result['test_accuracy']:.4f}",
    )


def test_serve_replicas_spread_and_requests_continue_when_a_node_is_lost(nodes: ThreeNodes, settings: Settings) -> None:
    settings = settings.model_copy(
        update={"serve_min_replicas": 2, "serve_max_replicas": 2, "serve_gateway_replicas": 2}
    )
    register_versions(settings, "tiny")
    with served_platform(settings) as url:
        servers = _alive_actor_nodes(f"ServeReplica:{settings.serve_app_name}:ModelServer")
        gateways = _alive_actor_nodes(f"ServeReplica:{settings.serve_app_name}:Gateway")
        assert len(servers) == 2 and len(set(servers)) == 2, f"model servers not spread: {servers}"
        answers: list[tuple[float, int, float]] = []  # (finished at, status, seconds taken)
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        status = client.post("/v1/models/tiny/predict", json=BODY).status_code
                    except httpx.HTTPError:
                        status = 0
                    answers.append((time.monotonic(), status, time.monotonic() - started))

        threads = [threading.Thread(target=load) for _ in range(8)]
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(1 for _, s, _ in answers if s == 200) >= 50, 120, "50 answers before the loss")
        lost = next(node for node in servers if node != nodes.head_id)
        lost_at = time.monotonic()
        nodes.lose(lost)
        try:  # requests in flight on the lost node wait until Ray declares it dead, then are resent
            wait_for(
                lambda: sum(1 for t, s, _ in answers if t > lost_at + 1 and s == 200) >= 300,
                120,
                "300 answers after the node was lost",
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        failed = [s for _, s, _ in answers if s != 200]
        lost_gateway = lost in gateways
        after = [a for a in answers if a[0] > lost_at]
        longest = max(seconds for _, _, seconds in after)
        assert all(s == 200 for _, s, _ in after[-len(after) // 2 :]), "requests still failing after the loss"
        # Only requests in flight at the loss may fail (one per client at most): those a gateway
        # replica on the lost node was answering (Serve's proxy answers them 500; what reached a
        # lost model server is resent by the gateway). Nothing sent afterwards fails.
        failed_after = [t for t, s, seconds in answers if s != 200 and t - seconds > lost_at + 1]
        assert len(failed) <= len(threads) and not failed_after, (
            f"{len(failed)} of {len(answers)} failed ({set(failed)}), {len(failed_after)} sent after the loss"
        )
        hosted = "a model server and a gateway" if lost_gateway else "a model server"
        fault_table_figure(
            "multinode-serve",
            f"model servers on {len(set(servers))} nodes, gateways on "
            f"{len(set(gateways))}; a worker node hosting {hosted} removed under 8 clients: "
            f"{len(failed)} of {len(answers)} requests failed, {len(after)} answered after the loss, "
            f"the longest waited {longest:.1f} s",
        )
