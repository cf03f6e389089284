"""Shared fixtures: markers by folder, a real S3-compatible server, one local Ray per session, and a
real Prometheus scraping it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Local-only mode for every Ray process this session starts: all agents bind to loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Every test platform has its own (detached) alert engine; left at 10 s, a dozen of them would
# keep scraping metrics for the rest of the session. The alerting tests evaluate on demand.
os.environ.setdefault("AIP_ALERT_INTERVAL_S", "600")
# `aip login`'s file: never the developer's own (~/.config/aip/login.json) in a test's CLI call.
os.environ["AIP_CLI_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="aip-cli-config-"), "login.json")

from aiplatform.monitoring.prometheus import SERVICE_DISCOVERY_FILE, PrometheusClient, prometheus_yaml
from aiplatform.runtime import local_runtime_env, set_local_ray_env
from aiplatform.settings import Settings
from tests.factories import free_port, platform_settings, served_platform


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e", "multinode"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
    # The multi-node tests start (and stop) a Ray cluster of their own: they go first, before
    # anything starts the session's single-node Ray in this process. Then the modules on the
    # session's shared platform, one after another, so that its app is deployed once.
    _SHARED_MODULES.update(item.path for item in items if "shared_platform" in getattr(item, "fixturenames", ()))
    items.sort(key=lambda item: 0 if item.get_closest_marker("multinode") else 1 if item.path in _SHARED_MODULES else 2)


_SHARED_MODULES: set[Path] = set()
"""The test modules with a test on the shared platform (``shared_platform``)."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Past the modules on the shared platform, its app and scheduler stop: the next modules get
    the session's two cores (and Serve's route) to themselves."""
    if item.path not in _SHARED_MODULES:
        from tests.factories import release_resident

        release_resident()


HANG_MARGIN_S = float(os.environ.get("AIP_TESTS_HANG_MARGIN_S", "120"))
"""How long past its pytest-timeout a test may run before the hang guard ends the run."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """The hang guard: a test still running HANG_MARGIN_S past its timeout (pytest-timeout's
    SIGALRM only lands between Python bytecodes, so a thread stuck in native code never sees it)
    dumps every thread's stack and ends the run, instead of holding CI until its own limit
    with nothing printed."""
    import faulthandler
    import sys

    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    if limit > 0:
        # To the terminal pytest writes to, not the test's captured output, which dies with the run.
        capture = item.config.pluginmanager.getplugin("capturemanager")
        saved = getattr(getattr(getattr(capture, "_global_capturing", None), "err", None), "targetfd_save", None)
        faulthandler.dump_traceback_later(
            limit + HANG_MARGIN_S, exit=True, file=saved if isinstance(saved, int) else sys.__stderr__
        )
    try:
        yield
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


_session_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _session_exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """With AIP_TESTS_EXIT_AT_UNCONFIGURE=1 (scripts/test.sh), leave with pytest's own status once its
    report is written, skipping the interpreter's teardown.

    Twice a CI run printed "573 passed" and then died with a segmentation fault (exit 139) while the
    interpreter tore down the native threads a session leaves behind (Ray's core worker, gRPC,
    ONNX Runtime and torch pools, Playwright's driver): a crash after the verdict, in no test, that
    turned a green suite red. The threads still alive are named on stderr, so it stays visible.
    """
    shutil.rmtree(os.path.dirname(os.environ["AIP_CLI_CONFIG"]), ignore_errors=True)  # this session's
    if os.environ.get("AIP_TESTS_EXIT_AT_UNCONFIGURE") != "1" or not _session_exit_status:
        return
    import sys
    import threading

    alive = sorted(thread.name for thread in threading.enumerate() if thread is not threading.main_thread())
    if alive:
        print(f"threads alive at exit: {', '.join(alive)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_session_exit_status[-1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto) on 127.0.0.1 with a free port; yields its endpoint."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_bucket(s3_server: str) -> str:
    """A fresh bucket on the session's S3 server; yields ``s3://bucket``."""
    import uuid

    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_server})
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One embedded local Ray for the whole test session, in its own temp dir."""
    import ray
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT as agent_port

    # ray.init cannot move the dashboard agent off its fixed port; with another Ray holding it,
    # every job this session submits would fail with "No available agent".
    if not _is_port_free(agent_port):
        pytest.exit(
            f"Port {agent_port} (Ray's dashboard agent) is taken by another process, probably a Ray "
            "left running: stop it (ray stop --force) and run the tests again",
            returncode=3,
        )
    temp_dir = Path("/tmp") / f"aip-ray-{os.getpid()}"
    set_local_ray_env()  # as the platform's own embedded Ray
    ray.init(
        num_cpus=2,
        namespace="aiplatform-tests",
        # The dashboard hosts Ray's job API, which the task manager submits training jobs to.
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        _temp_dir=str(temp_dir),
        configure_logging=False,
        runtime_env=local_runtime_env(),
        # Metrics reach the nodes' /metrics endpoints within a second (Ray's default is 10 s):
        # the monitoring and alerting tests read them.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    # Job drivers find their cluster through <temp dir>/ray_current_cluster, which ray.init does
    # not write; without it Ray picks any gcs_server running on the machine (a Ray left over by
    # an interrupted run, a developer's own) and the session's jobs fail to authenticate there.
    from ray._private.utils import write_ray_address

    write_ray_address(ray._private.worker._global_node.gcs_address, str(temp_dir))
    try:
        yield
    finally:
        ray.shutdown()
        # A daemon thread still calling Ray (a heartbeat, a metrics flush) would otherwise start a
        # new Ray from that thread while the interpreter exits: the run ended "485 passed", then
        # a segmentation fault, exit 139. With auto-connect off such a call raises in its thread.
        import ray._private.auto_init_hook as auto_init

        auto_init.enable_auto_connect = False


@pytest.fixture(scope="session")
def _shared_settings(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with platform_settings(
        tmp_path_factory.mktemp("shared"), "shared", task_poll_interval_s=0.5, user_code=True
    ) as settings:
        try:
            yield settings
        finally:
            from tests.factories import release_resident

            release_resident()  # before Ray stops: the handles its tests made would log errors


@pytest.fixture(scope="module")
def shared_platform(_shared_settings: Settings) -> Iterator[dict[str, Any]]:
    """One platform for the modules that need no settings of their own (authentication off,
    users' code on, its scheduler polling every 0.5 s, its app served on 127.0.0.1): ``settings``,
    ``url`` and ``queue``. Deployed once for all of them (they run one after another), where a
    platform of each module's own cost about 12 s to deploy, start and delete on two cores. Its
    modules share its stores: each names its own models."""
    from aiplatform.tasks.queue import TaskClient
    from aiplatform.tasks.scheduler import ensure_scheduler

    ensure_scheduler(_shared_settings)
    with served_platform(_shared_settings, keep=True) as url:
        yield {"settings": _shared_settings, "url": url, "queue": TaskClient.connect(_shared_settings)}


PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"),
    reason="needs Debian's prometheus: scripts/install-system-packages.sh",
)


@pytest.fixture(scope="module")
def prometheus(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusClient]:
    """Debian's Prometheus on 127.0.0.1 with the platform's generated config, discovering the
    session's Ray targets from Ray's own service-discovery file."""
    import ray

    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    discovery = session_dir / SERVICE_DISCOVERY_FILE
    deadline = time.monotonic() + 30
    while not discovery.exists():  # Ray's dashboard writes it every few seconds
        assert time.monotonic() < deadline, f"Ray wrote no {discovery}"
        time.sleep(0.5)
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    # Scrapes of Ray's metrics agent took over a second in a busy session (a 1 s interval, and so a
    # 1 s timeout, lost the platform's series there); values still show within seconds.
    config.write_text(prometheus_yaml(discovery, scrape_interval_s=5, refresh_interval_s=1))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    client = PrometheusClient(f"http://127.0.0.1:{port}")
    try:
        client.wait_ready()
        yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def _is_port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
