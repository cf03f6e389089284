"""The fault table's actor row: the queue, registry, result-store and alert actors are killed
over and over (Ray restarts each from its SQLite file) while 1,000 tasks are submitted and 1,000
predictions are made through the gateway: nothing acknowledged is lost or duplicated.

Clients behave as the platform's clients do: a task submission carries an idempotency key and
is retried with the same key; a prediction answered 503 is retried after Retry-After."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray

from aiplatform.alerting.actor import AlertClient
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.settings import Settings
from aiplatform.tasks.queue import TaskClient
from tests.factories import (
    fault_table_figure,
    platform_settings,
    register_versions,
    served_platform,
)

SUBMISSIONS = 500
PREDICTIONS = 500
CLIENTS = 8
KILL_EVERY_S = 0.5  # between an actor answering again and the next kill
RETRIES = 20
KILLS_WAIT_S = 300
"""How long the load waits for the next kill (a restart takes seconds on a slow machine)."""


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    with platform_settings(tmp_path_factory.mktemp("faults"), "faults") as settings:
        register_versions(settings, "steady", count=1)
        with served_platform(settings) as url:
            yield url, settings


def _with_retries(request: Callable[[], httpx.Response], counters: dict[str, int]) -> httpx.Response:
    for _ in range(RETRIES):
        try:
            response = request()
        except httpx.HTTPError:
            counters["connection_retries"] += 1
            time.sleep(0.2)
            continue
        if response.status_code != 503:
            return response
        counters["retries_503"] += 1
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError("a request kept failing after every retry")


def test_actors_killed_repeatedly_lose_and_duplicate_nothing(platform: tuple[str, Settings]) -> None:
    url, settings = platform
    handles = {
        "task-queue": TaskClient.connect(settings).handle,
        "registry": RegistryClient.connect(settings).handle,
        "result-store": ResultClient.connect(settings).handle,
        "alert-engine": AlertClient.connect(settings).handle,
    }
    kills: dict[str, int] = dict.fromkeys(handles, 0)
    killed = threading.Condition()  # notified at every kill: the clients' load goes on in step with it
    stop = threading.Event()

    def killer() -> None:
        # The next kill waits until the last actor killed answers again, then KILL_EVERY_S: on a
        # slow machine a restart (a fresh worker process reloading its SQLite file) takes seconds,
        # and kills at a fixed pace would keep every actor restarting and no request answered.
        names = list(handles)
        index = 0
        while not stop.wait(KILL_EVERY_S):
            name = names[index % len(names)]
            ray.kill(handles[name], no_restart=False)
            with killed:
                kills[name] += 1
                killed.notify_all()
            index += 1
            while not stop.is_set():
                try:
                    ray.get(handles[name].ping.remote(), timeout=60)
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    stop.wait(0.2)

    counters = {"connection_retries": 0, "retries_503": 0}
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 1)).tolist()
    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=CLIENTS * 2)) as api:

        def submit(i: int) -> str:
            key = f"{run}-{i}"
            response = _with_retries(
                lambda: api.post(
                    "/v1/tasks",
                    json={"template": "cnn-classification", "params": {"epochs": 1}, "idempotency_key": key},
                ),
                counters,
            )
            assert response.status_code == 201, response.text
            return response.json()["id"]

        def predict(i: int) -> str:
            response = _with_retries(lambda: api.post("/v1/models/steady/predict", json={"array": image}), counters)
            assert response.status_code == 200, response.text
            return response.json()["request_id"]

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            # The load comes in one chunk per actor, each sent as the previous kill lands, and the
            # run ends only after every actor was killed once: however fast this machine answers,
            # each actor restarts under requests (a load that outran the kills proved nothing).
            task_futures, prediction_futures = [], []
            with ThreadPoolExecutor(CLIENTS) as pool:
                for chunk in range(len(handles)):
                    with killed:
                        assert killed.wait_for(
                            lambda chunk=chunk: sum(kills.values()) >= chunk, timeout=KILLS_WAIT_S
                        ), kills
                    task_futures += [pool.submit(submit, i) for i in range(SUBMISSIONS)[chunk :: len(handles)]]
                    prediction_futures += [pool.submit(predict, i) for i in range(PREDICTIONS)[chunk :: len(handles)]]
                with killed:
                    assert killed.wait_for(lambda: all(kills.values()), timeout=KILLS_WAIT_S), kills
                task_ids = [f.result() for f in task_futures]
                request_ids = [f.result() for f in prediction_futures]
        finally:
            stop.set()
            thread.join()
        seconds = time.monotonic() - started

    assert all(kills.values()), kills
    # Tasks: each submission acknowledged once, each stored once, none lost.
    assert len(set(task_ids)) == SUBMISSIONS
    queue = TaskClient.connect(settings)
    everything = queue.list(limit=1000) + queue.list(limit=1000, offset=1000)
    stored = [t for t in everything if (t.idempotency_key or "").startswith(run)]
    assert len(stored) == SUBMISSIONS and {t.id for t in stored} == set(task_ids)
    # Predictions: every answered request is in the result store, once.
    assert len(set(request_ids)) == PREDICTIONS
    results = ResultClient.connect(settings)
    deadline = time.monotonic() + 60
    while results.count("steady") < PREDICTIONS and time.monotonic() < deadline:
        time.sleep(0.5)
    kept = [r.id for r in results.query(model="steady", limit=1000)]
    assert results.count("steady") == PREDICTIONS and set(kept) == set(request_ids)
    # The registry and the alert engine came back with their state.
    assert RegistryClient.connect(settings).resolve("steady", "production").version == 1
    AlertClient.connect(settings).status()
    fault_table_figure(
        "actors",
        f"{sum(kills.values())} kills {kills} during {SUBMISSIONS} submissions and "
        f"{PREDICTIONS} predictions in {seconds:.1f} s; retries {counters}; lost 0, duplicated 0",
    )


def _tiny_outcome(run_name: str) -> Any:
    """What a finished training run hands the model manager (a small CNN's real weights)."""
    from aiplatform.datasets import DatasetVersion
    from aiplatform.networks.architectures import build_model
    from aiplatform.preprocessing import image_preprocessing
    from aiplatform.training.engine import TrainingOutcome

    architecture = {
        "type": "cnn",
        "in_channels": 1,
        "image_size": 8,
        "num_classes": 3,
        "conv_channels": [64],
        "hidden_units": 512,
    }  # ~1 MB of weights: an upload that takes a moment
    dataset = DatasetVersion(
        {
            "name": "digits",
            "version": "v1",
            "labels": ["0", "1", "2"],
            "content_hash": "c0ffee",
            "image": {"height": 8, "width": 8, "channels": 1},
            "splits": {},
        }
    )
    return TrainingOutcome(
        template="cnn-classification",
        params={"epochs": 1},
        dataset=dataset,
        architecture=architecture,
        preprocessing=image_preprocessing(8, 8, 1, 0.1, 0.3),
        state_dict=build_model(architecture).state_dict(),
        history=[],
        test_metrics={"test_accuracy": 0.9, "test_macro_f1": 0.9, "test_loss": 0.1, "test_samples": 10},
        run_name=run_name,
        checkpoint_uri="s3://none",
        used_gpu=False,
    )


def test_s3_stopping_during_a_package_upload_never_leaves_the_registry_pointing_at_it(tmp_path: Path) -> None:
    import s3fs
    from moto.server import ThreadedMotoServer

    from aiplatform.errors import AIPError, Unavailable
    from aiplatform.packaging import load_package
    from aiplatform.registry import RegistryStore
    from aiplatform.storage import open_storage
    from aiplatform.training.publish import publish_model
    from tests.factories import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint}).mkdir("fault-table")
    storage = open_storage(
        "s3://fault-table/aip", endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing"
    )
    registry = RegistryStore(tmp_path / "registry.sqlite", storage)
    outcome = _tiny_outcome("run-s3-outage")
    attempts = []
    try:
        # The store goes away mid-upload: the package's bytes are written, then S3 stops before
        # its digest is. The model manager fails with a clear error and registers nothing.
        write = storage._write_atomic

        def write_then_stop(path: str, data: bytes) -> None:
            write(path, data)
            if path.endswith(".zip"):
                server.stop()

        storage._write_atomic = write_then_stop  # type: ignore[method-assign]
        with pytest.raises(Unavailable, match="Storage at s3://fault-table/aip cannot be reached") as failure:
            publish_model(outcome, name="s3-model", storage=storage, registry=registry)
        attempts.append(str(failure.value))
        storage._write_atomic = write  # type: ignore[method-assign]
        assert registry.list_models() == []

        # S3 is back: the half-written package (bytes without their digest) is there, and the
        # registry refuses it.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        [partial] = list(storage.find_unsealed("packages/s3-model"))
        with pytest.raises(AIPError, match="not found in storage|upload it before registering"):
            registry.register_version("s3-model", package_key=partial, sha256="0" * 64, template="cnn-classification")
        assert registry.list_models() == []

        # The retry (the task run again) registers a package that verifies.
        version = publish_model(outcome, name="s3-model", storage=storage, registry=registry)
        assert version.version == 1
        package = load_package(storage.get_bytes(version.package_key))
        assert package.labels == ["0", "1", "2"]
        again = publish_model(outcome, name="s3-model", storage=storage, registry=registry)
        assert again.version == 1  # the same run name: not registered twice
    finally:
        registry.close()
        server.stop()
    fault_table_figure(
        "storage",
        f"upload during an S3 outage failed clearly ({attempts[0][:90]}...); registry "
        "empty; a partial package refused; the retry registered v1 and its package verifies",
    )
