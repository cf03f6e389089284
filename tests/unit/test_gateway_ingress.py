"""The gateway's own listener (aiplatform.serving.ingress): it serves the app on a port that
several replicas share, and past its limit answers 503 with Retry-After at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from aiplatform.serving.ingress import Admission, PublicListener

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
        admission = Admission(make_app("ok", release), limit=2, retry_after_s=1)
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
