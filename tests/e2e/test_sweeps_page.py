"""The Sweeps page and the comparison of runs in a real browser (Debian's Chromium through
Playwright), with a sweep of 1,000 stored trials; and the sweeps API's answers to bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import ray

from aiplatform.tasks.queue import FINISHED, STOPPED, TaskClient
from tests.e2e.conftest import SCREENSHOTS, accessibility_violations, needs_browser
from tests.factories import TINY_CNN_PARAMS, register_versions

pytestmark = needs_browser
STORED_TRIALS = 1000
EPOCHS = 4


@pytest.fixture(scope="module")
def platform(shared_platform: dict[str, Any]) -> dict[str, Any]:
    return shared_platform


@pytest.fixture()
def platform_url(platform: dict[str, Any]) -> str:
    return platform["url"]


def sweep_body(**overrides: Any) -> dict[str, Any]:
    return {
        "template": "cnn-classification",
        "params": {"epochs": EPOCHS, "max_rows": 600},
        "space": {
            "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "hidden_units": {"type": "choice", "values": [16, 32, 64]},
        },
        "trials": STORED_TRIALS,
        "max_concurrent_trials": 1,
        "start": False,
        **overrides,
    }


def store_trials(settings: Any, sweep_id: str, count: int = STORED_TRIALS) -> None:
    """1,000 trials as a long sweep would leave them: values, four epochs each (a third stopped
    early after two), written through the queue actor in parallel."""
    handle = TaskClient.connect(settings).handle
    calls = []
    for i in range(count):
        trial_id = f"t{i:05d}"
        lr, hidden = 10 ** (-4 + 3 * (i % 97) / 96), [16, 32, 64][i % 3]
        calls.append(
            handle.record_trial.remote(
                sweep_id, trial_id, params={"learning_rate": lr, "hidden_units": hidden}, segment=0
            )
        )
    ray.get(calls)
    calls = []
    for i in range(count):
        trial_id, lr, hidden = f"t{i:05d}", 10 ** (-4 + 3 * (i % 97) / 96), [16, 32, 64][i % 3]
        quality = 0.95 - 0.3 * abs(math.log10(lr) + 2.5) / 1.5 + 0.01 * (hidden // 16)
        epochs = 2 if i % 3 == 0 else EPOCHS
        for epoch in range(1, epochs + 1):
            calls.append(
                handle.report_trial.remote(
                    sweep_id,
                    trial_id,
                    {
                        "epoch": epoch,
                        "epochs": EPOCHS,
                        "val_accuracy": quality * (1 - 0.5**epoch),
                        "val_loss": 2 - quality * epoch / EPOCHS,
                    },
                )
            )
    ray.get(calls)
    ray.get(
        [handle.finish_trial.remote(sweep_id, f"t{i:05d}", STOPPED if i % 3 == 0 else FINISHED) for i in range(count)]
    )


def test_the_sweeps_api_refuses_bad_sweeps_and_shows_a_stored_one(platform: dict[str, Any]) -> None:
    with httpx.Client(base_url=platform["url"], timeout=60) as api:
        for change, message in [
            ({"space": {}}, "the search space is empty"),
            ({"metric": "accuracy"}, "metric 'accuracy' is not one template"),
            ({"space": {"depth": {"type": "int", "low": 1, "high": 2}}}, "has no parameter 'depth'"),
            ({"max_concurrent_trials": 9}, "for each of 9 concurrent trials"),
            ({"priority": 500}, "priority"),
            ({"trials": 0}, "trials"),
        ]:
            answer = api.post("/v1/sweeps", json=sweep_body(**change))
            assert answer.status_code == 400 and message in answer.json()["message"], answer.text
        created = api.post(
            "/v1/sweeps",
            json=sweep_body(
                trials=3,
                start=False,
                params=TINY_CNN_PARAMS | {"epochs": 2},
                space={"learning_rate": {"type": "uniform", "low": 1e-3, "high": 1e-2}},
            ),
        )
        assert created.status_code == 201, created.text
        sweep = created.json()
        assert sweep["state"] == "CREATED" and sweep["trials"] == [] and sweep["template"] == "sweep"
        assert next(s["id"] for s in api.get("/v1/sweeps").json()["sweeps"]) == sweep["id"]
        extend = api.post(f"/v1/sweeps/{sweep['id']}/extend", json={"trials": 2})
        assert extend.status_code == 409 and "before extending it" in extend.text
        assert api.post(f"/v1/sweeps/{sweep['id']}/stop").json()["state"] == "CANCELLED"
        assert api.get("/v1/sweeps/nope").status_code == 404
        missing = api.post("/v1/runs/compare", json={"ids": [f"{sweep['id']}:no-such-trial"]})
        assert missing.status_code == 404 and "no-such-trial" in missing.text
        assert api.post("/v1/runs/compare", json={"ids": []}).status_code in (400, 422)


def test_a_sweep_of_a_thousand_trials_lists_them_and_compares_them_in_the_browser(
    page, platform: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    url = platform["url"]
    sweep = httpx.post(f"{url}/v1/sweeps", json=sweep_body(), timeout=60).json()
    store_trials(platform["settings"], sweep["id"])

    page.goto(f"{url}/#sweeps")
    expect(page.locator(f"tr[data-sweep='{sweep['id']}']")).to_be_visible()
    # The form says what is wrong with a sweep before anything runs.
    page.click("#new-sweep")
    page.fill(".dim-name", "learning_rate")
    page.fill(".dim-low", "0.1")
    page.fill(".dim-high", "0.01")
    page.click("#start-sweep")
    expect(page.locator("#error-text")).to_contain_text("'low' must be below 'high'")

    page.goto(f"{url}/#sweep/{sweep['id']}")
    # 1,000 rows fetched and drawn: the suite's UI_REQUEST_WAIT_MS, not a shorter wait of its own.
    expect(page.locator("tr[data-trial]")).to_have_count(STORED_TRIALS)
    expect(page.locator("#best-trial")).to_contain_text("Best so far: trial")
    expect(page.locator("tr[data-trial][data-state=STOPPED]")).to_have_count(334)
    page.screenshot(path=str(SCREENSHOTS / "7-sweep.png"))
    # Two picked by hand: their curves, the parameters that differ.
    page.locator("tr[data-trial='t00001'] input[type=checkbox]").check()
    page.locator("tr[data-trial='t00002'] input[type=checkbox]").check()
    page.click("#compare-selected")
    expect(page.locator("#comparison")).to_have_attribute("data-runs", "2")
    expect(page.locator("#differing-params thead th")).to_have_text(
        ["Run", "State", "hidden_units", "learning_rate", "val_accuracy"]
    )

    # All 1,000: the three views drawn, one line per run in each.
    started = time.perf_counter()
    page.goto(f"{url}/#compare/{sweep['id']}")
    expect(page.locator("#comparison")).to_have_attribute("data-runs", str(STORED_TRIALS))
    seconds = time.perf_counter() - started
    expect(page.locator("svg[data-chart=curves] path.series")).to_have_count(STORED_TRIALS)
    expect(page.locator("svg[data-chart=parallel] path.run")).to_have_count(STORED_TRIALS)
    expect(page.locator("svg[data-chart=parallel] line.axis")).to_have_count(3)  # two parameters and the metric
    expect(page.locator("#differing-params tbody tr")).to_have_count(STORED_TRIALS)
    best_row = page.locator("#differing-params tbody tr").first
    assert best_row.get_attribute("data-run") == f"{sweep['id']}:{best_of(platform['settings'], sweep['id'])}"
    page.select_option("#compare-metric", "val_loss")  # switching the metric redraws at once
    expect(page.locator("svg[data-chart=curves] text").first).to_contain_text("val_loss per epoch")
    render_ms = float(page.locator("#comparison").get_attribute("data-render-ms") or "nan")
    print(
        f"comparison of {STORED_TRIALS} runs: {seconds:.2f} s from navigation to drawn, {render_ms:.0f} ms fetch+draw"
    )
    page.screenshot(path=str(SCREENSHOTS / "8-compare.png"))


def best_of(settings: Any, sweep_id: str) -> str:
    trials = TaskClient.connect(settings).trials(sweep_id)
    return max(
        (t for t in trials if t.metrics.get("val_accuracy") is not None), key=lambda t: t.metrics["val_accuracy"]
    ).trial_id


def test_the_cli_lists_shows_and_names_what_is_wrong(platform: dict[str, Any]) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIP_")},
        "AIP_API_URL": platform["url"],
        "AIP_HOME": str(platform["settings"].home),
    }

    def aip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aip", "sweeps", *args], env=env, capture_output=True, text=True, timeout=120
        )

    for args, message in [
        (
            ("create", "cnn-classification", "--space", "learning_rate=loguniform:0.1:0.01"),
            "'low' must be below 'high'",
        ),
        (("create", "cnn-classification", "--space", "depth=int:1:3"), "has no parameter 'depth'"),
        (("create", "cnn-classification", "--space", "learning_rate"), "must look like NAME=loguniform"),
        (
            ("create", "cnn-classification", "--space", "hidden_units=choice:16|32", "--metric", "f1"),
            "metric 'f1' is not one",
        ),
        (("show", "nope"), "not found"),
    ]:
        failed = aip(*args)
        assert failed.returncode == 2 and message in failed.stderr, (args, failed.stderr[-1000:])
    listed = json.loads(aip("list", "--json").stdout)["sweeps"]
    assert listed and all(s["template"] == "sweep" for s in listed)
    thousand = next(s for s in listed if s["params"]["trials"] == STORED_TRIALS)
    shown = aip("show", thousand["id"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"1000/{STORED_TRIALS} trials done" in lines[0] and "334 stopped early" in lines[0] and "best t" in lines[0]
    assert sum(1 for line in lines if " FINISHED " in line) == 666


PAGES = ("#training", "#sweeps", "#inference", "#models", "#models/a11y-cnn", "#datasets", "#monitoring", "#alerts")


def test_every_page_passes_axe_and_works_from_the_keyboard(page, platform: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    url = platform["url"]
    register_versions(platform["settings"], "a11y-cnn", count=2)
    sweep_id = httpx.post(f"{url}/v1/sweeps", json=sweep_body(trials=12), timeout=60).json()["id"]
    store_trials(platform["settings"], sweep_id, count=12)
    found = {}
    for where in (*PAGES, f"#sweep/{sweep_id}", f"#compare/{sweep_id}"):
        page.goto(f"{url}/{where}")
        expect(page.locator("#page .page-body > *").first).to_be_visible()
        found[where] = accessibility_violations(page)
    assert not any(found.values()), {where: v for where, v in found.items() if v}
    # The checker is live: an image without a text alternative is caught (critical).
    page.evaluate("() => document.querySelector('#page').append(document.createElement('img'))")
    assert [v["id"] for v in accessibility_violations(page)] == ["image-alt"]

    # The keyboard alone: Tab reaches the navigation with a visible focus ring, Enter follows a
    # link and presses a button, Escape is not needed to get out of anything.
    page.goto(f"{url}/#training")
    expect(page.locator("#new-task")).to_be_visible()
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.page") == "sweeps":
            break
    focused = page.evaluate("""() => { const el = document.activeElement, style = getComputedStyle(el);
        return {page: el.dataset.page, outline: style.outlineStyle, width: parseFloat(style.outlineWidth)}; }""")
    assert focused["page"] == "sweeps" and focused["outline"] != "none" and focused["width"] > 0, focused
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{url}/#sweeps")
    expect(page.locator("tr[data-sweep]").first).to_be_visible()  # the list has loaded
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "new-sweep":
            break
    page.keyboard.press("Enter")
    expect(page.locator("#sweep-form")).to_be_visible()
    page.keyboard.press("Tab")  # into the form: its first field
    assert page.evaluate("() => document.activeElement.id") == "sweep-template"
