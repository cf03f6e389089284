"""The Prometheus `aip up` starts beside the local head, when one is installed.

It listens on 127.0.0.1:``AIP_PROMETHEUS_PORT``, scrapes every Ray target through Ray's
service-discovery file (the same generated config as ``aip monitoring prometheus-config``), keeps
its data under the platform's state folder (so history survives `down` and `up`), and runs in a
session of its own that `aip down` stops. The Ray dashboard is pointed at it
(``RAY_PROMETHEUS_HOST``) and so is the platform's Monitoring page (``AIP_PROMETHEUS_URL``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from aip.processes import accepts_connections, recorded_alive, stop_recorded
from aiplatform.errors import Unavailable
from aiplatform.monitoring.prometheus import PrometheusClient, prometheus_yaml, service_discovery_path
from aiplatform.settings import Settings

START_TIMEOUT_S = 60
STOP_GRACE_S = 10
"""Prometheus writes its head block on SIGTERM; it gets this long before SIGKILL."""
RETENTION = "15d"
INSTALL_HINT = "install it for charts over time (Debian/Ubuntu: apt-get install prometheus)"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def prometheus_folder(settings: Settings) -> Path:
    return settings.resolved_state_dir / "prometheus"


def _pid_file(settings: Settings) -> Path:
    return prometheus_folder(settings) / "prometheus.pid"


def local_prometheus_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def dashboard_env(prometheus_url: str | None) -> dict[str, str]:
    """What the head needs to find the Prometheus `up` started: the Ray dashboard's metrics views
    and the platform's Monitoring page read from it. Empty when none runs."""
    if prometheus_url is None:
        return {}
    return {"RAY_PROMETHEUS_HOST": prometheus_url, "AIP_PROMETHEUS_URL": prometheus_url}


def start_prometheus(settings: Settings) -> str | None:
    """Start Prometheus (or find the one `up` started); its URL, or None when it is turned off
    (``AIP_PROMETHEUS_PORT=0``) or not installed."""
    binary = prometheus_binary()
    if not settings.prometheus_port or binary is None:
        return None
    folder = prometheus_folder(settings)
    url = local_prometheus_url(settings)
    if recorded_alive(_pid_file(settings)):
        return url
    if accepts_connections("127.0.0.1", settings.prometheus_port):
        raise Unavailable(
            f"Port {settings.prometheus_port} is taken by another program; set AIP_PROMETHEUS_PORT "
            "to a free port, or 0 to start no Prometheus"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    temp_dir = Path(settings.ray_temp_dir) if settings.ray_temp_dir else None
    config.write_text(prometheus_yaml(service_discovery_path(temp_dir)))
    log = (folder / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pid_file(settings).write_text(str(process.pid))
    client = PrometheusClient(url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not client.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_prometheus(settings)
            raise Unavailable(f"Prometheus did not start; see {folder / 'prometheus.log'}")
        time.sleep(0.25)
    return url


def stop_prometheus(settings: Settings) -> bool:
    """Stop the Prometheus `up` started; False when none was running."""
    return stop_recorded(_pid_file(settings), STOP_GRACE_S)
