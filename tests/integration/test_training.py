"""Ray Train runs on the session's Ray: metrics, checkpoints, and resume after a worker dies."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray.train

from aiplatform.datasets import DatasetManager
from aiplatform.errors import Unavailable
from aiplatform.packaging import load_package
from aiplatform.registry import RegistryStore
from aiplatform.settings import Settings
from aiplatform.storage import open_storage
from aiplatform.training.catalog import get_template
from aiplatform.training.engine import run_training
from aiplatform.training.publish import publish_model
from tests.factories import fault_table_figure


def _train_worker_pids() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("RayTrainWorker" in part for part in (p.info["cmdline"] or []))
    ]


def test_killed_worker_resumes_from_checkpoint_and_finishes(ray_session: None, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    storage = open_storage(str(tmp_path / "artifacts"))
    template = get_template("cnn-classification")
    params = template.parse_params({"epochs": 4, "max_rows": 3000, "batch_size": 32, "conv_channels": [8, 16]})
    outcome: dict = {}
    marker = tmp_path / "checkpoint-reported"

    class MarkReportedCheckpoints(ray.train.UserCallback):
        """Runs in the Train controller (defined here so it pickles by value): touches a file
        once a checkpoint is registered there."""

        def after_report(self, run_context, metrics, checkpoint) -> None:  # type: ignore[no-untyped-def]
            if checkpoint is not None:
                marker.touch()

    def train() -> None:
        try:
            outcome["result"] = run_training(
                template,
                params,
                settings=settings,
                storage=storage,
                datasets=DatasetManager(storage),
                run_name="resume-test",
                callbacks=[MarkReportedCheckpoints()],
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists() and thread.is_alive():
        time.sleep(0.1)
    assert marker.exists(), "no checkpoint was reported"
    pids = _train_worker_pids()
    assert pids, "no Ray Train worker process found"
    assert thread.is_alive(), "training finished before the worker could be killed"
    for pid in pids:
        psutil.Process(pid).send_signal(signal.SIGKILL)
    thread.join(timeout=400)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    epochs = [m["epoch"] for m in result.history]
    assert epochs == list(range(1, 5))
    assert result.history[-1]["resumed_from_epoch"] >= 1, "the run restarted from scratch"
    # Each worker group reads its first epoch through Ray Data and the later ones from its memory
    # (``training.kept_shard``), the restarted one included.
    first_of_its_group = [m["epoch"] - 1 == m["resumed_from_epoch"] for m in result.history]
    assert [m["read_from_memory"] for m in result.history] == [0.0 if f else 1.0 for f in first_of_its_group]
    assert result.test_metrics["test_accuracy"] > 0.7
    fault_table_figure(
        "train-worker",
        f"killed after a checkpoint; resumed from epoch "
        f"{result.history[-1]['resumed_from_epoch']}, finished 4/4 epochs, test accuracy "
        f"{result.test_metrics['test_accuracy']:.4f}",
    )

    registry = RegistryStore(tmp_path / "state" / "registry.sqlite", storage)
    version = publish_model(result, name="resume-cnn", storage=storage, registry=registry)
    package = load_package(storage.get_bytes(version.package_key))
    assert package.manifest["lineage"]["dataset"] == result.dataset.ref
    assert package.config.preprocessing["mean"][0] == pytest.approx(
        result.dataset.manifest["profile"]["train"]["mean_intensity"], abs=1e-5
    )


def test_gpu_on_without_gpus_is_refused(ray_session: None, tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "artifacts"))
    template = get_template("cnn-classification")
    params = template.parse_params({"epochs": 1, "max_rows": 200, "gpu": "on"})
    with pytest.raises(Unavailable, match="gpu=on needs 1 GPU"):
        run_training(
            template,
            params,
            settings=Settings(home=tmp_path),
            storage=storage,
            datasets=DatasetManager(storage),
            run_name="gpu-test",
        )
