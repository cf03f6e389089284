"""The seed's walk-through in a real browser (Debian's Chromium driven by Playwright): create a
task from the template form, start it, watch it finish with its curves, then predict an uploaded
MNIST digit with the model it produced. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiplatform.tasks.scheduler import ensure_scheduler
from tests.e2e.conftest import IMPORT_WAIT_MS, SCREENSHOTS, TRAINING_TIMEOUT_MS, assert_accessible, needs_browser
from tests.factories import make_digit_images, platform_settings, png_bytes, served_platform

pytestmark = needs_browser


@pytest.fixture(scope="module")
def ui_platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    # user_code: the create form uploads a code archive (authentication off turns it off unless set).
    with platform_settings(tmp_path_factory.mktemp("ui"), "ui", task_poll_interval_s=0.5, user_code=True) as settings:
        ensure_scheduler(settings)
        with served_platform(settings) as url:
            yield url, settings


@pytest.fixture(scope="module")
def platform_url(ui_platform: tuple[str, Any]) -> str:
    return ui_platform[0]


def test_walkthrough_create_start_watch_and_predict(page, platform_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(platform_url)
    page.click("#new-task")
    page.select_option("#template-select", "cnn-classification")
    # a bad value first: the page says what is wrong and nothing is created
    page.fill("#param-epochs", "0")
    page.click("#create-submit")
    expect(page.locator("#error-text")).to_contain_text("epochs: Input should be greater than or equal to 1")
    expect(page.locator("tr[data-task]")).to_have_count(0)

    for field, value in {
        "epochs": "2",
        "max_rows": "3000",
        "batch_size": "64",
        "conv_channels": "8, 16",
        "hidden_units": "32",
    }.items():
        page.fill(f"#param-{field}", value)
    page.fill("#model-name", "ui-cnn")
    page.click("#create-submit")
    row = page.locator("tr[data-task]").first
    expect(row.locator("[data-state]")).to_have_text("CREATED")
    task_id = row.get_attribute("data-task")
    page.screenshot(path=str(SCREENSHOTS / "1-task-created.png"), full_page=True)

    row.locator("[data-action=start]").click()
    state = page.locator(f"tr[data-task='{task_id}'] [data-state]")
    expect(state).not_to_have_text("CREATED")
    # The running task's page: its log streams in as the job writes it, and stays after the end.
    page.click(f"tr[data-task='{task_id}'] a[href='#task/{task_id}']")
    logs = page.locator("#task-logs")
    expect(logs).to_have_attribute("data-streaming", "live", timeout=120_000)
    page.wait_for_function("() => Number(document.querySelector('#task-logs').dataset.lines || 0) > 0", timeout=120_000)
    first_lines = int(logs.get_attribute("data-lines") or 0)
    # A second task queued meanwhile says on its page why it waits (one task runs at a time here).
    queued = httpx.post(
        f"{platform_url}/v1/tasks",
        timeout=30,
        json={"template": "cnn-classification", "start": True, "params": {"epochs": 1, "max_rows": 600}},
    ).json()
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    second = context.new_page()
    second.goto(f"{platform_url}/#task/{queued['id']}")
    expect(second.locator("#task-waiting")).to_contain_text("as many tasks at once as it may (AIP_TASK_MAX_RUNNING=1)")
    expect(second.locator("#task-logs")).to_contain_text("no logs yet: the task is queued")
    second.screenshot(path=str(SCREENSHOTS / "2b-task-waiting.png"), full_page=True)
    assert_accessible(second)  # axe-core: no serious or critical violation
    context.close()
    assert httpx.post(f"{platform_url}/v1/tasks/{queued['id']}/cancel", timeout=30).status_code == 200
    expect(page.locator("#task-state")).to_have_text("SUCCEEDED", timeout=TRAINING_TIMEOUT_MS)
    expect(logs).to_have_attribute("data-streaming", "ended")
    assert int(logs.get_attribute("data-lines") or 0) > first_lines  # it grew while the task ran
    expect(logs).to_contain_text("Registered model ui-cnn version 1")
    page.click("a[href='#training']")
    expect(state).to_have_text("SUCCEEDED")
    page.screenshot(path=str(SCREENSHOTS / "2-task-succeeded.png"), full_page=True)

    page.click(f"tr[data-task='{task_id}'] a[href='#task/{task_id}']")
    expect(page.locator("#task-state")).to_have_text("SUCCEEDED")
    expect(page.locator("svg[data-chart=loss] path.series")).to_have_count(2)
    expect(page.locator("svg[data-chart=accuracy] path.series")).to_have_count(1)
    expect(page.locator("svg[data-chart=accuracy] circle")).to_have_count(2)  # one point per epoch
    expect(page.locator("svg[data-chart=loss] rect.legend-key")).to_have_count(2)  # a colour key per series
    expect(page.locator("svg[data-chart=accuracy] circle title").last).to_contain_text("val accuracy at epoch 2: 0.")
    expect(page.locator("svg[data-chart=loss] text.axis-label")).to_have_text("epoch")
    expect(page.locator("#task-logs")).to_contain_text(f"task {task_id}")
    expect(page.locator("#task-params tr[data-param=epochs] td")).to_have_text("2")  # parameters as a table
    job_link = page.locator("#ray-job-link")  # the run's job in Ray's dashboard
    expect(job_link).to_have_text(f"aip-task-{task_id}-1")
    assert job_link.get_attribute("href").endswith(f"/#/jobs/aip-task-{task_id}-1")
    expect(page.locator("#task-params tr[data-param=conv_channels] td")).to_have_text("[8,16]")
    page.screenshot(path=str(SCREENSHOTS / "3-task-detail-curves.png"), full_page=True)
    assert_accessible(page)  # axe-core: no serious or critical violation

    images, labels = make_digit_images(1, seed=0)
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(images[0]))
    page.click("nav a[data-page=inference]")
    page.select_option("#model-select", "ui-cnn")
    expect(page.locator("#target-select[data-model='ui-cnn'] option")).not_to_have_count(0)
    page.set_input_files("#file-input", str(digit))
    page.click("#predict")
    expect(page.locator("#predicted-label")).to_have_text(str(int(labels[0])))
    expect(page.locator(".probs tr")).to_have_count(10)
    expect(page.locator("#result-rows tr")).not_to_have_count(0)
    # What was sent: the digit's thumbnail in its row (inputs are kept by default); the filters.
    row = page.locator("#result-rows tr").first
    expect(row.locator("img.thumb")).to_have_count(1)
    assert row.locator("img.thumb").get_attribute("src").startswith("data:image/png;base64,")
    other = "3" if str(int(labels[0])) != "3" else "4"
    page.fill("#results-label", other)
    page.press("#results-label", "Enter")
    expect(page.locator("#result-rows tr")).to_have_count(0)
    page.fill("#results-label", str(int(labels[0])))
    page.press("#results-label", "Enter")
    expect(page.locator("#result-rows tr")).to_have_count(1)
    page.screenshot(path=str(SCREENSHOTS / "4-inference.png"), full_page=True)
    assert_accessible(page)  # axe-core: no serious or critical violation
    # Its detail: the input, every class's probability, the version, latency, drift features.
    row.locator("a[href^='#result/']").click()
    expect(page.locator("#result-label")).to_have_text(str(int(labels[0])))
    expect(page.locator("#result-probabilities tr")).to_have_count(10)
    expect(page.locator("#result-input img.input-large")).to_have_count(1)
    expect(page.locator("#result-facts")).to_contain_text("ui-cnn v1")
    expect(page.locator("#result-features tr")).not_to_have_count(0)
    page.screenshot(path=str(SCREENSHOTS / "4b-result.png"), full_page=True)
    assert_accessible(page)

    page.click("nav a[data-page=models]")
    page.click("a[href='#models/ui-cnn']")
    expect(page.locator("#model-detail tr[data-version='1']")).to_contain_text(f"task {task_id}")
    page.once("dialog", lambda dialog: dialog.accept("staging"))
    page.click("#model-detail tr[data-version='1'] [data-action=alias]")
    expect(page.locator("#notice")).to_contain_text("staging -> ui-cnn v1")
    page.click("#rollback")  # nothing to roll back to: the page says so
    expect(page.locator("#error-text")).to_contain_text("no earlier production version")
    page.select_option("[data-compress-method='1']", "fp16")
    page.click("#model-detail tr[data-version='1'] [data-action=compress]")
    report = page.locator("[data-report=fp16]")
    expect(report).to_contain_text("Package size", timeout=120_000)
    expect(report).to_contain_text("registered as v2")  # fp16 keeps accuracy within the gate
    expect(page.locator("#model-detail tr[data-version='2']")).to_contain_text("parent v1")
    # The lineage graph: the dataset trains the task, which registers v1; v1 was compressed into v2.
    graph = page.locator("#lineage-graph")
    expect(graph.locator("[data-node='v2']")).to_have_count(1)
    expect(graph.locator("[data-node^='dataset:mnist@']")).to_have_count(1)
    expect(graph.locator(f"[data-edge='task:{task_id}->v1']")).to_have_count(1)
    expect(graph.locator("[data-edge='v1->v2']")).to_have_count(1)
    expect(page.locator("#alias-history tr[data-alias=staging]")).to_contain_text("→ v1")
    page.screenshot(path=str(SCREENSHOTS / "5-models.png"), full_page=True)
    # Where v1 errs: per class, a confusion matrix whose cells add up to the test split, the worst
    # mistakes as thumbnails of the real test images.
    page.click("#model-detail tr[data-version='1'] [data-action=evaluation]")
    expect(page.locator("#confusion-matrix td.cm-cell")).to_have_count(100)
    expect(page.locator("#evaluation table.per-class tbody tr")).to_have_count(10)
    cells = page.eval_on_selector_all(
        "#confusion-matrix td.cm-cell", "cells => cells.map(c => Number(c.dataset.count))"
    )
    version = httpx.get(f"{platform_url}/v1/models/ui-cnn/versions/1", timeout=30).json()  # API auth off here
    assert sum(cells) == version["metrics"]["test_samples"] > 0
    worst = page.locator("#worst-examples figure.sample img")
    expect(worst).not_to_have_count(0)
    assert worst.count() == len(version["metrics"]["test_evaluation"]["worst"])
    expect(page.locator("#worst-examples figcaption").first).to_contain_text(" read as ")
    page.select_option("#compare-with", "2")  # side by side with its fp16 child: the same answers
    compared = page.locator("#evaluation-compare")
    expect(compared.locator("tbody tr[data-class]")).to_have_count(11)  # accuracy and each class
    assert set(compared.locator("td.delta").all_inner_texts()) <= {"+0.000", "-0.000"}
    page.screenshot(path=str(SCREENSHOTS / "5b-where-it-errs.png"), full_page=True)
    assert_accessible(page)  # axe-core: no serious or critical violation

    page.click("nav a[data-page=datasets]")
    page.locator("#page a[href^='#datasets/mnist/']").first.click()
    expect(page.locator("svg[data-chart^='train: images per class'] rect")).to_have_count(10)
    mean_image = page.locator("#profile-charts img[data-chart-image=mean_image_train]")
    expect(mean_image).to_have_count(1, timeout=60_000)
    page.wait_for_function(
        "() => { const img = document.querySelector("
        '"#profile-charts img[data-chart-image=mean_image_train]"); '
        "return img && img.complete && img.naturalWidth === 112; }"
    )  # the PNG loaded
    expect(page.locator("#leakage")).to_contain_text("0 inputs in more than one split")
    page.select_option("#samples-class", "7")  # the sample browser: one class's real images
    expect(page.locator("#samples figure.sample img")).to_have_count(24)
    expect(page.locator("#samples figcaption").first).to_have_text("7")
    page.click("#drift-run")  # one prediction so far: too few to compare, and the page says so
    expect(page.locator("#error-text")).to_contain_text("at least 30 recent predictions")
    page.screenshot(path=str(SCREENSHOTS / "6-datasets.png"), full_page=True)
    assert_accessible(page)  # axe-core: no serious or critical violation

    page.click("nav a[data-page=alerts]")
    expect(page.locator("h2")).to_have_text("Alerts")
    expect(page.locator("#page table").nth(1).locator("tbody tr")).to_have_count(9)  # the default rules
    page.screenshot(path=str(SCREENSHOTS / "9-alerts.png"), full_page=True)


POSITIVE = "I love it, this is wonderful, amazing and awesome. Great job, so happy and excited!"
NEGATIVE = "I hate it, this is terrible, awful and scary. Worst idea ever, so angry and afraid."


def test_sentiment_walkthrough_paste_and_upload(page, platform_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The seed's second walk-through: train the text template, paste text, upload a document."""
    from playwright.sync_api import expect

    page.goto(platform_url)
    page.click("#new-task")
    page.select_option("#template-select", "text-classification")
    for field, value in {"epochs": "2", "max_rows": "4000", "max_tokens": "32"}.items():
        page.fill(f"#param-{field}", value)
    page.fill("#model-name", "ui-sentiment")
    page.click("#create-start")  # create and queue in one go
    row = page.locator("tr[data-task]").first
    expect(row).to_contain_text("text-classification")
    expect(row.locator("[data-state]")).to_have_text("SUCCEEDED", timeout=TRAINING_TIMEOUT_MS)

    page.click("nav a[data-page=inference]")
    page.select_option("#model-select", "ui-sentiment")
    expect(page.locator("#target-select[data-model='ui-sentiment'] option")).not_to_have_count(0)
    # A 2-epoch model on 4,000 tweets is not always right about one sentence, so the checks are the
    # ones it must pass: the UI shows the model's answer, and the two texts move the classes apart.
    positive = _predict_pasted(page, POSITIVE)
    negative = _predict_pasted(page, NEGATIVE)
    assert set(positive) == set(negative) == {"negative", "neutral", "positive"}
    assert positive["positive"] > negative["positive"] and negative["negative"] > positive["negative"]
    expect(page.locator("#predicted-label")).to_have_text(max(negative, key=negative.__getitem__))
    page.screenshot(path=str(SCREENSHOTS / "7-sentiment-pasted.png"), full_page=True)

    document = tmp_path / "review.md"
    document.write_text("# Review\n\n" + " ".join([POSITIVE] * 6) + "\n\n" + NEGATIVE + "\n", encoding="utf-8")
    page.set_input_files("#file-input", str(document))
    page.click("#predict")
    expect(page.locator("#chunks tr[data-chunk]")).not_to_have_count(0)  # only the new answer has chunks
    document_probabilities = _shown_probabilities(page)
    assert document_probabilities["positive"] > negative["positive"]  # six positive chunks to one negative
    page.screenshot(path=str(SCREENSHOTS / "8-sentiment-document.png"), full_page=True)

    binary = tmp_path / "notes.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    page.set_input_files("#file-input", str(binary))
    page.click("#predict")
    expect(page.locator("#error-text")).to_contain_text("is binary, not text")


