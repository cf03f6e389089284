"""The People page in a real browser: who am I in the header, a user made from the page, a key
of theirs whose secret is shown once (with a copy button) and then revoked, the user disabled,
and each of those changes found in the audit log by its filters."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import SCREENSHOTS, assert_accessible, needs_browser

pytestmark = needs_browser


@pytest.fixture(scope="module")
def platform_url(shared_platform: dict[str, Any]) -> str:
    return str(shared_platform["url"])


def test_people_keys_and_the_audit_log_from_the_page(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    user = f"ui-{uuid.uuid4().hex[:8]}"
    page.goto(f"{platform_url}/#people")
    expect(page.locator("#whoami")).to_contain_text("Signed in as platform (platform admin)")  # authentication off
    expect(page.locator("nav a[data-page=people]")).to_have_class("active")

    page.fill("#user-name", user)
    page.select_option("#user-role", "member")
    page.click("#user-create")
    row = page.locator(f"#user-table tr[data-user='{user}']")
    expect(row).to_contain_text("member in default")
    row.locator(f"a[href='#people/{user}']").click()
    expect(page.locator("#keys h3").first).to_have_text(f"API keys of {user}")

    page.fill("#key-name", "laptop")
    page.fill("#key-days", "30")
    page.click("#key-create")
    secret = page.locator("#key-secret")
    expect(secret).to_have_text(re.compile(r"^aip_\S{20,}$"))
    shown = secret.inner_text()
    expect(page.locator("#key-copy")).to_be_visible()
    key = page.locator("#key-rows tr[data-state=live]")
    expect(key).to_have_count(1)
    key_id = key.get_attribute("data-key")
    assert_accessible(page)  # axe-core, with the secret shown and every panel open
    page.screenshot(path=str(SCREENSHOTS / "people-key-made.png"), full_page=True)

    page.reload()  # shown once: the platform answers the secret only when the key is made
    expect(page.locator(f"#key-rows tr[data-key='{key_id}']")).to_have_count(1)
    assert page.locator("#key-secret").count() == 0 and shown not in page.content()

    page.click(f"#key-rows tr[data-key='{key_id}'] button.key-revoke")
    expect(page.locator(f"#key-rows tr[data-key='{key_id}']")).to_have_attribute("data-state", "revoked")
    page.click(f"#user-table tr[data-user='{user}'] button.user-disable")
    expect(page.locator(f"#user-table tr[data-user='{user}'] .user-state")).to_contain_text("disabled")

    page.fill("#audit-principal", "platform")
    page.select_option("#audit-outcome", "ok")
    page.click("#audit-filter")
    rows = page.locator("#audit-rows tr")
    expect(rows.first).to_contain_text(f"/v1/users/{user}/disable")  # newest first
    changes = rows.all_inner_texts()[:10]
    for method, resource in (
        ("DELETE", f"/v1/users/{user}/keys/{key_id}"),
        ("POST", f"/v1/users/{user}/keys"),
        ("POST", "/v1/users"),
    ):
        assert any(method in text and resource in text for text in changes), (method, resource, changes)
    assert all(shown not in text for text in changes)  # never the secret
    page.select_option("#audit-outcome", "denied")
    page.click("#audit-filter")
    expect(page.locator("#audit-rows tr[data-outcome=ok]")).to_have_count(0)
    assert_accessible(page)


def test_the_project_switcher_scopes_the_pages(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from playwright.sync_api import expect

    from tests.factories import TINY_CNN_PARAMS

    project = f"ui-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=platform_url, timeout=30) as client:  # authentication off: the platform admin
        assert client.post("/v1/projects", json={"name": project}).status_code == 201
        body = {"template": "cnn-classification", "params": TINY_CNN_PARAMS, "model_name": f"{project}-cnn"}
        made = client.post("/v1/tasks", json=body, headers={"X-AIP-Project": project})
        assert made.status_code == 201, made.text
    task = made.json()["id"]
    row = page.locator(f"#task-rows tr[data-task='{task}']")

    page.goto(f"{platform_url}/#training")
    expect(page.locator("#project")).to_have_value("default")
    expect(page.locator("#task-rows tr").first).to_be_visible()
    expect(row).to_have_count(0)  # another project's task
    page.select_option("#project", project)
    expect(row).to_have_count(1)
    expect(row.locator(".task-created")).to_contain_text("by platform")
    assert_accessible(page)
    page.reload()  # remembered in this browser
    expect(page.locator("#project")).to_have_value(project)
    expect(row).to_have_count(1)
    page.select_option("#project", "default")
    expect(row).to_have_count(0)


def test_projects_and_members_from_the_people_page(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from playwright.sync_api import expect

    from tests.factories import TINY_CNN_PARAMS

    made, member = f"pp-{uuid.uuid4().hex[:8]}", f"pm-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=platform_url, timeout=30) as client:  # authentication off: the platform admin
        assert client.post("/v1/users", json={"name": member}).status_code == 201
        busy = f"pb-{uuid.uuid4().hex[:8]}"
        assert client.post("/v1/projects", json={"name": busy}).status_code == 201
        body = {"template": "cnn-classification", "params": TINY_CNN_PARAMS, "model_name": f"{busy}-cnn"}
        assert client.post("/v1/tasks", json=body, headers={"X-AIP-Project": busy}).status_code == 201

    page.goto(f"{platform_url}/#people")
    page.fill("#project-name", made)
    page.click("#project-create")
    expect(page.locator(f"#project-table tr[data-project='{made}']")).to_have_count(1)
    expect(page.locator(f"#project option[value='{made}']")).to_have_count(1)  # the switcher lists it
    # a project that holds a task is refused, naming it; default has no buttons at all
    page.click(f"#project-table tr[data-project='{busy}'] button.project-delete")
    expect(page.locator("#error-text")).to_contain_text("holds 1 task")
    assert page.locator("#project-table tr[data-project='default'] button").count() == 0

    # the chosen project's members, managed from the page
    page.select_option("#project", made)
    expect(page.locator("#members h3").first).to_have_text(f"Members of {made}")
    page.fill("#member-user", member)
    page.select_option("#member-role", "viewer")
    page.click("#member-add")
    row = page.locator(f"#member-table tr[data-member='{member}']")
    expect(row.locator("select.member-role")).to_have_value("viewer")
    row.locator("select.member-role").select_option("maintainer")
    expect(page.locator("#notice")).to_contain_text(f"{member} is a maintainer of {made}")

    # the chosen project's quota, set from the page: a refusal is shown in the panel, then saved
    expect(page.locator("#quota h3")).to_have_text(f"Quota of {made}")
    expect(page.locator("#quota-cpus")).to_have_value("")  # none set: unlimited
    page.fill("#quota-cpus", "3")
    page.fill("#quota-queued", "7")
    page.fill("#quota-weight", "0")
    page.click("#quota-save")
    expect(page.locator("#quota-error")).to_contain_text("weight: Input should be greater than 0 (HTTP 400)")
    page.fill("#quota-weight", "2.5")
    page.click("#quota-save")
    expect(page.locator("#notice")).to_contain_text(f"Saved the quota of {made}")
    expect(page.locator("#quota-error")).to_be_hidden()
    with httpx.Client(base_url=platform_url, timeout=30) as client:
        quota = client.get(f"/v1/projects/{made}/quota").json()
    fields = ("cpus", "gpus", "queued", "replicas", "weight")
    assert {k: quota[k] for k in fields} == {"cpus": 3, "gpus": None, "queued": 7, "replicas": None, "weight": 2.5}
    page.reload()  # read back from the platform
    expect(page.locator("#quota-weight")).to_have_value("2.5")
    expect(page.locator(f"#member-table tr[data-member='{member}']")).to_have_count(1)
    assert_accessible(page)
    page.screenshot(path=str(SCREENSHOTS / "people-projects.png"), full_page=True)
    page.click(f"#member-table tr[data-member='{member}'] button.member-remove")
    expect(page.locator(f"#member-table tr[data-member='{member}']")).to_have_count(0)

    # an empty project is renamed (the switcher follows) and deleted
    page.fill(f"#project-table tr[data-project='{made}'] input.project-new-name", f"{made}-2")
    page.click(f"#project-table tr[data-project='{made}'] button.project-rename")
    expect(page.locator(f"#project-table tr[data-project='{made}-2']")).to_have_count(1)
    expect(page.locator("#project")).to_have_value("default")  # the chosen one is gone: back to default
    page.click(f"#project-table tr[data-project='{made}-2'] button.project-delete")
    expect(page.locator(f"#project-table tr[data-project='{made}-2']")).to_have_count(0)
    expect(page.locator(f"#project option[value='{made}-2']")).to_have_count(0)
