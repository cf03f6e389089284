"""`aip up` / `aip down`: the embedded local platform (a Ray head on loopback, Serve, actors).

`up` starts a persistent head with `ray start` (dashboard, token authentication on), so that
`ray job submit` from another shell works, then deploys the platform's Serve app and creates the
head-node actors. With ``AIP_RAY_ADDRESS`` set it joins that cluster instead of starting one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from aip.processes import accepts_connections, command_line, recorded_alive, stop_recorded
from aiplatform.errors import Unavailable
from aiplatform.settings import Settings
from aiplatform.tokens import api_token_path, read_or_create_secret

# Loopback only (Ray 2.60 binds some agents to every interface otherwise), tokens on.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}

START_TIMEOUT_S = 120
STOP_GRACE_S = 5
"""How long the head's processes get to exit on SIGTERM before SIGKILL."""
RAY_DAEMONS = ("/gcs/gcs_server", "/raylet/raylet", "/autoscaler/_private/monitor.py", "ray::RuntimeEnvAgent")
"""Ray's own processes (by how their command line's program or script ends) that the workers
need while they exit, and that, signalled themselves, wait on one another with `ray start --block`
waiting on them: all of them were still there 8 s after a SIGTERM to the whole session, and so
was the task queue's actor, which exits within a second of its own SIGTERM while they run."""


