"""Model servers choose torch threads per model: a forward pass over one input is timed when a model
loads, and a light model keeps one thread while a heavy one gets the replica's CPUs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from aiplatform.model_import import import_onnx
from aiplatform.packaging import build_package, load_package
from aiplatform.registry import RegistryStore
from aiplatform.serving import runner as runner_module
from aiplatform.serving.runner import ModelRunner, forward_threads
from aiplatform.storage import LocalStorage
from tests.factories import make_package, onnx_classifier
from tests.unit.test_tabular_kind import _booster, _config

OLD_PACKAGES = Path(__file__).resolve().parents[1] / "data" / "packages"


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "setting, forward_s, threads",
    [("auto", 0.0003, 1), ("auto", 0.015, 4), (1, 0.015, 1), (3, 0.0003, 3), (0, 0.0003, 4)],
)
def test_the_setting_or_the_forward_pass_cost_decides(setting, forward_s: float, threads: int) -> None:  # type: ignore[no-untyped-def]
    assert forward_threads(setting, forward_s, cpus=4) == threads


@pytest.mark.parametrize("package", ["format1-image.zip", "format1-text.zip"])
def test_a_light_model_keeps_one_thread_and_a_heavy_one_gets_the_cpus(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (OLD_PACKAGES / package).read_bytes()
    light = ModelRunner(load_package(data))
    assert light.choose_threads("auto", cpus=2) == 1 and 0 < light.forward_s < runner_module.HEAVY_FORWARD_S
    sample = light.kind.sample_batch()
    assert sample.shape[0] == 1 and light.predict(sample)[0]["label"] in light.labels

    monkeypatch.setattr(runner_module, "HEAVY_FORWARD_S", 0.0)  # every real forward pass is "heavy" now
    heavy = ModelRunner(load_package(data))
    assert heavy.choose_threads("auto", cpus=2) == 2
    assert ModelRunner(load_package(data)).choose_threads(3, cpus=2) == 3  # a number is obeyed


def test_each_model_runs_on_its_own_threads_on_the_calling_thread() -> None:
    one, two = (ModelRunner(load_package(make_package(num_classes=3))) for _ in range(2))
    one.use_threads(1)
    two.use_threads(2)
    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    seen = []

    def serve() -> None:  # a replica's event loop thread, not the one that loaded the models
        for runner in (two, one, two):
            runner.predict(images)
            seen.append(torch.get_num_threads())

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join()
    assert seen == [2, 1, 2]


def test_onnx_runtime_and_xgboost_are_given_the_threads_too(tmp_path: Path) -> None:
    _, graph = onnx_classifier(layout="NCHW", softmax=False, channels=1)
    registry = RegistryStore(tmp_path / "registry.sqlite", LocalStorage(tmp_path / "artifacts"))
    version = import_onnx(
        graph,
        name="onnx",
        kind="image",
        labels=["a", "b", "c"],
        storage=registry.storage,
        registry=registry,
        isolate=False,
        preprocessing={"scale": 1 / 255, "mean": [0.5], "std": [0.25]},
    )
    runner = ModelRunner(load_package(registry.storage.get_bytes(version.package_key)))
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    before = runner.predict_proba(images)
    runner.use_threads(2)
    assert runner.model.session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(runner.predict_proba(images), before, atol=1e-6)

    booster, _x = _booster(num_features=3, num_classes=3)
    tabular = ModelRunner(
        load_package(
            build_package(
                model_config=_config(3, 3), model_file=bytes(booster.save_raw("json")), metrics={}, lineage={}
            )
        )
    )
    assert tabular.choose_threads(2, cpus=4) == 2
    config = json.loads(tabular.model.booster.save_config())
    assert int(config["learner"]["generic_param"]["nthread"]) == 2
    assert tabular.kind.sample_batch().shape == (1, 3)


def test_a_model_that_fails_on_the_blank_input_still_loads_on_the_light_setting() -> None:
    class Refuses(torch.nn.Module):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("not on zeros")

    runner = ModelRunner(load_package(make_package(num_classes=3)))
    runner.model = Refuses()
    assert runner.choose_threads("auto", cpus=4) == 1 and runner.forward_s is None
    assert runner.choose_threads(3, cpus=4) == 3
