"""True labels in a real browser: set one from the results list, replace it on the result's page
(its history shown), and read the live quality on the Monitoring page."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from aiplatform.registry import RegistryClient
from tests.e2e.conftest import SCREENSHOTS, assert_accessible, needs_browser
from tests.factories import register_package, wait_for

pytestmark = needs_browser


@pytest.fixture(scope="module")
def platform_url(shared_platform: dict[str, Any]) -> str:
    settings = shared_platform["settings"]
    RegistryClient.connect(settings).set_alias(
        "ui-labels", "production", register_package(settings, "ui-labels", num_classes=3)
    )
    return str(shared_platform["url"])


def _predict(url: str) -> dict[str, Any]:
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 1)).tolist()
    with httpx.Client(base_url=url, timeout=60) as api:
        answer = api.post("/v1/models/ui-labels/predict", json={"array": image}).json()
        wait_for(lambda: api.get(f"/v1/results/{answer['request_id']}").status_code == 200, 60, "the result")
    return answer


def test_a_label_set_in_the_results_list_is_replaced_on_the_results_page(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    answer = _predict(platform_url)
    wrong = next(c for c in ("0", "1", "2") if c != answer["label"])
    page.goto(f"{platform_url}/#inference")
    page.select_option("#model-select", "ui-labels")
    control = page.locator(f"select.true-label[data-result='{answer['request_id']}']")
    expect(control).to_have_count(1)
    control.select_option(wrong)
    expect(page.locator(f"select.true-label[data-result='{answer['request_id']}']")).to_have_value(wrong)
    assert_accessible(page)

    page.goto(f"{platform_url}/#result/{answer['request_id']}")
    expect(page.locator("#result-verdict")).to_contain_text(f"the prediction ({answer['label']}) was wrong")
    page.locator("#result-feedback select.true-label").select_option(answer["label"])
    expect(page.locator("#result-verdict")).to_contain_text("the prediction was right")
    expect(page.locator("#result-feedback-history tbody tr")).to_have_count(2)
    page.screenshot(path=str(SCREENSHOTS / "labels-result.png"), full_page=True)
    assert_accessible(page)

    page.goto(f"{platform_url}/#monitoring/ui-labels")
    row = page.locator("#monitor-quality tr[data-version='1']")
    expect(row.locator(".accuracy")).to_have_text("100.0%")
    expect(row.locator(".count")).to_have_text("1")
