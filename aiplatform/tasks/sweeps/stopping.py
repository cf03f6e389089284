"""How a sweep's job stops: ``ray job stop`` sends SIGTERM, but Tune saves its state and ends
``fit`` only on SIGINT or SIGUSR1. SIGTERM is passed on as SIGUSR1 while Tune runs, and remembered
in any case (a stop between segments ends the sweep before the next one, and a trial killed by
the stop is paused, not failed)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOPPING = threading.Event()
"""Set once the job was asked to stop."""
_FITTING = threading.Event()


def stop_on_sigterm() -> threading.Event:
    """Install the SIGTERM handler (in the main thread only, where Python allows it); the event
    says whether a stop came."""

    def forward(signum: int, frame: Any) -> None:
        STOPPING.set()
        if _FITTING.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)
    return STOPPING


@contextmanager
def fitting() -> Iterator[None]:
    """While Tune's ``fit`` runs, a stop is forwarded to it."""
    _FITTING.set()
    try:
        yield
    finally:
        _FITTING.clear()