def _predict_pasted(page, text: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Paste TEXT, predict, and return the per-class probabilities the page shows."""
    from playwright.sync_api import expect

    page.fill("#text-input", text)
    page.click("#predict")
    expect(page.locator("#predicting")).to_have_count(0)  # the previous answer is gone until this one comes
    expect(page.locator(".probs tr")).to_have_count(3)
    shown = _shown_probabilities(page)
    expect(page.locator("#predicted-label")).to_have_text(max(shown, key=shown.__getitem__))
    return shown


def _shown_probabilities(page) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rows = page.locator(".probs tr")
    return {
        rows.nth(i).get_attribute("data-label"): float(rows.nth(i).get_attribute("data-probability"))
        for i in range(rows.count())
    }


def test_import_an_onnx_model_and_predict_an_upload(page, platform_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A model trained elsewhere: imported from the Models page, then asked about an uploaded image."""
    import numpy as np
    import torch
    from playwright.sync_api import expect

    from aiplatform.kinds import kind_for
    from tests.factories import onnx_classifier

    module, graph = onnx_classifier(seed=5, image_size=16)
    (tmp_path / "elsewhere.onnx").write_bytes(graph)
    page.goto(f"{platform_url}/#models")
    page.set_input_files("#import-file", str(tmp_path / "elsewhere.onnx"))
    page.fill("#import-name", "ui-imported")
    page.fill("#import-labels", "cat,dog")  # the graph has three classes: refused, with the reason
    page.click("#import-submit")
    expect(page.locator("#error-text")).to_contain_text("3 classes but 2 labels", timeout=IMPORT_WAIT_MS)
    page.fill("#import-labels", "cat,dog,owl")
    page.click("#import-submit")
    expect(page.locator("tr[data-version='1'] .imported")).to_contain_text(
        "imported elsewhere.onnx", timeout=IMPORT_WAIT_MS
    )
    page.screenshot(path=str(SCREENSHOTS / "9-imported-model.png"), full_page=True)

    image = np.random.default_rng(6).integers(0, 256, (16, 16), dtype=np.uint8)
    (tmp_path / "input.png").write_bytes(png_bytes(image))
    spec = {
        "input": {"type": "image", "height": 16, "width": 16, "channels": 1},
        "preprocessing": {"scale": 1 / 255, "mean": [0.0], "std": [1.0]},
    }
    with torch.inference_mode():
        expected = torch.softmax(module(kind_for(spec).to_tensor(image[None, ..., None])), dim=1)[0].numpy()
    page.click("nav a[data-page=inference]")
    page.select_option("#model-select", "ui-imported")
    expect(page.locator("#target-select[data-model='ui-imported'] option")).not_to_have_count(0)
    page.set_input_files("#file-input", str(tmp_path / "input.png"))
    page.click("#predict")
    expect(page.locator(".probs tr")).to_have_count(3)
    shown = _shown_probabilities(page)
    np.testing.assert_allclose([shown[k] for k in ("cat", "dog", "owl")], expected, atol=1e-4)


def test_kept_json_inputs_show_as_thumbnails_and_long_lines_stay_in_their_card(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    """A digit sent as the documented {"image_b64": ...} (by a client, or pasted into the page) is
    shown as its thumbnail; an input shown as text whose line has no break (compact JSON) wraps
    inside the results table, which stays inside its card."""
    import base64
    import json

    import numpy as np
    from playwright.sync_api import expect

    from tests.factories import onnx_classifier

    _, graph = onnx_classifier(seed=5, image_size=16)
    imported = httpx.post(
        f"{platform_url}/v1/models/ui-previews/import",
        timeout=IMPORT_WAIT_MS / 1000,
        files={"file": ("previews.onnx", graph)},
        data={"kind": "image", "labels": "cat,dog,owl"},
    )
    assert imported.status_code == 201, imported.text
    image = np.random.default_rng(8).integers(0, 256, (16, 16), dtype=np.uint8)
    encoded = base64.b64encode(png_bytes(image)).decode()
    # A kept input shown as text: the client's own key first, one run of 150 letters with no break in it.
    for body in ({"image_b64": encoded}, {"client_note": "x" * 150, "array": image.tolist()}):
        sent = httpx.post(
            f"{platform_url}/v1/models/ui-previews/predict?version=1",
            timeout=30,
            content=json.dumps(body, separators=(",", ":")),
            headers={"content-type": "application/json"},
        )
        assert sent.status_code == 200, sent.text
    page.set_viewport_size({"width": 900, "height": 900})
    page.goto(f"{platform_url}/#inference")
    page.select_option("#model-select", "ui-previews")
    expect(page.locator("#target-select[data-model='ui-previews'] option")).not_to_have_count(0)
    page.fill("#text-input", json.dumps({"image_b64": encoded}))  # a paste the image kind reads, sent as it is
    page.click("#predict")
    expect(page.locator(".probs tr")).to_have_count(3)
    expect(page.locator("#prediction")).not_to_contain_text("null")  # an answer without chunks shows nothing of them
    rows = page.locator("#result-rows tr")
    expect(rows).to_have_count(3)  # results are written a moment after their answers (UI_REQUEST_WAIT_MS)
    expect(rows.locator("img.thumb")).to_have_count(2)
    snippet = rows.locator(".snippet")
    expect(snippet).to_have_count(1)
    assert snippet.inner_text().startswith('{"client_note":"xxxx')
    card = page.locator("section.card", has=page.locator("#result-rows"))
    assert card.evaluate("c => c.scrollWidth <= c.clientWidth"), "the results table is wider than its card"
    page.screenshot(path=str(SCREENSHOTS / "9b-json-inputs.png"), full_page=True)


def test_an_imported_model_is_evaluated_on_a_test_split_it_names(
    page,
    ui_platform: tuple[str, Any],  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Evaluation at import: the accuracy, macro-F1 and where it errs of a model trained elsewhere,
    on a built dataset version's test split, as for a trained model."""
    from playwright.sync_api import expect

    from aiplatform.datasets import DatasetManager, ImageDatasetSpec
    from aiplatform.storage import storage_from_settings
    from tests.factories import onnx_classifier

    url, settings = ui_platform
    dataset = DatasetManager(storage_from_settings(settings)).build(ImageDatasetSpec(source="mnist", max_rows=600))
    _, three_classes = onnx_classifier(seed=5, image_size=28)
    refused = httpx.post(
        f"{url}/v1/models/digits-elsewhere/import",
        timeout=IMPORT_WAIT_MS / 1000,
        files={"file": ("x.onnx", three_classes)},
        data={"labels": "cat,dog,owl", "preprocessing": '{"scale": 0.00392156862745098}', "evaluate_on": dataset.ref},
    )
    assert refused.status_code == 400 and f"not dataset {dataset.ref}'s: missing ['0'" in refused.json()["message"]
    _, digits = onnx_classifier(num_classes=10, image_size=28, seed=7)
    (tmp_path / "digits.onnx").write_bytes(digits)
    page.goto(f"{url}/#models")
    page.set_input_files("#import-file", str(tmp_path / "digits.onnx"))
    page.fill("#import-name", "digits-elsewhere")
    page.fill("#import-labels", "9,8,7,6,5,4,3,2,1,0")  # its own order: the dataset's labels are mapped to it
    page.fill("#import-preprocessing", '{"scale": 0.00392156862745098}')
    page.fill("#import-evaluate-on", dataset.ref)
    page.click("#import-submit")
    expect(page.locator("tr[data-version='1'] .imported")).to_contain_text(
        "imported digits.onnx", timeout=IMPORT_WAIT_MS
    )
    version = httpx.get(f"{url}/v1/models/digits-elsewhere/versions/1", timeout=30).json()
    evaluation = version["metrics"]["test_evaluation"]
    assert version["lineage"]["dataset"] == dataset.ref
    assert version["metrics"]["test_samples"] == dataset.rows("test") == sum(map(sum, evaluation["confusion_matrix"]))
    assert evaluation["labels"] == [str(d) for d in range(9, -1, -1)]
    page.click("#model-detail tr[data-version='1'] [data-action=evaluation]")
    expect(page.locator("#confusion-matrix td.cm-cell")).to_have_count(100)
    assert_accessible(page)


def test_a_table_model_from_the_form_to_a_csv_of_rows(page, platform_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The tabular kind through the UI: the penguins trained on XGBoost from the template form,
    its curves, "Run again" offered, then a CSV of real rows predicted row by row."""
    import csv

    from playwright.sync_api import expect

    from aiplatform.datasets.tabular_sources import penguins_file

    page.goto(platform_url)
    page.click("#new-task")
    page.select_option("#template-select", "tabular-classification")
    page.fill("#param-num_boost_round", "20")
    page.fill("#model-name", "ui-penguins")
    page.click("#create-start")
    row = page.locator("tr[data-task]", has_text="ui-penguins")  # the list re-renders with it
    expect(row).to_have_count(1)
    task_id = row.get_attribute("data-task")
    expect(page.locator(f"tr[data-task='{task_id}'] [data-state]")).to_have_text(
        "SUCCEEDED", timeout=TRAINING_TIMEOUT_MS
    )
    page.click(f"tr[data-task='{task_id}'] a[href='#task/{task_id}']")
    expect(page.locator("svg[data-chart=loss] path.series")).to_have_count(2)
    expect(page.locator("#task-info [data-action=rerun]")).to_be_visible()

    with open(penguins_file(), newline="") as handle:
        rows = list(csv.DictReader(handle))[::40]
    with open(tmp_path / "penguins.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v == "NA" else v) for k, v in r.items()} for r in rows)
    page.click("nav a[data-page=inference]")
    page.select_option("#model-select", "ui-penguins")
    expect(page.locator("#target-select[data-model='ui-penguins'] option")).not_to_have_count(0)
    page.set_input_files("#file-input", str(tmp_path / "penguins.csv"))
    page.click("#predict")
    predicted = page.locator("#predictions tr[data-row] td.prediction")
    expect(predicted).to_have_count(len(rows))
    right = sum(label == r["species"] for label, r in zip(predicted.all_inner_texts(), rows))
    assert right >= len(rows) - 1, (predicted.all_inner_texts(), [r["species"] for r in rows])
    page.screenshot(path=str(SCREENSHOTS / "10-table-rows.png"), full_page=True)


def test_a_code_archive_uploads_from_the_create_form(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    """Your own code from the UI: the project's .zip goes to storage and its digest into the task."""
    from playwright.sync_api import expect

    from aiplatform.code_archives import pack_directory
    from aiplatform.storage import sha256_bytes

    archive = pack_directory(Path(__file__).resolve().parents[2] / "examples" / "digits-mlp")
    page.goto(platform_url)
    page.click("#new-task")
    page.select_option("#template-select", "user-code")
    page.set_input_files(
        "#code-file", files=[{"name": "digits-mlp.zip", "mimeType": "application/zip", "buffer": archive}]
    )
    expect(page.locator("#param-code")).to_have_value(sha256_bytes(archive))
    expect(page.locator("#code-status")).to_contain_text("kept as")


def test_the_task_list_pages_by_cursor(page, platform_url: str) -> None:  # type: ignore[no-untyped-def]
    """Older pages of tasks follow the API's cursor; the newest page comes back with one click."""
    import httpx
    from playwright.sync_api import expect

    from tests.factories import TINY_CNN_PARAMS

    with httpx.Client(base_url=platform_url, timeout=60) as api:
        for index in range(55):
            created = api.post(
                "/v1/tasks",
                json={"template": "cnn-classification", "params": TINY_CNN_PARAMS, "model_name": f"pager-{index}"},
            )
            assert created.status_code == 201, created.text
        first = api.get("/v1/tasks", params={"limit": 50}).json()
        second = api.get("/v1/tasks", params={"limit": 50, "before": first["next_before"]}).json()
    rows = page.locator("tr[data-task]")
    page.goto(platform_url)
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-task", first["tasks"][0]["id"])
    expect(page.locator("#tasks-newest")).to_be_disabled()
    page.click("#tasks-older")
    expect(page.locator("#tasks-page")).to_have_text("page 2")
    expect(rows).to_have_count(len(second["tasks"]))
    expect(rows.first).to_have_attribute("data-task", second["tasks"][0]["id"])
    page.click("#tasks-newest")
    expect(rows.first).to_have_attribute("data-task", first["tasks"][0]["id"])


def test_a_batch_job_from_a_models_version_to_its_evaluation_and_download(  # type: ignore[no-untyped-def]
    page, ui_platform: tuple[str, Any], tmp_path: Path
) -> None:
    """The Models page's *Score a dataset* opens the Batch page's form on that version; a ZIP of
    digits uploaded there is scored as a queued job whose page shows its progress, evaluation and
    a Download link, and whose row in the list shows its rows."""
    import io
    import zipfile

    from playwright.sync_api import expect

    from tests.factories import register_package

    platform_url, settings = ui_platform
    register_package(settings, "ui-batch", num_classes=10)
    images, labels = make_digit_images(12)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            archive.writestr(f"{int(label)}/digit-{index}.png", png_bytes(image))
    (tmp_path / "digits.zip").write_bytes(buffer.getvalue())

    page.goto(f"{platform_url}/#models/ui-batch")
    page.click("tr[data-version='1'] [data-action=batch]")
    expect(page.locator("#batch-form")).to_be_visible()
    expect(page.locator("#batch-model")).to_have_value("ui-batch")
    expect(page.locator("#batch-version")).to_have_value("1")
    page.select_option("#batch-source", "file")
    page.click("#batch-submit")  # no file chosen yet: said so, nothing created
    expect(page.locator("#error-text")).to_contain_text("Choose a file to score")
    page.set_input_files("#batch-file", str(tmp_path / "digits.zip"))
    page.click("#batch-submit")
    expect(page.locator("#batch-job-state")).to_have_text("SUCCEEDED", timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#batch-accuracy")).to_have_text(re.compile(r"^\d\.\d{4}$"))
    expect(page.locator("#batch-confusion tbody tr")).to_have_count(10)
    expect(page.locator("#batch-job-info a[download]")).to_have_attribute("download", re.compile(r"\.parquet$"))
    page.screenshot(path=str(SCREENSHOTS / "batch-job.png"), full_page=True)
    assert_accessible(page)

    page.click("nav a[data-page=batch]")
    row = page.locator("tr[data-batch-job]").first
    expect(row.locator("[data-state]")).to_have_text("SUCCEEDED")
    expect(row).to_contain_text("12 / 12")
    page.screenshot(path=str(SCREENSHOTS / "batch.png"), full_page=True)
    assert_accessible(page)
