"""A job started from a terminal prints each epoch as it lands, a line while there is none yet, and
its summary leaves out the epochs already printed."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

from aiplatform.tasks import console
from aiplatform.tasks.console import LiveProgress, epoch_line


def metrics(epoch: int) -> dict[str, float]:
    return {
        "epoch": epoch,
        "epochs": 2,
        "train_loss": 0.5 / epoch,
        "val_loss": 0.4 / epoch,
        "val_accuracy": 0.9 + epoch / 100,
        "samples_per_second": 2500.4,
    }


def test_epochs_are_printed_once_as_they_land_and_waiting_is_said(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(console, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(console, "WAITING_LINE_INTERVAL_S", 0.05)
    state = {"progress": {}}
    out = io.StringIO()
    with LiveProgress(lambda: SimpleNamespace(progress=state["progress"]), out) as live:
        time.sleep(0.2)  # no epoch yet: the dataset is being built
        state["progress"] = {"epoch": 1, "epochs": 2, "metrics": metrics(1)}
        time.sleep(0.1)
        state["progress"] = {"epoch": 2, "epochs": 2, "metrics": metrics(2)}  # lands as the run ends
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("  ... preparing the dataset and the workers (")
    epochs = [line for line in lines if line.startswith("epoch")]
    assert epochs == [epoch_line(metrics(1)), epoch_line(metrics(2))]
    assert live.printed == set(epochs)
    assert epoch_line(metrics(1)) == "epoch 1/2: train_loss=0.5000 val_loss=0.4000 val_accuracy=0.9100 samples/s=2500"


def test_a_failing_lookup_prints_nothing_and_stops_nothing() -> None:
    def broken() -> SimpleNamespace:
        raise ConnectionError("the queue actor restarts")

    out = io.StringIO()
    with LiveProgress(broken, out) as live:
        pass
    assert out.getvalue() == "" and live.printed == set()
