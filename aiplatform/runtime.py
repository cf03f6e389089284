"""Connecting to Ray (a cluster, or an embedded local one) and reaching the platform's actors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import inspect
import logging
import os
import time
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import ray
import ray.exceptions
from pydantic import SecretStr

from aiplatform.errors import AIPError, Unavailable
from aiplatform.limits import MAX_REQUEST_BYTES
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
HEAD_NODE_RESOURCE = "node:__internal_head__"
ACTOR_CALL_RETRIES = 20
ACTOR_RETRY_DELAY_S = 0.25
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SERVE_ENV = {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(MAX_REQUEST_BYTES)}
"""Serve's switches for every process that may run its proxy (local drivers' workers, ``aip up``'s
head, the RayService's pods)."""
LOOPBACK_SETUP_HOOK = "aiplatform.serving.loopback.keep_serve_on_loopback"
ONE_MACHINE_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
"""Ray's defaults sized for a cluster, set where the platform starts Ray on one machine (an
embedded Ray, `aip up`'s head) unless the operator's environment says otherwise. Each actor is a
process started for it, about a second of CPU on a 2-core machine: Ray Data lists a parquet read's
row groups on a pool of 32 footer-reading actors (one reads a dataset version's few files, up to
128 at a time), and Ray Train starts a preemption watcher per run that watches for nodes being
drained (one machine has no node to drain but the one everything runs on). docs/BENCHMARKS.md
("Worker processes a test run starts") has what they cost."""


def local_runtime_env(env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """The runtime environment of a local-only driver: the workers it starts (Serve's controller and
    proxy among them) stay local-only, open Serve's gRPC servers on loopback
    (``aiplatform.serving.loopback``) and take no gRPC message over ``MAX_REQUEST_BYTES``; plus
    ``env_vars``. A new dict each time: ``ray.init`` writes into the one it is given."""
    return {
        "env_vars": {**LOCAL_ONLY_ENV, **SERVE_ENV, **(env_vars or {})},
        "worker_process_setup_hook": LOOPBACK_SETUP_HOOK,
    }


def set_local_ray_env() -> None:
    """Before an embedded Ray starts, which inherits this process's environment: loopback only
    (Ray 2.60 binds some agents to every interface otherwise) and, unless already set, Ray's
    one-machine sizes (``ONE_MACHINE_ENV``)."""
    os.environ.update(LOCAL_ONLY_ENV)
    for name, value in ONE_MACHINE_ENV.items():
        os.environ.setdefault(name, value)


def connect(settings: Settings) -> None:
    """Join the configured cluster, or start an embedded local Ray bound to loopback only."""
    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=settings.ray_namespace, log_to_driver=True)
        return
    set_local_ray_env()
    ray.init(
        # "local": always a new embedded Ray, never one found through a stale address file. To
        # use a running platform, set AIP_RAY_ADDRESS (or submit with `ray job submit`).
        address="local",
        num_cpus=settings.ray_num_cpus,
        namespace=settings.ray_namespace,
        include_dashboard=settings.ray_dashboard,
        dashboard_host="127.0.0.1",
        _temp_dir=str(settings.ray_temp_dir) if settings.ray_temp_dir else None,
        runtime_env=local_runtime_env(),  # workers local-only too, Serve's gRPC servers on loopback
        log_to_driver=False,
    )


RAY_ENV_PASSED_TO_JOBS = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")


def _holds_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_holds_secret(arg) for arg in typing.get_args(annotation))


SECRET_ENV_NAMES = frozenset(
    f"AIP_{name.upper()}" for name, field in Settings.model_fields.items() if _holds_secret(field.annotation)
)
"""The settings that hold secrets (every ``SecretStr`` field: the API token, the S3 keys, the
webhook URLs) as environment variables: never in the environment ``aip up`` starts Ray with, which
every worker and users' code inherit."""


def storage_credentials_env(settings: Settings) -> dict[str, str]:
    """The storage's S3 keys as ``AIP_S3_*`` variables, where they are set, for the jobs the
    platform submits: they read and write storage, and the head's environment holds no secret. A
    job's runtime environment is inherited by every worker of the job (its Ray Train workers and
    Tune trials, users' code among them), and shows in Ray's job details to holders of Ray's token."""
    keys = {
        "AIP_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "AIP_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
    }
    return {name: value.get_secret_value() for name, value in keys.items() if value is not None}


