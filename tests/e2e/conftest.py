"""The browser the UI tests drive: Debian's Chromium through Playwright (``playwright install``
is never run), one page per test on the module's platform, screenshots in
test-artifacts/screenshots/, and a check that nothing outside the platform was fetched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TRAINING_TIMEOUT_MS = 300_000

# Browser tests are skipped on a developer machine without it; CI (which installs it) never skips.
needs_browser = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                   reason="needs Debian's chromium: scripts/install-system-packages.sh")


@pytest.fixture()
def page(platform_url: str) -> Iterator["object"]:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # Nothing but the platform itself may be fetched (no CDN, no internet).
        foreign: list[str] = []
        page.on("request", lambda request: None if request.url.startswith(platform_url) else foreign.append(request.url))
        try:
            yield page
        finally:
            page.screenshot(path=str(SCREENSHOTS / "last.png"), full_page=True)
            browser.close()
        assert not foreign, f"the UI fetched other origins: {foreign}"
