"""The gateway's own HTTP listener: clients of a local platform reach the gateway replica itself.

Under `aip up` the URL users get was Serve's HTTP proxy, a separate process: every request paid a
hop, a serialisation and the proxy's own ASGI stack, and the replica behind it Serve's per-request
route matching (over every REST route, to label its metrics), request-id and proxy-header
middleware. Measured with wrk on a 2-core machine (docs/BENCHMARKS.md, issue 30) that path served
~180 req/s at 32 clients where the replica's direct-ingress port served ~600, and the platform's
own app with its guard, body limit and fast routes is all a request needs.

``PublicListener`` serves the platform's ASGI app from the replica's event loop on a fixed
loopback port. The socket is bound with ``SO_REUSEPORT``: every gateway replica of the node binds
the same port and the kernel spreads connections over them, and a replacement replica binds it
while the old one drains. What Serve's proxy did besides (back-pressure, the request timeout) the
app it serves does itself (``aiplatform.api.admission``). ``SO_REUSEPORT`` would also let any other
program of the same user bind the port and take a share of the platform's connections: a listener
refuses to start beside a process that is not one of its peers (``PortShared``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import uvicorn

from aiplatform.errors import Conflict

logger = logging.getLogger(__name__)
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


class PortShared(Conflict):
    """Another program listens on the listener's port: with ``SO_REUSEPORT`` the kernel would
    hand it part of the connections meant for the platform."""


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes of this user may bind too."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def foreign_listeners(
    host: str, port: int, is_peer: Callable[[str], bool], attempts: int = 3, pause_s: float = 0.1
) -> list[str]:
    """The other processes listening on TCP ``port`` at ``host`` (or every address), as
    "pid N (command line)", leaving out this process and those whose command line (a Ray
    worker's process title) ``is_peer`` accepts.

    A listener the kernel lists without a process it can name (one bound while the list was
    read, or one of a process this user cannot see) is looked for again, up to ``attempts``
    times, ``pause_s`` apart: a peer replica binding at the same moment is named by then, while
    one that stays unnamed counts as foreign (the kernel lets only the same user share a port)."""
    unnamed: list[str] = []
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        foreign, unnamed = _listeners(host, port, is_peer)
        if foreign or not unnamed:
            return foreign
    return unnamed


def _listeners(host: str, port: int, is_peer: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(foreign listeners, listeners not attributed to a process) on ``host:port`` right now."""
    foreign: list[str] = []
    unnamed: list[str] = []
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # macOS: only root may list them; Linux lists a user's own
        logger.warning("cannot list who else listens on port %d; not checked", port)
        return foreign, unnamed
    addresses = WILDCARD_HOSTS | {host}
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or connection.laddr.port != port:
            continue
        if connection.laddr.ip not in addresses or connection.pid == os.getpid():
            continue
        if connection.pid is None:
            unnamed.append(f"a listener on {connection.laddr.ip} (a process this user cannot see)")
            continue
        try:
            command = " ".join(psutil.Process(connection.pid).cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # gone since the list was read (a draining replica): it listens no more
        except psutil.Error:
            unnamed.append(f"pid {connection.pid} (a process this user cannot see)")
            continue
        if not is_peer(command):
            shown = " ".join(command.split())[:120]  # a `python -c` script's lines on one
            foreign.append(f"pid {connection.pid} ({shown})")
    return foreign, unnamed


def shared_port_socket(host: str, port: int, is_peer: Callable[[str], bool]) -> socket.socket:
    """``reuse_port_socket``, refused (``PortShared``) when a process that is not a peer listens
    on the port too; checked once bound, so that one binding at the same moment is seen."""
    sock = reuse_port_socket(host, port)
    others = foreign_listeners(host, port, is_peer)
    if others:
        sock.close()
        raise PortShared(
            f"Port {port} on {host} is also listened on by {', '.join(others)}: the platform would "
            "share its connections with it; stop that program or choose another port (AIP_HTTP_PORT)"
        )
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, leaving the process's signals to Ray (the replica's loop may run on the
    main thread)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class PublicListener:
    """uvicorn on the running loop, serving ``app`` on ``host:port`` once ``ready()`` is true
    (a class-based route needs its replica's instance, which Serve sets after the constructor).
    The port is shared with the processes ``is_peer`` accepts by their command line (the other
    replicas of the same deployment) and with no other program (``PortShared``)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        ready: Any = lambda: True,
        is_peer: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.port = port
        self._ready = ready
        self._socket = shared_port_socket(host, port, is_peer)
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            # uvicorn's own logging setup (dictConfig) would close the handlers Serve gave this
            # replica's loggers: its log file then stops, and after a head restart Serve's recovery
            # check finds the replica's handler closed and replaces every gateway (issue 33).
            log_config=None,
            http="httptools",
            # The client's address is the socket's own: uvicorn would otherwise take a loopback
            # peer's X-Forwarded-For for it, and the guard trusts sign-in proxies by the address
            # they connect from (aiplatform.access.proxy), never by one a request says it has.
            proxy_headers=False,
            ws="none",
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while not self._ready():
            await asyncio.sleep(0.05)
        try:
            await self._server.serve(sockets=[self._socket])
        except Exception:
            logger.exception("the gateway's listener on port %d stopped", self.port)

    async def stop(self) -> None:
        """Stop accepting, finish the requests in flight (up to uvicorn's grace period)."""
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)
            self._task = None
        self._socket.close()