def ray_env_passthrough() -> dict[str, str]:
    """Ray's own switches this process runs under (local-only mode, token auth), for the jobs it
    starts: a job's driver must see them before it imports Ray."""
    return {name: os.environ[name] for name in RAY_ENV_PASSED_TO_JOBS if name in os.environ}


def head_pinned_options(name: str, namespace: str) -> dict[str, Any]:
    """Options for a platform actor: named, detached, on the head node, restarted forever."""
    return {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        # Calls are retried after a restart; the actors' methods are idempotent for this reason.
        "max_task_retries": -1,
        "num_cpus": 0,
        "resources": {HEAD_NODE_RESOURCE: 0.001},
    }


def on_head_node() -> bool:
    """Whether this process runs where the platform's state folder is: outside Ray (a tool, a
    test), or on Ray's head node, where the platform's actors keep it. A process on another node
    (a gateway replica on a worker node, which need not mount the folder) asks those actors."""
    if not ray.is_initialized():
        return True
    return _is_head_node(ray.get_runtime_context().get_node_id())


@functools.lru_cache(maxsize=8)
def _is_head_node(node_id: str) -> bool:
    """Asked of Ray's control store once per node (a process's node never changes; a new cluster
    in the same process has new node ids), not by every client a process makes."""
    return any(node["NodeID"] == node_id and HEAD_NODE_RESOURCE in node.get("Resources", {}) for node in ray.nodes())


def freeze_startup_heap() -> None:
    """Put every object alive now (modules, classes, a store's connection) out of the garbage
    collector's reach; a head actor calls it once it is built.

    A full collection walks every tracked object: the result store's reads of 1,000 records (a
    drift sample, an export page) took 9 ms at the median and 70 ms at the p99, that walk over the
    process's start-up objects; with them frozen, 10 ms at the p99 (bench/scale.py)."""
    gc.collect()
    gc.freeze()


def head_actor(actor_class: type, name: str, settings: Settings, **options: Any) -> ray.actor.ActorHandle:
    """The platform actor ``name`` in the settings' namespace, created on the head if missing
    (with Ray's actor ``options`` besides, such as ``max_concurrency``)."""
    options = {**head_pinned_options(name, settings.ray_namespace), **options}
    return ray.remote(actor_class).options(**options).remote(settings)


def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an actor method and wait; platform errors come back as themselves.

    An actor that is restarting is retried for a few seconds before :class:`Unavailable`.
    """
    last: Exception | None = None
    for _ in range(ACTOR_CALL_RETRIES):
        try:
            return ray.get(method.remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as exc:
            raise _platform_error(exc) from None
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError) as exc:
            last = exc
            time.sleep(ACTOR_RETRY_DELAY_S)
    raise Unavailable(f"Actor call {getattr(method, '_method_name', method)} failed: {last}")


def call_within(timeout_s: float, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`call` that waits at most ``timeout_s`` for the answer: :class:`Unavailable` past it
    (an actor whose node is away is waited for by Ray, retried for ever: a request path must not)."""
    ref = method.remote(*args, **kwargs)
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        with contextlib.suppress(Exception):  # not left queued behind an actor that is away
            ray.cancel(ref)
        raise Unavailable(
            f"Actor call {getattr(method, '_method_name', method)} had no answer in {timeout_s:g} s"
        ) from None
    except ray.exceptions.RayTaskError as exc:
        raise _platform_error(exc) from None
    except (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError) as exc:
        raise Unavailable(f"Actor call {getattr(method, '_method_name', method)} failed: {exc}") from None


HEAD_CALL_TIMEOUT_S = 5.0
"""How long a request path waits on a head actor (``BoundedCalls``) before ``Unavailable`` (a 503)."""
HEAD_AWAY_PAUSE_S = 2.0
"""After a call finds a head actor away, the next ones fail at once for this long."""


