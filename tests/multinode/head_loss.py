"""What the head-loss tests share (tests/multinode/test_head_loss*.py): a head and two worker
nodes on this machine (``ray.cluster_utils.Cluster``) whose head can be lost, all its processes
SIGKILLed at once as when its machine is lost, and started again; Debian's redis-server for Ray's
GCS fault tolerance; clients whose own records of what was acknowledged are the reference after
the head's return.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import ray

from aiplatform.alerting.actor import AlertClient
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.runtime import local_runtime_env
from aiplatform.settings import Settings
from aiplatform.tasks.queue import TaskClient
from tests.factories import TINY_CNN_PARAMS, free_port, register_versions, wait_for

REDIS_SERVER = shutil.which("redis-server")
BODY = {"array": [[0, 255], [255, 0]]}
WORKER_CPUS = 2
CLIENTS = 4
NAMESPACE = "aiplatform-head-loss"
ANSWER_WITHIN_S = 60.0
"""The issue's bound: every kind of request answers within this of the head's return."""


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port, its files in ``folder``; yields
    ``127.0.0.1:<port>`` once it answers PING, and stops it (SIGKILL, then reaped) afterwards."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            REDIS_SERVER or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=(folder / "redis.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: process.poll() is not None or pings(port), 30, f"redis-server on port {port}")
        assert process.poll() is None, (folder / "redis.log").read_text()[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=30)


def pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """``values`` in os.environ for the block (Ray's nodes read them when they start), then the
    old environment back: the session's own Ray, started later, must not use this Redis."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class HeadLossCluster:
    """A head and two worker nodes; the head (or every node) can be lost and started again with
    the same arguments (GCS port, temp folder, and with GCS fault tolerance the same Redis)."""

    def __init__(self, cluster: Any, head_args: dict[str, Any]) -> None:
        self.cluster = cluster
        self.head_args = head_args

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.head_args['gcs_server_port']}"

    def start_head(self) -> None:
        self.cluster.add_node(**self.head_args)

    def start_workers(self, count: int = 2) -> None:
        for _ in range(count):
            self.cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=300 * 1024**2)
        self.cluster.wait_for_nodes()

    def connect(self) -> None:
        ray.init(address=self.address, namespace=NAMESPACE, configure_logging=False, runtime_env=local_runtime_env())

    def lose_head(self) -> int:
        """SIGKILL every process of the head at once (GCS, raylet, dashboard and its modules,
        agents, the head's workers and actors), as when its machine is lost; returns how many.
        The driver, which reaches Ray through the head's raylet, disconnects first."""
        ray.shutdown()
        head = self.cluster.head_node
        killed = _kill_node(head)
        self.cluster.remove_node(head, allow_graceful=False)  # its bookkeeping: all are dead already
        return killed

    def lose_cluster(self) -> int:
        """The head lost without GCS fault tolerance: the worker nodes go too (a replaced head
        starts a new cluster; KubeRay and the launcher start the workers again, empty). Every
        node's processes SIGKILLed; the next head gets a new GCS address, since this process's
        clients of the old one would refuse a new cluster there (WrongClusterID)."""
        killed = self.lose_head()
        for node in list(self.cluster.worker_nodes):
            killed += _kill_node(node)
            self.cluster.remove_node(node, allow_graceful=False)
        self.cluster.global_state.disconnect()  # its client of the old GCS would wait for it, then exit
        self.head_args["gcs_server_port"] = free_port()
        return killed

    def worker_raylets_alive(self) -> list[bool]:
        return [node.all_processes["raylet"][0].process.poll() is None for node in self.cluster.worker_nodes]


def _kill_node(node: Any) -> int:
    processes: list[psutil.Process] = []
    for infos in node.all_processes.values():
        for info in infos:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(info.process.pid)
                processes += [process, *process.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)
    return len(processes)


@contextlib.contextmanager
def three_nodes(reconnect_timeout_s: float = 60) -> Iterator[HeadLossCluster]:
    """A head with no CPUs (Serve's replicas and the work go to the worker nodes; the platform's
    head actors and Serve's controller and proxy take none) and two worker nodes, connected; the
    environment (``RAY_REDIS_ADDRESS`` for GCS fault tolerance) is read when the head starts."""
    from ray.cluster_utils import Cluster

    temp_dir = Path("/tmp") / f"aip-headloss-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.makedirs(os.path.dirname(ray._common.utils.get_ray_address_file(None)), exist_ok=True)
    head_args = {
        "num_cpus": 0,
        "temp_dir": str(temp_dir),
        "object_store_memory": 300 * 1024**2,
        # The same GCS address after the restart: the worker nodes reconnect to it.
        "gcs_server_port": free_port(),
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
        "_system_config": {
            "health_check_period_ms": 1000,
            "health_check_failure_threshold": 3,
            "gcs_rpc_server_reconnect_timeout_s": reconnect_timeout_s,
        },
    }
    nodes = HeadLossCluster(Cluster(), head_args)
    try:
        nodes.start_head()
        nodes.start_workers()
        nodes.connect()
        yield nodes
    finally:
        ray.shutdown()
        nodes.cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


