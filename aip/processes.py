"""The processes `aip up` starts and `aip down` stops: each in a session of its own, so that
stopping one stops exactly what it started and nothing else on the machine."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def recorded_alive(pid_file: Path) -> bool:
    """Whether the process whose pid ``pid_file`` holds (one `up` started) still runs."""
    return pid_file.exists() and alive(int(pid_file.read_text()))


def stop_recorded(pid_file: Path, grace_s: float) -> bool:
    """Stop the session of the process ``pid_file`` names and forget it; False when there was
    none or it had already stopped."""
    if not pid_file.exists():
        return False
    running = stop_session(int(pid_file.read_text()), grace_s)
    pid_file.unlink(missing_ok=True)
    return running


def stop_session(leader: int, grace_s: float) -> bool:
    """SIGTERM to every process of ``leader``'s session, SIGKILL to what is left after
    ``grace_s``; False when the leader was not running."""
    running = alive(leader)
    if running:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            signal_session(leader, sig)
            deadline = time.time() + grace_s
            while (still_running := alive(leader) or bool(session_members(leader))) and time.time() < deadline:
                time.sleep(0.25)
            if not still_running:
                break
    return running


def signal_session(leader: int, sig: signal.Signals) -> None:
    for target in [leader, *session_members(leader)]:
        try:
            os.kill(target, sig)
        except OSError:
            pass  # already gone
    try:
        os.killpg(leader, sig)
    except OSError:
        pass


def session_members(leader: int) -> list[int]:
    """Live (not zombie) processes of the session ``leader`` started (Linux's /proc; elsewhere
    none are found and the head's process group is what gets signalled)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (
                int(entry.name) != leader
                and os.getsid(int(entry.name)) == leader
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                members.append(int(entry.name))
        except (OSError, IndexError):
            continue  # gone meanwhile
    return members


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
