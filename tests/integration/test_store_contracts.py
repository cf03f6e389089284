"""Each head-node store behaves the same used directly and through its actor's client: the same
answers, the same platform errors (raised as themselves), the same idempotency. The clients are
generated from the stores' protocols (``aiplatform.runtime.ActorProxy``), so this is what keeps a
protocol, its store and its actor in step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiplatform.alerting.actor import AlertClient
from aiplatform.errors import Conflict, InvalidArgument, NotFound
from aiplatform.registry import RegistryAPI, RegistryClient, RegistryStore
from aiplatform.results import PredictionRecord, ResultClient, ResultStore
from aiplatform.results.store import ResultAPI
from aiplatform.runtime import protocol_methods
from aiplatform.storage import sha256_bytes, storage_from_settings
from aiplatform.tasks.queue import FAILED, QUEUED, RUNNING, SUCCEEDED, TaskClient, TaskStore
from aiplatform.tasks.queue.store import TaskAPI
from tests.factories import platform_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with platform_settings(tmp_path_factory.mktemp("contracts"), "contracts") as settings:
        yield settings


@pytest.fixture(params=["store", "actor"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_client_offers_exactly_its_protocol() -> None:
    for client, protocol in ((RegistryClient, RegistryAPI), (ResultClient, ResultAPI), (TaskClient, TaskAPI)):
        assert protocol_methods(protocol), protocol
        assert all(callable(getattr(client, name)) for name in protocol_methods(protocol))
    assert "evaluate_now" in protocol_methods(AlertClient.protocol)
    with pytest.raises(AttributeError):
        RegistryClient(handle=None).record_batch  # noqa: B018 - a store method outside the protocol


def registry_of(how: str, settings: Any, tmp_path: Path) -> RegistryAPI:
    if how == "store":
        return RegistryStore(tmp_path / "registry.sqlite", storage_from_settings(settings))
    return RegistryClient.connect(settings)


def test_the_registry_contract(how: str, settings: Any, tmp_path: Path) -> None:
    registry, storage = registry_of(how, settings, tmp_path), storage_from_settings(settings)
    name = f"contract-{how}"
    keys = []
    for index in range(2):
        data = f"package {how} {index}".encode()
        keys.append(f"packages/{name}/{index}.zip")
        storage.put_bytes(keys[-1], data)
    first = registry.register_version(
        name,
        package_key=keys[0],
        sha256=sha256_bytes(storage.get_bytes(keys[0])),
        template="t",
        metrics={"test_accuracy": 0.9},
        idempotency_key=f"{how}-run-1",
    )
    again = registry.register_version(
        name,
        package_key=keys[0],
        sha256=sha256_bytes(storage.get_bytes(keys[0])),
        template="t",
        idempotency_key=f"{how}-run-1",
    )
    assert again.version == first.version
    second = registry.register_version(
        name, package_key=keys[1], sha256=sha256_bytes(storage.get_bytes(keys[1])), template="t"
    )
    assert [v.version for v in registry.list_versions(name)] == [second.version, first.version]  # newest first
    assert registry.get_version(name, first.version).metrics["test_accuracy"] == 0.9
    registry.set_alias(name, "production", first.version)
    assert registry.resolve(name, "production").version == first.version
    assert registry.aliases(name) == {"production": first.version}
    assert registry.set_traffic(name, {first.version: 3, second.version: 1}) == {
        first.version: 75.0,
        second.version: 25.0,
    }
    assert registry.get_traffic(name) == {first.version: 75.0, second.version: 25.0}
    with pytest.raises(NotFound, match="version=9"):
        registry.get_version(name, 9)
    with pytest.raises(InvalidArgument, match="Alias 'Bad Alias'"):
        registry.set_alias(name, "Bad Alias", first.version)
    assert name in [m["name"] for m in registry.list_models()]


def tasks_of(how: str, settings: Any, tmp_path: Path) -> TaskAPI:
    return TaskStore(tmp_path / "tasks.sqlite") if how == "store" else TaskClient.connect(settings)


def test_the_task_queue_contract(how: str, settings: Any, tmp_path: Path) -> None:
    tasks = tasks_of(how, settings, tmp_path)
    task = tasks.create("cnn-classification", {"epochs": 1}, idempotency_key=f"contract-{how}-1")
    assert tasks.create("cnn-classification", {"epochs": 1}, idempotency_key=f"contract-{how}-1").id == task.id
    assert tasks.start(task.id).state == QUEUED
    assert task.id in [t.id for t in tasks.queued()]
    assert tasks.claim(task.id, f"job-{how}").state == RUNNING
    assert tasks.report_progress(task.id, {"epoch": 1, "train_loss": 0.5}).progress["epoch"] == 1
    assert [m["epoch"] for m in tasks.metrics_history(task.id)] == [1]
    done = tasks.finish(task.id, SUCCEEDED, result={"version": 1})
    assert done.state == SUCCEEDED and tasks.get(task.id).result == {"version": 1}
    assert task.id in [t.id for t in tasks.list(states=[SUCCEEDED])]
    assert tasks.counts()[SUCCEEDED] >= 1
    with pytest.raises(Conflict):
        tasks.finish(task.id, FAILED, error="too late")
    with pytest.raises(NotFound):
        tasks.get("no-such-task")


def results_of(how: str, settings: Any, tmp_path: Path) -> tuple[ResultAPI, Callable[[list[PredictionRecord]], Any]]:
    if how == "store":
        store = ResultStore(tmp_path / "results.sqlite")
        return store, store.record_batch
    client = ResultClient.connect(settings)
    return client, lambda records: __import__("ray").get(client.handle.record_batch.remote(records))


def test_the_result_store_contract(how: str, settings: Any, tmp_path: Path) -> None:
    results, write = results_of(how, settings, tmp_path)
    model = f"contract-{how}"
    records = [
        PredictionRecord(
            id=f"{how}-{i}",
            model=model,
            version=1 + i % 2,
            input_digest="d",
            output={"label": "a"},
            latency_ms=1.0,
            created_at=1000.0 + i,
        )
        for i in range(5)
    ]
    write(records)
    write(records[:2])  # a resent batch adds nothing
    assert results.count(model) == 5
    assert [r.id for r in results.query(model=model, limit=2)] == [f"{how}-4", f"{how}-3"]
    assert {r.version for r in results.query(model=model, version=2)} == {2}
    assert results.get(f"{how}-0").output == {"label": "a"}
    with pytest.raises(NotFound):
        results.get("no-such-result")