def token_path() -> Path:
    """Ray's token file: ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_token() -> Path:
    """Create the cluster's token once (0600 from the start); `ray job submit` users need the
    same file."""
    path = token_path()
    if not os.environ.get("RAY_AUTH_TOKEN"):
        read_or_create_secret(path, lambda: secrets.token_hex(32))
    return path


def _ray_bin() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def head_pid_file(settings: Settings) -> Path:
    return settings.resolved_state_dir / "ray-head.pid"


def head_env(operator_env: Mapping[str, str] = MappingProxyType({})) -> dict[str, str]:
    """The head's environment, which every worker it spawns inherits (Serve replicas, jobs, users'
    code): ``operator_env`` without the platform's secrets (``aiplatform.runtime.SECRET_ENV_NAMES``:
    the API token, the S3 keys, the webhook URLs), local-only with tokens, Serve's
    throughput-optimized mode (direct ingress and gRPC between deployments, docs/BENCHMARKS.md),
    Serve's switches (``aiplatform.runtime.SERVE_ENV``) and, unless the operator set them, Ray's
    one-machine sizes (``aiplatform.runtime.ONE_MACHINE_ENV``). Not for the CLI's own driver.

    The platform's actors and Serve replicas get the settings, secrets included, as arguments from
    the driver that creates them; the jobs it submits get the storage's keys in their own runtime
    environment (``aiplatform.tasks.ray_jobs``)."""
    from aiplatform.runtime import (  # imports Ray: not before LOCAL_RAY_ENV is set
        ONE_MACHINE_ENV,
        SECRET_ENV_NAMES,
        SERVE_ENV,
    )

    # Names compared upper-cased: pydantic-settings reads AIP_* variables in any case.
    kept = {name: value for name, value in operator_env.items() if name.upper() not in SECRET_ENV_NAMES}
    return {**ONE_MACHINE_ENV, **kept, **LOCAL_RAY_ENV, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **SERVE_ENV}


def launch_head(settings: Settings, extra_env: dict[str, str] | None = None) -> None:
    """Launch `ray start --head --block` on 127.0.0.1, in its own session (so `down` stops exactly
    this head and nothing else on the machine), with the platform's settings, its secrets aside, in
    its environment (``head_env``): every worker, job and Serve replica it spawns sees the same
    ``AIP_*`` values. Returns at once (a head already up is left as it is). ``LOCAL_RAY_ENV`` must
    be in the environment before Ray is imported (the CLI sets it first)."""
    ensure_token()
    pid_file = head_pid_file(settings)
    if recorded_alive(pid_file):
        return  # already up: `up` again only redeploys
    command = [
        _ray_bin(),
        "start",
        "--head",
        "--block",
        f"--port={settings.ray_port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={settings.dashboard_port}",
        f"--dashboard-agent-listen-port={settings.dashboard_agent_port}",
        "--include-dashboard=true",
        "--disable-usage-stats",
    ]
    if settings.ray_num_cpus:
        command.append(f"--num-cpus={settings.ray_num_cpus}")
    if settings.ray_temp_dir:
        command.append(f"--temp-dir={settings.ray_temp_dir}")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log = (settings.home / "ray-head.log").open("ab")
    head = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**head_env(os.environ), **(extra_env or {})},
    )
    pid_file.write_text(str(head.pid))


def wait_for_head(settings: Settings) -> None:
    """Wait until the head `launch_head` launched accepts connections; ``Unavailable`` if it
    exited or did not within ``START_TIMEOUT_S``."""
    pid_file = head_pid_file(settings)
    deadline = time.time() + START_TIMEOUT_S
    while not accepts_connections("127.0.0.1", settings.ray_port):
        if not recorded_alive(pid_file) or time.time() > deadline:
            raise Unavailable(f"`ray start --head` did not come up; see {settings.home / 'ray-head.log'}")
        time.sleep(0.5)


def stop_head(settings: Settings) -> bool:
    """Stop the head `up` started, every process of its session; False if none was running.

    ``ray start --block`` does not exit on SIGTERM while its GCS lingers, and Ray's workers run in
    process groups of their own: signalling the head's group alone took a minute and relied on the
    final SIGKILL. So the workers and the rest get SIGTERM first, with `ray start` and
    ``RAY_DAEMONS`` still running, and up to ``STOP_GRACE_S`` to exit; then the whole session gets
    SIGKILL. (SIGTERM to the whole session at once, then SIGKILL after the grace, made every
    `aip down` wait the whole grace, with the actors still running when it ended.)"""
    pid_file = head_pid_file(settings)
    if not pid_file.exists():
        return False
    leader = int(pid_file.read_text())

    def lingers(pid: int) -> bool:
        program = command_line(pid)[:3]  # the interpreter, its flag, the script
        return pid == leader or any(part.endswith(RAY_DAEMONS) for part in program)

    running = stop_recorded(pid_file, STOP_GRACE_S, lingers)
    _forget_address_file(settings)
    return running


def _forget_address_file(settings: Settings) -> None:
    """A killed `ray start --block` leaves Ray's "current cluster" file behind; later
    `ray.init()` calls would try to join the dead head through it."""
    ours = f"127.0.0.1:{settings.ray_port}"
    for temp_dir in {settings.ray_temp_dir or Path("/tmp/ray"), Path("/tmp/ray")}:
        address_file = Path(temp_dir) / "ray_current_cluster"
        try:
            if address_file.read_text().strip() == ours:
                address_file.unlink()
        except OSError:
            pass


def connect_driver(settings: Settings, address: str | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Join the platform's Ray (``AIP_RAY_ADDRESS`` or the local head) as a driver."""
    import ray

    from aiplatform.runtime import LOOPBACK_SETUP_HOOK  # imports Ray: not before LOCAL_RAY_ENV is set

    if ray.is_initialized():
        return
    address = address or settings.ray_address or f"127.0.0.1:{settings.ray_port}"
    host, _, port = address.rpartition(":")
    deadline = time.time() + timeout_s
    while not accepts_connections(host, int(port)):  # ray.init would wait minutes on a dead address
        if time.time() > deadline:
            raise Unavailable(f"No platform is running at {address}; start it with `aip up`")
        time.sleep(0.5)
    while True:
        try:
            # The hook keeps the Serve controller and proxy this driver starts on loopback when
            # the head runs local-only (it does nothing on a cluster).
            ray.init(
                address=address,
                namespace=settings.ray_namespace,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"worker_process_setup_hook": LOOPBACK_SETUP_HOOK},
            )
            return
        except (ConnectionError, RuntimeError) as exc:
            if time.time() > deadline:
                raise Unavailable(f"No platform is running at {address} ({exc}); start it with `aip up`") from exc
            time.sleep(1)


def _silent(_: str) -> None:
    """A progress callback that says nothing (``deploy_platform``'s default)."""


def _import_platform_modules() -> None:
    """The modules ``deploy_platform`` needs (torch among them, through the Serve app: ~3.5 s on two
    cores), imported while Ray's head boots rather than after it."""
    import aiplatform.loops.actor  # noqa: F401
    import serve_apps.app  # noqa: F401