class BoundedCalls:
    """:func:`call_within` for a request path: after a call finds the actor away, the next ones
    fail at once for ``pause_s`` (requests must not queue up behind an actor whose node is away,
    each holding a thread for ``timeout_s``)."""

    def __init__(self, timeout_s: float = HEAD_CALL_TIMEOUT_S, pause_s: float = HEAD_AWAY_PAUSE_S) -> None:
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self._away_until = 0.0

    def __call__(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self._away_until:
            raise Unavailable("The head node's actors do not answer; retry in a moment")
        try:
            return call_within(self.timeout_s, method, *args, **kwargs)
        except Unavailable:
            self._away_until = time.monotonic() + self.pause_s
            raise


async def call_async(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`call` for an event loop: awaits the result instead of blocking a thread on it (a
    request path then needs no thread per call in flight)."""
    last: Exception | None = None
    for _ in range(ACTOR_CALL_RETRIES):
        try:
            return await method.remote(*args, **kwargs)
        except ray.exceptions.RayTaskError as exc:
            raise _platform_error(exc) from None
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError) as exc:
            last = exc
            await asyncio.sleep(ACTOR_RETRY_DELAY_S)
    raise Unavailable(f"Actor call {getattr(method, '_method_name', method)} failed: {last}")


@functools.lru_cache(maxsize=32)
def _task_of(function: Callable[..., Any], num_cpus: float) -> Any:
    # No retries: the platform's tasks (compression, analysis) report once; a retry repeats their work.
    return ray.remote(num_cpus=num_cpus, max_retries=0)(function)


async def run_as_task(function: Callable[..., T], *args: Any, num_cpus: float) -> T:
    """Run ``function(*args)`` as a Ray task reserving ``num_cpus`` and await its result, so an
    API process waits without working; platform errors come back as themselves."""
    return await call_async(_task_of(function, num_cpus), *args)


def _platform_error(exc: ray.exceptions.RayTaskError) -> Exception:
    cause = getattr(exc, "cause", None)
    if not isinstance(cause, AIPError):
        return exc
    error = type(cause)(cause.message)
    error.__dict__.update(vars(cause))  # what the error names besides its message (a refused key's user)
    return error


def quiet_ray_data() -> None:
    """Ray Data logs every execution's progress at INFO; a job's output is its own report."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# -- Store clients ---------------------------------------------------------------------------------
# A store (registry, results, tasks, alerts) is a plain class over SQLite; its actor is the store run
# on the head node; callers in other processes hold a client. Instead of a client written out by
# hand per store, a client names the store's Protocol (the methods callers may use, declared once
# with their types) and gets one forwarding method per protocol method, sent to the actor and
# waited on with call(). A client may still define a method itself where calling needs more.


class ActorProxy:
    """The base of every store client: subclass as ``class XClient(ActorProxy, X, protocol=X)``
    where ``X`` is the store's Protocol (so type checkers see its signatures). With ``via``, the
    actor holds the store beside another: each call goes to the actor's method ``via`` with the
    store method's name first (``via(name, *args, **kwargs)``)."""

    protocol: ClassVar[type]

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle

    def __init_subclass__(cls, *, protocol: type, via: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.protocol = protocol
        for name in protocol_methods(protocol):
            if name not in cls.__dict__:
                setattr(cls, name, _forwarder(name, via))


def protocol_methods(protocol: type) -> list[str]:
    """The public methods a store Protocol declares (its own and its bases')."""
    names = set()
    for klass in protocol.__mro__:
        if klass is object or not getattr(klass, "_is_protocol", False) or klass.__module__ == "typing":
            continue
        names.update(
            name for name, value in vars(klass).items() if not name.startswith("_") and inspect.isfunction(value)
        )
    return sorted(names)


def _forwarder(name: str, via: str | None = None) -> Callable[..., Any]:
    def forward(self: ActorProxy, *args: Any, **kwargs: Any) -> Any:
        if via is not None:
            return call(getattr(self.handle, via), name, *args, **kwargs)
        return call(getattr(self.handle, name), *args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = f"The store's ``{name}``, run by its actor."
    return forward


def train_controller_env(settings: Settings) -> None:
    """Settings Ray Train reads from the driver's environment when it starts a run's controller
    (it propagates ``RAY_TRAIN_*`` variables to it): the report collection interval. A value the
    operator set in the environment wins."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(settings.train_poll_interval_s))
