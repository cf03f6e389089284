"""The gateway's own listener (aiplatform.serving.ingress): it serves the app on a port that
several replicas share; in front of the app (aiplatform.api.admission) past its limit the answer is
503 with Retry-After at once, and past its deadline 504."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aiplatform.api.admission import Admission
from aiplatform.serving.ingress import PortShared, PublicListener
from tests.factories import free_port

pytestmark = pytest.mark.unit


def make_app(name: str, release: asyncio.Event | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if release is not None:
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": name.encode()})

    return app


async def wait_listening(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.02)
    raise AssertionError(f"nothing listens at {url}")


def test_two_replicas_share_the_port_and_a_stopped_one_leaves_the_other() -> None:
    async def scenario() -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        first = PublicListener(make_app("first"), "127.0.0.1", port)
        second = PublicListener(make_app("second"), "127.0.0.1", port)  # binds too: SO_REUSEPORT
        await wait_listening(url)
        await first.stop()
        async with httpx.AsyncClient() as client:
            answers = {(await client.get(url, headers={"connection": "close"})).text for _ in range(20)}
        assert answers == {"second"}
        await second.stop()
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient() as client:
                await client.get(url)

    asyncio.run(scenario())


@pytest.fixture
def other_program() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Another program of this user listening on a port with SO_REUSEPORT (as gRPC servers do by
    default); the port and the process."""
    port = free_port()
    script = textwrap.dedent(f"""
        # other-program
        import socket, sys, time
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", {port})); s.listen(8)
        print("listening", flush=True)
        time.sleep(120)
    """)
    program = subprocess.Popen([sys.executable, "-c", script, "other-program"], stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None and program.stdout.readline().strip() == "listening"
        yield port, program
    finally:
        program.kill()
        program.wait()


def test_a_port_another_program_listens_on_is_refused_naming_it(other_program: tuple[int, Any]) -> None:
    port, program = other_program

    async def scenario() -> None:
        with pytest.raises(PortShared, match=f"pid {program.pid} .*other-program.*AIP_HTTP_PORT"):
            PublicListener(make_app("platform"), "127.0.0.1", port)

    asyncio.run(scenario())
    program.kill()
    program.wait()

    async def alone() -> None:  # once it is gone the port is the listener's
        listener = PublicListener(make_app("platform"), "127.0.0.1", port)
        await wait_listening(f"http://127.0.0.1:{port}/")
        await listener.stop()

    asyncio.run(alone())


def test_a_peer_process_shares_the_port(other_program: tuple[int, Any]) -> None:
    """A process whose command line the listener's ``is_peer`` accepts (another replica of the
    same deployment) shares the port."""
    port, _ = other_program

    async def scenario() -> None:
        listener = PublicListener(make_app("replica"), "127.0.0.1", port, is_peer=lambda c: c.endswith("other-program"))
        await listener.stop()

    asyncio.run(scenario())


def test_a_peer_bound_while_the_listeners_were_read_is_looked_for_again(
    other_program: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """psutil lists a socket bound between its two reads without a pid: the peer replica binding
    at that moment is named on the next look, and is not taken for a foreign program."""
    import psutil

    from aiplatform.serving import ingress

    port, program = other_program
    real = psutil.net_connections
    looks = []

    def racing(kind: str = "inet") -> list[Any]:
        looks.append(kind)
        listed = real(kind=kind)
        if len(looks) == 1:  # the first look: the peer's socket without its process
            return [c._replace(pid=None) if c.pid == program.pid else c for c in listed]
        return listed

    monkeypatch.setattr(ingress.psutil, "net_connections", racing)
    peer = lambda command: command.endswith("other-program")
    assert ingress.foreign_listeners("127.0.0.1", port, peer) == [] and len(looks) == 2
    monkeypatch.setattr(
        ingress.psutil, "net_connections", lambda kind="inet": [c._replace(pid=None) for c in real(kind=kind)]
    )
    unnamed = ingress.foreign_listeners("127.0.0.1", port, peer, pause_s=0.01)
    assert unnamed == ["a listener on 127.0.0.1 (a process this user cannot see)"]  # never named: refused


def test_listener_waits_until_ready() -> None:
    async def scenario() -> None:
        port = free_port()
        ready = asyncio.Event()
        listener = PublicListener(make_app("up"), "127.0.0.1", port, ready=ready.is_set)
        async with httpx.AsyncClient(timeout=10) as client:
            pending = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/"))
            await asyncio.sleep(0.3)
            assert not pending.done()  # the connection waits in the backlog, not refused
            ready.set()
            assert (await pending).text == "up"
        await listener.stop()

    asyncio.run(scenario())


def test_admission_answers_503_with_retry_after_past_the_limit() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        admission = Admission(make_app("ok", release), limit=2, retry_after_s=1, timeout_s=30)
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            held = [asyncio.ensure_future(client.get("/v1/models/m/predict")) for _ in range(2)]
            await asyncio.sleep(0.05)
            refused = await client.get("/v1/models/m/predict")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"] == "unavailable" and "retry" in refused.json()["message"]
            release.set()
            assert [(await h).status_code for h in held] == [200, 200]
            assert (await client.get("/v1/models/m/predict")).status_code == 200  # the slots are back
            assert admission.in_flight == 0

    asyncio.run(scenario())


def test_a_request_past_its_deadline_is_answered_504_and_gives_its_slot_back() -> None:
    async def scenario() -> None:
        never = asyncio.Event()
        admission = Admission(make_app("late", never), limit=2, retry_after_s=1, timeout_s=0.2)
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            late = await client.get("/v1/models/m/predict")
            assert late.status_code == 504 and "AIP_SERVE_REQUEST_TIMEOUT_S" in late.json()["message"]
            assert admission.in_flight == 0

    asyncio.run(scenario())


def test_an_answer_that_has_begun_runs_past_the_deadline() -> None:
    """A log stream answers at once and goes on for minutes: the deadline is to begin the answer."""

    async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for line in range(3):
            await asyncio.sleep(0.15)
            await send({"type": "http.response.body", "body": f"data: {line}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> None:
        admission = Admission(stream, limit=2, retry_after_s=1, timeout_s=0.2)
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answer = await client.get("/v1/tasks/t/logs/stream")
            assert answer.status_code == 200 and answer.text.count("data:") == 3

    asyncio.run(scenario())
