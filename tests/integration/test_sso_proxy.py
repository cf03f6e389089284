"""Single sign-on through a real sign-in proxy on loopback: a small reverse proxy that does what
oauth2-proxy does (signs the browser in by its cookie, strips identity headers the browser sent,
sets ``X-Forwarded-User`` and friends, appends the browser's address to ``X-Forwarded-For``) in
front of the platform's app, served by the gateway's own listener (``PublicListener``). One
platform trusts the proxy's address (127.0.0.1), another does not: the same request signs in on
the first only, and an ``X-Forwarded-For`` naming a trusted address trusts nobody."""

from __future__ import annotations

import asyncio
import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from aiplatform.api.app import create_api_app
from aiplatform.api.security import AccessPolicy
from aiplatform.serving.ingress import PublicListener
from aiplatform.settings import Settings
from tests.factories import free_port

pytestmark = pytest.mark.integration

TOKEN = "bootstrap-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = "203.0.113.9"
"""The browser's address, as the proxy appends it to X-Forwarded-For."""
IDENTITY = ("x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def sign_in_proxy(upstream: int) -> ThreadingHTTPServer:
    """An authenticating reverse proxy on 127.0.0.1 forwarding to ``upstream``: the cookie
    ``session=<user>`` stands for the session oauth2-proxy keeps after the user's OIDC sign-in."""

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | set(IDENTITY)}
            cookie = self.headers.get("cookie", "")
            user = cookie.removeprefix("session=") if cookie.startswith("session=") else None
            if user is not None:
                headers |= {
                    "X-Forwarded-User": user,
                    "X-Forwarded-Preferred-Username": user,
                    "X-Forwarded-Email": f"{user}@example.com",
                }
            forwarded = self.headers.get("x-forwarded-for")
            headers["X-Forwarded-For"] = f"{forwarded}, {BROWSER}" if forwarded else BROWSER
            headers["Host"] = self.headers.get("host", "127.0.0.1")
            connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def platforms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two apps on one state folder, each on the gateway's listener and behind its own proxy:
    ``trusting`` trusts 127.0.0.1, ``other`` trusts 10.0.0.0/8 only."""
    home: Path = tmp_path_factory.mktemp("sso")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    listeners, proxies, urls = [], [], {}
    for name, trusted in (("trusting", ["127.0.0.1"]), ("other", ["10.0.0.0/8"])):
        settings = Settings(home=home, api_token=TOKEN, trusted_proxies=trusted)
        app = create_api_app()
        app.state.platform = SimpleNamespace(settings=settings, access=AccessPolicy.from_settings(settings))
        port = free_port()

        async def listen(app: object = app, port: int = port) -> PublicListener:
            return PublicListener(app, "127.0.0.1", port)

        listeners.append(asyncio.run_coroutine_threadsafe(listen(), loop).result(30))
        proxy = sign_in_proxy(port)
        proxies.append(proxy)
        urls[name] = f"http://127.0.0.1:{port}"
        urls[f"{name}-proxy"] = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        yield urls
    finally:
        for proxy in proxies:
            proxy.shutdown()
        for listener in listeners:
            asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)


def test_a_trusted_proxy_signs_users_in_and_no_one_else_can(platforms: dict[str, str]) -> None:
    with httpx.Client(timeout=30) as client:
        made = client.post(f"{platforms['trusting']}/v1/users", json={"name": "alice", "role": "member"}, headers=ADMIN)
        assert made.status_code == 201, made.text

        alice = {"Cookie": "session=alice"}
        me = client.get(f"{platforms['trusting-proxy']}/v1/whoami", headers=alice)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "alice" and me.json()["roles"] == {"default": "member"}
        key = client.post(f"{platforms['trusting-proxy']}/v1/users/alice/keys", json={"name": "cli"}, headers=alice)
        assert key.status_code == 201 and key.json()["created_by"] == "alice", key.text
        refused = client.get(f"{platforms['trusting-proxy']}/v1/audit", headers=alice)
        assert refused.status_code == 403  # signed in as a member, not a platform admin
        unknown = client.get(f"{platforms['trusting-proxy']}/v1/whoami", headers={"Cookie": "session=mallory"})
        assert unknown.status_code == 401 and "no account" in unknown.json()["message"]
        # what the browser claims is stripped by the proxy; without a session it names nobody
        spoofed = client.get(f"{platforms['trusting-proxy']}/v1/whoami", headers={"X-Forwarded-User": "alice"})
        assert spoofed.status_code == 401

        # the same signed-in request through the same kind of proxy, to a platform that does not trust it
        ignored = client.get(f"{platforms['other-proxy']}/v1/whoami", headers=alice)
        assert ignored.status_code == 401 and "API token" in ignored.json()["message"]
        # straight to it, claiming to come from an address it trusts: the socket's address counts
        claimed = {"X-Forwarded-User": "alice", "X-Forwarded-For": "10.0.0.7"}
        assert client.get(f"{platforms['other']}/v1/whoami", headers=claimed).status_code == 401
        assert client.get(f"{platforms['other-proxy']}/v1/whoami", headers=ADMIN).json()["name"] == "platform"

        audit = client.get(f"{platforms['trusting']}/v1/audit", params={"principal": "alice"}, headers=ADMIN).json()
        entries = [(e["method"], e["resource"], e["outcome"], e["address"]) for e in audit["entries"]]
        assert entries == [  # from where: the browser's address, as the trusted proxy saw it
            ("GET", "/v1/audit", "denied", BROWSER),
            ("POST", "/v1/users/alice/keys", "ok", BROWSER),
        ]
        made_by_admin = client.get(f"{platforms['trusting']}/v1/audit", params={"principal": "platform"}, headers=ADMIN)
        assert made_by_admin.json()["entries"][-1]["address"] == "127.0.0.1"  # straight in: the socket's address