class Clients:
    """Prediction clients and a task-creating client through the gateway's listener; their own
    records (what was acknowledged, what failed, when) are the reference after the head's return."""

    def __init__(self, url: str, clients: int = CLIENTS) -> None:
        self.url = url
        self.predictions: list[tuple[float, float, int, str | None]] = []  # (sent, done, status, request id)
        self.creations: list[tuple[float, float, int, str | None]] = []  # (sent, done, status, task id)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._predict) for _ in range(clients)]
        self.threads.append(threading.Thread(target=self._create))

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _predict(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/v1/models/tiny/predict", json=BODY)
                    status, rid = (
                        response.status_code,
                        (response.json().get("request_id") if response.status_code == 200 else None),
                    )
                except httpx.HTTPError:
                    status, rid = 0, None
                    self.stop.wait(0.05)  # nobody listening: no busy loop on the machine's two cores
                self.predictions.append((sent, time.monotonic(), status, rid))

    def _create(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                body = {
                    "template": "cnn-classification",
                    "params": TINY_CNN_PARAMS,
                    "idempotency_key": uuid.uuid4().hex,
                }
                try:
                    response = client.post("/v1/tasks", json=body)
                    status, tid = response.status_code, (response.json()["id"] if response.status_code == 201 else None)
                except httpx.HTTPError:
                    status, tid = 0, None
                self.creations.append((sent, time.monotonic(), status, tid))
                self.stop.wait(0.2)

    def answered(self, after: float) -> int:
        return sum(1 for sent, _, status, _ in self.predictions if sent > after and status == 200)


def serve_replicas(app: str, deployment: str) -> dict[str, str]:
    """The live replicas of a deployment: actor id -> node id."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False)
    return {a.actor_id: a.node_id for a in actors if f"ServeReplica:{app}:{deployment}" in a.class_name}


def answers(url: str, method: str, path: str, **kwargs: Any) -> bool:
    try:
        return httpx.request(method, url + path, timeout=10, **kwargs).status_code in (200, 201)
    except httpx.HTTPError:
        return False


REQUEST_KINDS = {
    "predict": ("POST", "/v1/models/tiny/predict", {"json": BODY}),
    "list tasks": ("GET", "/v1/tasks?limit=1", {}),
    "create task": ("POST", "/v1/tasks", {"json": {"template": "cnn-classification", "params": TINY_CNN_PARAMS}}),
    "list models": ("GET", "/v1/models", {}),
    "list results": ("GET", "/v1/results?limit=1", {}),
    "list alerts": ("GET", "/v1/alerts?limit=1", {}),
}


def exists(get: Any, key: str) -> bool:
    from aiplatform.errors import NotFound

    try:
        get(key)
        return True
    except NotFound:
        return False


def stored_result_ids(results: ResultClient, model: str = "tiny") -> set[str]:
    from aiplatform.results.store import MAX_QUERY_LIMIT, next_cursor

    ids: set[str] = set()
    before = None
    while True:
        page = results.query(model=model, before=before, limit=MAX_QUERY_LIMIT)
        ids.update(record.id for record in page)
        if len(page) < MAX_QUERY_LIMIT:
            return ids
        before = next_cursor(page)


def soft_wait(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def times_to_answer(url: str, since: float, within_s: float) -> dict[str, float]:
    """Seconds from ``since`` until each kind of request first answers (kinds that never do
    within ``within_s`` are missing)."""
    back_in: dict[str, float] = {}
    deadline = since + within_s
    while len(back_in) < len(REQUEST_KINDS) and time.monotonic() < deadline:
        for kind, (method, path, kwargs) in REQUEST_KINDS.items():
            if kind not in back_in and answers(url, method, path, **kwargs):
                back_in[kind] = round(time.monotonic() - since, 1)
        time.sleep(0.2)
    return back_in


class AcknowledgedWrites:
    """Writes the platform acknowledged before the loss, made by the test's driver: two model
    versions (the first one ``production``) and a fired drift alert."""

    def __init__(self, settings: Settings) -> None:
        self.versions = register_versions(settings, "tiny", count=2)
        alerts = AlertClient.connect(settings)
        alerts.record_drift("tiny", {"mean_intensity": 0.9})
        fired = [a["id"] for a in alerts.evaluate_now()["fired"] if a["rule"] == "drift-significant"]
        assert fired, "no drift alert fired"
        self.alert = fired[0]

    def missing_tasks(self, settings: Settings, clients: Clients) -> tuple[list[str], list[str]]:
        """After the head's return: asserts the versions, alias and alert are there; returns the
        task creations the clients saw acknowledged, and those of them the queue lacks."""
        registry, alerts = RegistryClient.connect(settings), AlertClient.connect(settings)
        assert {v.version for v in registry.list_versions("tiny")} >= set(self.versions)
        assert registry.resolve("tiny", "production").version == self.versions[0]
        assert self.alert in {a.id for a in alerts.query(limit=100)}
        queue = TaskClient.connect(settings)
        created = [tid for _, _, status, tid in clients.creations if status == 201]
        return created, [tid for tid in created if not exists(queue.get, tid)]
