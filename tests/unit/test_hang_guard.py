"""The suite's hang guard (tests/conftest.py): a test that outlives its pytest-timeout (here one
that swallows the timeout's exception, as a thread stuck in native code never sees it) gets every
thread's stack printed and the run ended, instead of holding CI until its limit in silence."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_test_past_its_timeout_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    stuck = tmp_path / "test_stuck.py"
    stuck.write_text(
        textwrap.dedent("""
        import time
        import pytest

        @pytest.mark.timeout(1)
        def test_stuck():
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    time.sleep(0.1)
                except BaseException:
                    pass

        def test_after():
            pass
    """)
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "-q",
            "--rootdir",
            str(tmp_path),
            str(stuck),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "AIP_TESTS_HANG_MARGIN_S": "2"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Timeout (0:00:03)!" in output and "in test_stuck" in output, output[-3000:]
    assert "test_after" not in output  # the run ended there
