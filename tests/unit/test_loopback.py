"""The setup hook that keeps Serve's gRPC servers on loopback: it patches Serve only in processes
that import it, so the workers that never serve pay nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit


def run(code: str, local_only: str) -> str:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": local_only}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


CHECK = """
    import sys
    from aiplatform.serving.loopback import keep_serve_on_loopback
    keep_serve_on_loopback()
    print("serve loaded by the hook:", "ray.serve" in sys.modules)
    from ray.serve._private import default_impl, replica
    print("patched:", getattr(default_impl.add_grpc_address, "loopback_only", False),
          getattr(replica.add_port_to_grpc_server, "loopback_only", False))
"""


def test_serve_is_patched_when_imported_and_not_imported_by_the_hook() -> None:
    assert run(CHECK, "0").splitlines() == ["serve loaded by the hook: False", "patched: True True"]


def test_a_cluster_process_is_left_as_serve_made_it() -> None:
    assert run(CHECK, "").splitlines() == ["serve loaded by the hook: False", "patched: False False"]


def test_modules_already_imported_are_patched_at_once() -> None:
    out = run(
        """
        from ray.serve._private import default_impl
        from aiplatform.serving.loopback import keep_serve_on_loopback
        keep_serve_on_loopback(); keep_serve_on_loopback()  # twice: one wrapper
        wrapped = default_impl.add_grpc_address
        print(wrapped.loopback_only, getattr(wrapped.__closure__[0].cell_contents, "loopback_only", False))
    """,
        "0",
    )
    assert out == "True False"