def deploy_platform(settings: Settings, progress: Callable[[str], None] = _silent) -> None:
    """Head-node actors (registry, results, task queue, scheduler, loop engine), then the Serve
    app (gateway + model servers) on 127.0.0.1; ``progress`` is told each step as it starts.

    The actors are created together and waited for after the app's deploy: each is a process of
    its own, and waiting for each in turn (~1.3 s apiece on two cores) held the deploy back."""
    import ray

    from aiplatform.loops.actor import LoopClient
    from aiplatform.registry import RegistryClient
    from aiplatform.results.actor import result_store_handle
    from aiplatform.tasks.queue import TaskClient
    from aiplatform.tasks.scheduler import scheduler_handle
    from serve_apps.app import start_app

    progress("starting the platform's actors (registry, results, task queue, scheduler, loop engine)")
    # The scheduler's first round marks tasks of a previous run interrupted; the loop engine's
    # first tick carries open retraining runs on (aiplatform.loops).
    ready = [
        RegistryClient.connect(settings).handle.ping.remote(),
        result_store_handle(settings).ping.remote(),
        TaskClient.connect(settings).handle.ping.remote(),
        scheduler_handle(settings).ping.remote(),
        LoopClient.connect(settings).handle.ping.remote(),
    ]
    progress("deploying the Serve app (gateway, model servers)")
    start_app(settings)  # its gateway starts the alert engine (aiplatform.api.Platform)
    try:
        ray.get(ready)
    except ray.exceptions.RayError as exc:  # e.g. a store that cannot open its state folder
        raise Unavailable(f"A head actor of the platform did not start: {exc}") from None


def up(settings: Settings, progress: Callable[[str], None] = _silent) -> dict[str, str]:
    """Start (or join) Ray, deploy the platform; returns the URLs to print, and tells ``progress``
    each step as it starts (the whole takes about half a minute on two cores). With a
    ``prometheus`` binary installed, a local platform gets a Prometheus too (``aip.prometheus``)."""
    from aip.prometheus import INSTALL_HINT, dashboard_env, start_prometheus

    address: str | None = settings.ray_address
    prometheus_url: str | None = None
    if address is None:
        prometheus_url = start_prometheus(settings)
        if prometheus_url is not None:
            settings = settings.model_copy(update={"prometheus_url": prometheus_url})
        progress(f"starting Ray's head on 127.0.0.1:{settings.ray_port}")
        launch_head(settings, extra_env=dashboard_env(prometheus_url))
        _import_platform_modules()
        wait_for_head(settings)
        address = f"127.0.0.1:{settings.ray_port}"
    progress(f"joining Ray at {address}")
    connect_driver(settings, address)
    deploy_platform(settings, progress)
    urls = {
        "platform (UI, REST API, inference)": settings.resolved_api_url,
        **({"Open Inference Protocol over gRPC": f"127.0.0.1:{settings.grpc_port}"} if settings.grpc_port else {}),
        "Ray dashboard": f"http://127.0.0.1:{settings.dashboard_port}",
        "ray job submit --address": f"http://127.0.0.1:{settings.dashboard_port}",
        "auth token file (RAY_AUTH_MODE=token)": str(token_path()),
    }
    if settings.ray_address is None and settings.prometheus_port:
        urls["Prometheus (metrics over time: Ray dashboard, Monitoring page)"] = (
            prometheus_url
            or f"not installed; {INSTALL_HINT}. Carrying on: the Monitoring page charts the "
            "alert engine's signals instead"
        )
    urls["Prometheus config (discovers this Ray)"] = "aip monitoring prometheus-config"
    if settings.api_token is not None:
        # In the URL's fragment, which the browser never sends; the UI keeps it for the session.
        urls["log in (opens the UI with the API token)"] = (
            f"{settings.resolved_api_url}/#token={settings.api_token.get_secret_value()}"
        )
        urls["API token file (the CLI reads it; clients send 'Authorization: Bearer <token>')"] = str(
            api_token_path(settings)
        )
    return urls


def down(settings: Settings) -> bool:
    """Stop the local Ray started by `up` with everything on it (or, on a cluster, only remove
    the app). Returns False when there was nothing to stop."""
    if settings.ray_address is None:
        from aip.prometheus import stop_prometheus

        # No app deletion first: the gateway's direct ingress drains for 30 s before it stops,
        # which serves nobody when the whole local platform stops with the head.
        stopped = stop_head(settings)
        return stop_prometheus(settings) or stopped
    import ray  # only here: a local `down` needs no Ray (importing it took a second)
    from ray import serve

    connect_driver(settings, settings.ray_address)
    serve.delete(settings.serve_app_name)
    ray.shutdown()
    return True
