"""The browser the UI tests drive: Debian's Chromium through Playwright (``playwright install``
is never run), one page per test on the module's platform, screenshots in
test-artifacts/screenshots/, and a check that nothing outside the platform was fetched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplatform.model_import import CHECK_TIMEOUT_S

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TRAINING_TIMEOUT_MS = 300_000
"""A browser wait for a training task to finish: the tiny runs these tests start take seconds to a
minute; this is what a machine several times slower still fits."""
UI_REQUEST_WAIT_MS = 60_000
"""Every other browser wait (Playwright's own default is 5 s): what the page waits for is one of the
UI's requests answered, and 60 s is the timeout the tests' own API clients give such a request. A
wait returns as soon as its condition holds, so only a failing test waits this long."""
IMPORT_WAIT_MS = int((CHECK_TIMEOUT_S + 60) * 1000)
"""A browser wait for a model import: the server checks the file in a child process allowed
``CHECK_TIMEOUT_S``; a wait shorter than that failed on a slower machine while the child started."""

# Browser tests are skipped on a developer machine without it; CI (which installs it) never skips.
needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium: scripts/install-system-packages.sh",
)


@pytest.fixture()
def page(platform_url: str) -> Iterator[object]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_REQUEST_WAIT_MS)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.context.set_default_timeout(UI_REQUEST_WAIT_MS)  # and every page the test opens beside it
        # Nothing but the platform itself may be fetched (no CDN, no internet).
        foreign: list[str] = []
        page.on(
            "request", lambda request: None if request.url.startswith(platform_url) else foreign.append(request.url)
        )
        try:
            yield page
        finally:
            page.screenshot(path=str(SCREENSHOTS / "last.png"), full_page=True)
            browser.close()
        assert not foreign, f"the UI fetched other origins: {foreign}"


AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1.min.js"
"""axe-core from npm (``npm install axe-core@4.14.1``; MPL-2.0, see ``vendor/axe-core-LICENSE.txt``),
committed as its built file: the browser tests never fetch it."""
BLOCKING_IMPACTS = ("serious", "critical")


def accessibility_violations(page: object) -> list[dict[str, object]]:
    """axe-core run on the page as it is now: its serious and critical violations (rule, impact,
    help and the first elements), after the UI's own rendering has settled. The script goes in
    through the DevTools protocol, so the UI's content security policy stays as it is."""
    page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):  # type: ignore[attr-defined]
        page.evaluate(AXE.read_text())  # type: ignore[attr-defined]
    violations = page.evaluate(  # type: ignore[attr-defined]
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations.map((v) => (
             {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' '))}))"""
    )
    return [v for v in violations if v["impact"] in BLOCKING_IMPACTS]


def assert_accessible(page: object) -> None:
    """No serious or critical axe-core violation on the page (each named in the failure)."""
    import json

    violations = accessibility_violations(page)
    assert not violations, json.dumps(violations, indent=1)
