"""The processes `aip up` starts and `aip down` stops: each in a session of its own, so that
stopping one stops exactly what it started and nothing else on the machine."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def recorded_alive(pid_file: Path) -> bool:
    """Whether the process whose pid ``pid_file`` holds (one `up` started) still runs."""
    return pid_file.exists() and alive(int(pid_file.read_text()))


def stop_recorded(pid_file: Path, grace_s: float, lingers: Callable[[int], bool] = lambda pid: False) -> bool:
    """Stop the session of the process ``pid_file`` names and forget it (``stop_session``);
    False when there was none or it had already stopped."""
    if not pid_file.exists():
        return False
    running = stop_session(int(pid_file.read_text()), grace_s, lingers)
    pid_file.unlink(missing_ok=True)
    return running


def stop_session(leader: int, grace_s: float, lingers: Callable[[int], bool] = lambda pid: False) -> bool:
    """SIGTERM to every process of ``leader``'s session that ``lingers`` does not name, up to
    ``grace_s`` for them to exit, then SIGKILL to what is left of the session; False when the
    leader was not running. ``lingers`` names the processes the others need while they exit,
    which, signalled themselves, wait on one another and never exit on SIGTERM alone."""
    running = alive(leader)
    if running:
        first = signal_session(leader, signal.SIGTERM, spare=lingers)
        _wait(lambda: [pid for pid in first if alive(pid)], grace_s)
        signal_session(leader, signal.SIGKILL)
        _wait(lambda: [pid for pid in [leader, *session_members(leader)] if alive(pid)], grace_s)
    return running


def _wait(left: Callable[[], list[int]], timeout_s: float) -> list[int]:
    """Poll ``left()`` until it is empty or ``timeout_s`` has passed; what is left."""
    deadline = time.time() + timeout_s
    while (pids := left()) and time.time() < deadline:
        time.sleep(0.25)
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass  # already gone


def signal_session(leader: int, sig: signal.Signals, spare: Callable[[int], bool] = lambda pid: False) -> list[int]:
    """``sig`` to every process of ``leader``'s session (and its process group) but those ``spare``
    names; returns the processes signalled."""
    targets = [pid for pid in [leader, *session_members(leader)] if not spare(pid)]
    for target in targets:
        _signal(target, sig)
    if not spare(leader):
        with contextlib.suppress(OSError):
            os.killpg(leader, sig)
    return targets


def session_members(leader: int) -> list[int]:
    """Live (not zombie) processes of the session ``leader`` started (Linux's /proc; elsewhere
    none are found and the head's process group is what gets signalled)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) != leader and os.getsid(int(entry.name)) == leader and not zombie(int(entry.name)):
                members.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return members


def zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits for its parent to collect it (Linux's /proc; False
    elsewhere or when it is gone altogether)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def command_line(pid: int) -> list[str]:
    """The command line of ``pid`` as its process shows it (Linux's /proc; empty when gone or
    elsewhere). Ray's workers rename theirs (``ray::RuntimeEnvAgent``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone (and is collected here)
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    # ... and so does another's: Ray's workers wait for the raylet that started them to collect
    # them, or, with it gone, for init, which took 2 s each time `aip down` waited on one.
    return not zombie(pid)


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
