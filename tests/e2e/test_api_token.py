"""``AIP_API_TOKEN``: without the bearer token the API, inference and UI data answer 401 (health
probes and the UI's static files excepted); the CLI sends it; the UI asks for it once."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from aiplatform.settings import Settings
from tests.e2e.conftest import SCREENSHOTS, needs_browser
from tests.factories import (
    make_digit_images,
    platform_settings,
    png_bytes,
    register_versions,
    served_platform,
)

TOKEN = "s3cr3t-" + uuid.uuid4().hex
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    with platform_settings(tmp_path_factory.mktemp("token"), "tok", api_token=TOKEN) as settings:
        register_versions(settings, "guarded", count=1)
        with served_platform(settings) as url:
            yield url, settings


@pytest.fixture(scope="module")
def platform_url(platform: tuple[str, Settings]) -> str:
    return platform[0]


def test_reads_writes_and_inference_need_the_token(platform: tuple[str, Settings]) -> None:
    url, _ = platform
    image = np.zeros((8, 8, 1), dtype=int).tolist()
    requests = [
        ("GET", "/v1/models", None),
        ("GET", "/v1/tasks", None),
        ("GET", "/openapi.json", None),
        ("POST", "/v1/tasks", {"template": "cnn-classification", "params": {}}),
        ("POST", "/v1/models/guarded/predict", {"array": image}),
        ("GET", "/v2/models/guarded", None),
    ]
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body in requests:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                answer = client.request(method, path, json=body, headers=headers)
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert "API token" in (answer.json().get("message") or answer.json()["error"])
        assert client.get("/v1/models").json()["error"] == "unauthenticated"
        authorized = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/models", headers=authorized).status_code == 200
        assert client.post("/v1/models/guarded/predict", json={"array": image}, headers=authorized).status_code == 200
        for open_path in ("/v2/health/live", "/v2/health/ready", "/", "/ui/main.js"):
            assert client.get(open_path).status_code == 200, open_path
        assert client.get("/v1/tasks").status_code == 401  # and nothing was created above
        assert client.get("/v1/tasks", headers=authorized).json()["tasks"] == []


def test_the_cli_sends_the_token_and_fails_clearly_without_it(platform: tuple[str, Settings], tmp_path: Path) -> None:
    url, settings = platform
    images, _ = make_digit_images(1)
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(np.asarray(images[0])[:8, :8]))
    env = {
        **os.environ,
        "AIP_API_URL": url,
        "AIP_HOME": str(settings.home),
        "AIP_RAY_NAMESPACE": settings.ray_namespace,
    }
    command = [sys.executable, "-m", "aip", "predict", str(digit), "--model", "guarded"]
    refused = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "API token" in refused.stderr
    accepted = subprocess.run(
        command, env={**env, "AIP_API_TOKEN": TOKEN}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("guarded v1:")


@needs_browser
def test_the_ui_asks_for_the_token_once_and_then_works(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept(TOKEN)))
    page.goto(platform_url + "/#models")
    expect(page.locator("#page a[href='#models/guarded']")).to_have_count(1)
    page.click("nav a[data-page=datasets]")
    page.click("nav a[data-page=models]")
    expect(page.locator("#page a[href='#models/guarded']")).to_have_count(1)
    assert len(asked) == 1 and "API token" in asked[0]
    assert page.evaluate("sessionStorage.getItem('aip-api-token')") == TOKEN  # this tab only
    assert page.evaluate("localStorage.getItem('aip-api-token')") is None
    page.screenshot(path=str(SCREENSHOTS / "10-token.png"), full_page=True)


@needs_browser
def test_the_login_url_signs_the_ui_in_and_leaves_no_token_in_the_address_bar(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.goto(f"{platform_url}/#token={TOKEN}")  # what `aip up` prints
    page.click("nav a[data-page=models]")
    expect(page.locator("#page a[href='#models/guarded']")).to_have_count(1)
    assert not asked and TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('aip-api-token')") == TOKEN
