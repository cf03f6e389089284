"""`aip up` / `aip models ...` / `aip predict` / `aip down`, as a user runs them in a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import psutil

from tests.factories import free_port, png_bytes

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening_elsewhere() -> set[tuple[str, int]]:
    """Listening TCP sockets not bound to loopback."""
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.ip not in LOOPBACK}


def test_aip_up_serves_models_on_loopback_only_and_down_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIP_", "RAY_ADDRESS"))}
    http_port = free_port()
    env.update({
        "AIP_HOME": str(tmp_path), "AIP_RAY_PORT": str(free_port()), "AIP_DASHBOARD_PORT": str(free_port()),
        "AIP_HTTP_PORT": str(http_port), "AIP_RAY_NUM_CPUS": "2",
        "AIP_RAY_TEMP_DIR": f"/tmp/aip-up-{os.getpid()}", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })

    def aip(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aip", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    before = _listening_elsewhere()
    up = aip("up")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert f"http://127.0.0.1:{http_port}" in up.stdout
        assert (tmp_path / "token").stat().st_mode & 0o077 == 0
        assert _listening_elsewhere() <= before, _listening_elsewhere() - before

        # Register two versions as a training job would (a driver joining with the token).
        register = textwrap.dedent("""
            from aip.local import LOCAL_RAY_ENV
            import os; os.environ.update(LOCAL_RAY_ENV)
            from aip.local import connect_driver
            from aiplatform.registry import RegistryClient
            from aiplatform.settings import Settings
            from aiplatform.storage import sha256_bytes, storage_from_settings
            from tests.factories import make_package
            settings = Settings(); connect_driver(settings)
            registry, storage = RegistryClient.connect(settings), storage_from_settings(settings)
            for v, acc in ((1, 0.90), (2, 0.91)):
                data = make_package(name="tiny", seed=v)
                storage.put_bytes(f"packages/tiny/v{v}.zip", data)
                registry.register_version("tiny", package_key=f"packages/tiny/v{v}.zip", sha256=sha256_bytes(data),
                                          template="cnn-classification", metrics={"test_accuracy": acc})
            registry.set_alias("tiny", "production", 1)
        """)
        done = subprocess.run([sys.executable, "-c", register], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]

        listed = aip("models", "list", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        rows = json.loads(listed.stdout)
        assert sorted((r["version"], r["aliases"]) for r in rows) == [(1, ["production"]), (2, [])]

        promoted = aip("models", "promote", "tiny", "2")
        assert promoted.returncode == 0 and "production -> version 2" in promoted.stdout, promoted.stderr
        image = tmp_path / "digit.png"
        image.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)))
        predicted = aip("predict", str(image), "--model", "tiny", "--json")
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        assert json.loads(predicted.stdout)["version"] == 2

        canary = aip("models", "canary", "tiny", "1", "--weight", "25")
        assert canary.returncode == 0 and "v1 25%, v2 75%" in canary.stdout, canary.stderr
        assert "no canary" in aip("models", "canary", "tiny", "--clear").stdout
        back = aip("models", "rollback", "tiny")
        assert back.returncode == 0 and "production -> version 1" in back.stdout, back.stderr

        for args, message in [
            (("predict", str(tmp_path / "missing.png"), "--model", "tiny"), "not a readable file"),
            (("predict", str(image), "--model", "nope"), "not found"),
            (("models", "promote", "tiny", "9"), "not found"),
            (("models", "canary", "tiny", "2", "--weight", "150"), "between 0 and 100"),
        ]:
            failed = aip(*args)
            assert failed.returncode == 2 and message in failed.stderr, (args, failed.stderr[-1000:])
    finally:
        down = aip("down")
    assert down.returncode == 0 and "platform stopped" in down.stdout, down.stderr[-2000:]
    assert not (Path(env["AIP_RAY_TEMP_DIR"]) / "ray_current_cluster").exists()
    stopped = aip("models", "list", timeout=60)
    assert stopped.returncode == 2 and "aip up" in stopped.stderr
