"""The access guard alone (no platform behind it): it fails closed, and it reads its policy per
request."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aiplatform.api.security import AccessGuard, AccessPolicy

pytestmark = pytest.mark.unit


def _client(policy_of) -> TestClient:  # type: ignore[no-untyped-def]
    app = FastAPI()
    app.add_middleware(AccessGuard, policy_of=policy_of)

    @app.get("/v1/things")
    def things() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    return TestClient(app, base_url="http://127.0.0.1:8000")


def test_without_settings_or_with_unreadable_ones_it_refuses_all_but_the_health_probes() -> None:
    def broken(scope: dict) -> AccessPolicy | None:  # type: ignore[type-arg]
        raise RuntimeError("settings cannot be read")

    for policy_of in (lambda scope: None, broken):
        client = _client(policy_of)
        refused = client.get("/v1/things")
        assert refused.status_code == 503 and "not loaded" in refused.json()["message"]
        assert client.get("/v2/health/live").json() == {"live": True}


def test_token_mode_without_a_token_refuses_and_says_how_to_fix_it() -> None:
    client = _client(lambda scope: AccessPolicy("token", None, ("127.0.0.1",)))
    refused = client.get("/v1/things")
    assert refused.status_code == 503 and "AIP_API_TOKEN" in refused.json()["message"]
    assert _client(lambda scope: AccessPolicy("off", None, ("127.0.0.1",))).get("/v1/things").json() == {"ok": True}


def test_hosts_and_origins() -> None:
    policy = AccessPolicy("off", None, ("127.0.0.1", "localhost", "::1"))
    client = _client(lambda scope: policy)
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert client.get("/v1/things", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "127.0.0.1.evil.example:8000", ""):
        assert client.get("/v1/things", headers={"Host": host}).status_code == 400, host
    assert (
        _client(lambda scope: AccessPolicy("off", None, ("*",))).get("/v1/things", headers={"Host": "x"}).status_code
        == 200
    )


def test_the_policy_comes_from_the_platform_installed_on_the_app_itself() -> None:
    """``aiplatform.api`` keeps no module global: each app carries its own platform in its state."""
    from types import SimpleNamespace

    from aiplatform.api.deps import access_policy, set_platform

    app = FastAPI()
    app.add_middleware(AccessGuard, policy_of=access_policy)

    @app.get("/v1/things")
    def things() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.get("/v1/things").status_code == 503  # nothing installed yet: closed
    set_platform(app, SimpleNamespace(access=AccessPolicy("off", None, ("127.0.0.1",))))  # type: ignore[arg-type]
    assert client.get("/v1/things").json() == {"ok": True}
