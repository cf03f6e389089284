"""What a training job started from a terminal prints while it runs: each epoch as it lands, and a
line every few seconds while there is none yet (the dataset is being built, the workers start), so
a first run never sits silent for minutes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from aiplatform.tasks.queue import Task

WAITING_LINE_INTERVAL_S = 10.0
POLL_INTERVAL_S = 1.0


def epoch_line(metrics: dict[str, Any]) -> str:
    """``epoch 2/3: train_loss=0.0410 val_loss=0.0330 val_accuracy=0.9890 samples/s=2511``"""
    shown = " ".join(
        f"{key}={metrics[key]:.4f}"
        for key in ("train_loss", "val_loss", "val_accuracy")
        if isinstance(metrics.get(key), (int, float))
    )
    rate = metrics.get("samples_per_second")
    rate_text = f" samples/s={rate:.0f}" if isinstance(rate, (int, float)) else ""
    return f"epoch {metrics.get('epoch')}/{metrics.get('epochs')}: {shown}{rate_text}"


class LiveProgress:
    """Follows a task's recorded progress from the job's driver and prints it to ``out``; a context
    manager: the thread stops when the block ends. ``printed`` holds the epoch lines it printed
    (the job's summary leaves those out)."""

    def __init__(
        self, get_task: Callable[[], Task], out: TextIO, what: str = "preparing the dataset and the workers"
    ) -> None:
        self._get_task = get_task
        self._out = out
        self._what = what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.printed_epochs = 0
        self.printed: set[str] = set()

    def __enter__(self) -> LiveProgress:
        self._thread = threading.Thread(target=self._follow, name="live-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._print_new_epoch()  # the last epoch may land between two polls

    def _follow(self) -> None:
        started = last_line = time.monotonic()
        while not self._stop.wait(POLL_INTERVAL_S):
            if self._print_new_epoch():
                last_line = time.monotonic()
            elif time.monotonic() - last_line >= WAITING_LINE_INTERVAL_S:
                doing = self._what if not self.printed_epochs else "training"
                self._write(f"  ... {doing} ({time.monotonic() - started:.0f} s)")
                last_line = time.monotonic()

    def _print_new_epoch(self) -> bool:
        try:
            progress = self._get_task().progress
        except Exception:
            return False
        epoch = progress.get("epoch")
        if not isinstance(epoch, int) or epoch <= self.printed_epochs:
            return False
        line = epoch_line(progress.get("metrics") or {})
        self._write(line)
        self.printed.add(line)
        self.printed_epochs = epoch
        return True

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
