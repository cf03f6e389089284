"""A Train worker's loop runs at normal priority where it may (Ray starts workers at nice 15)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SCRIPT = """
import os, threading
os.setpriority(os.PRIO_PROCESS, 0, 15)                 # as Ray starts a worker
started = threading.Event()
other = threading.Thread(target=started.wait, daemon=True); other.start()   # a thread already there
from aiplatform.training.template import normal_priority
normal_priority()
later = []
threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0))).start()   # started after
import time; time.sleep(0.2)
print(os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, other.native_id), later[0])
started.set()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_every_thread_of_the_worker_returns_to_nice_0_when_permitted() -> None:
    if os.geteuid() != 0:
        pytest.skip("raising a priority needs CAP_SYS_NICE")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.split() == ["0", "0", "0"], out.stdout + out.stderr
