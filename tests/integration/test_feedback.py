"""Ground truth and live quality on the session's Ray: predictions through the real gateway (v1
and v2), labeled through the real API and CLI into the real result-store actor; the alert engine
reads the quality, exports it to Ray's metrics and fires (and resolves) the quality rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from aiplatform.alerting.actor import AlertClient, metrics_targets
from aiplatform.monitoring.metrics import METRICS
from aiplatform.monitoring.scrape import scrape
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from tests.factories import platform_settings, register_package, served_platform, wait_for

WAIT_S = 120.0
MIN_LABELED = 5
CLASSES = ["0", "1", "2"]


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("feedback")
    with (
        platform_settings(
            home, "fb", alert_interval_s=3600, alert_quality_accuracy=0.8, alert_quality_min_labeled=MIN_LABELED
        ) as settings,
        served_platform(settings) as url,
        httpx.Client(base_url=url, timeout=60) as api,
    ):
        registry = RegistryClient.connect(settings)
        for name in ("fb-digits", "fb-quality"):
            registry.set_alias(name, "production", register_package(settings, name, num_classes=3))
        yield {"settings": settings, "api": api, "url": url, "results": ResultClient.connect(settings)}


def _image(seed: int) -> list[Any]:
    return np.random.default_rng(seed).integers(0, 255, (8, 8, 1)).tolist()


def _predict(platform: dict[str, Any], model: str, count: int) -> list[dict[str, Any]]:
    """``count`` v1 predictions, each once it is in the result store: (id, predicted label)."""
    answers = []
    for seed in range(count):
        response = platform["api"].post(f"/v1/models/{model}/predict", json={"array": _image(seed)})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    ids = [a["request_id"] for a in answers]
    wait_for(lambda: _stored(platform, ids), WAIT_S, f"{count} results of {model} in the store")
    return [{"id": a["request_id"], "label": a["label"]} for a in answers]


def _stored(platform: dict[str, Any], ids: list[str]) -> bool:
    return all(platform["api"].get(f"/v1/results/{i}").status_code == 200 for i in ids)


def _other(label: str) -> str:
    return next(c for c in CLASSES if c != label)


def test_one_label_is_kept_replaced_with_its_history_and_bad_ones_refused(platform: dict[str, Any]) -> None:
    api = platform["api"]
    [one] = _predict(platform, "fb-digits", 1)
    wrong = _other(one["label"])
    first = api.post(f"/v1/results/{one['id']}/feedback", json={"label": wrong})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "id": one["id"],
        "model": "fb-digits",
        "version": 1,
        "predicted": one["label"],
        "label": wrong,
        "previous_label": None,
        "correct": False,
        "changed": True,
    }
    second = api.post(f"/v1/results/{one['id']}/feedback", json={"label": one["label"]}).json()
    assert second["previous_label"] == wrong and second["correct"] is True
    record = api.get(f"/v1/results/{one['id']}").json()
    # labeled_by: the caller (authentication is off here: the platform admin, "platform")
    assert record["feedback"]["label"] == one["label"] and record["feedback"]["labeled_by"] == "platform"
    listed = api.get("/v1/results", params={"model": "fb-digits"}).json()["results"]
    assert [r["feedback"]["label"] for r in listed if r["id"] == one["id"]] == [one["label"]]
    history = api.get(f"/v1/results/{one['id']}/feedback").json()
    assert history["label"] == one["label"]
    assert [(e["label"], e["previous_label"]) for e in history["history"]] == [(wrong, None), (one["label"], wrong)]

    bad = api.post(f"/v1/results/{one['id']}/feedback", json={"label": "seven"})
    assert bad.status_code == 400 and bad.json()["message"].endswith(
        "'seven' is not a class of fb-digits v1; allowed: 0, 1, 2"
    )
    unknown = api.post("/v1/results/no-such-result/feedback", json={"label": "1"})
    assert unknown.status_code == 404 and "'no-such-result' not found" in unknown.json()["message"]
    assert len(api.get(f"/v1/results/{one['id']}/feedback").json()["history"]) == 2  # nothing more kept


def test_many_labels_by_request_and_client_ids_as_json_and_csv_all_or_nothing(platform: dict[str, Any]) -> None:
    api = platform["api"]
    pixels = [int(v) for seed in (1, 2) for v in np.asarray(_image(seed)).reshape(-1)]
    tensor = {"name": "input", "shape": [2, 8, 8], "datatype": "UINT8", "data": pixels}
    infer = api.post("/v2/models/fb-digits/infer", json={"id": "client-batch-7", "inputs": [tensor]})
    assert infer.status_code == 200, infer.text
    request_id = infer.json()["parameters"]["request_id"]
    assert infer.json()["id"] == "client-batch-7"
    predicted = next(o for o in infer.json()["outputs"] if o["name"] == "label")["data"]
    singles = _predict(platform, "fb-digits", 3)
    wait_for(lambda: _stored(platform, [f"{request_id}-0", f"{request_id}-1"]), WAIT_S, "the v2 request's results")

    answer = api.post(
        "/v1/results/feedback",
        json=[
            {"request_id": request_id, "index": 0, "label": predicted[0]},
            {"client_request_id": "client-batch-7", "index": 1, "label": _other(predicted[1])},
            {"id": singles[0]["id"], "label": singles[0]["label"]},
        ],
    )
    assert answer.status_code == 200, answer.text
    assert [(c["id"], c["correct"]) for c in answer.json()["results"]] == [
        (f"{request_id}-0", True),
        (f"{request_id}-1", False),
        (singles[0]["id"], True),
    ]
    ambiguous = api.post("/v1/results/feedback", json=[{"client_request_id": "client-batch-7", "label": "1"}])
    assert ambiguous.status_code == 400 and "names 2 results" in ambiguous.json()["message"]

    csv_body = f"id,label\n{singles[1]['id']},{singles[1]['label']}\n"
    by_body = api.post("/v1/results/feedback", content=csv_body, headers={"Content-Type": "text/csv"})
    assert by_body.status_code == 200 and by_body.json()["labeled"] == 1, by_body.text
    upload = f"request_id,index,label\n{request_id},1,{predicted[1]}\n"
    by_file = api.post("/v1/results/feedback", files={"file": ("labels.csv", upload.encode(), "text/csv")})
    assert by_file.status_code == 200, by_file.text
    assert by_file.json()["results"][0]["previous_label"] == _other(predicted[1])

    before = {s["id"]: api.get(f"/v1/results/{s['id']}/feedback").json()["history"] for s in singles}
    for rows, status, message in (
        (
            [{"id": singles[2]["id"], "label": "1"}, {"id": "missing-id", "label": "1"}],
            400,
            "Label row 2: result 'missing-id' not found",
        ),
        (
            [{"id": singles[2]["id"], "label": "1"}, {"id": singles[0]["id"], "label": "nine"}],
            400,
            "Label row 2: 'nine' is not a class of fb-digits v1; allowed: 0, 1, 2",
        ),
        ([{"id": singles[2]["id"], "label": "1"}, {"label": "1"}], 400, "Label row 2: give exactly one of"),
    ):
        refused = api.post("/v1/results/feedback", json=rows)
        assert refused.status_code == status and refused.json()["message"].startswith(message), refused.text
    mixed_csv = f"id,label\n{singles[2]['id']},1\nmissing-id,1\n"
    refused = api.post("/v1/results/feedback", content=mixed_csv, headers={"Content-Type": "text/csv"})
    assert refused.status_code == 400 and "row 2: result 'missing-id' not found" in refused.json()["message"]
    after = {s["id"]: api.get(f"/v1/results/{s['id']}/feedback").json()["history"] for s in singles}
    assert after == before and after[singles[2]["id"]] == []  # nothing of a refused batch stored


def test_quality_is_exported_and_the_rule_fires_with_enough_labels_and_resolves(platform: dict[str, Any]) -> None:
    api, settings = platform["api"], platform["settings"]
    alerts = AlertClient.connect(settings)
    predictions = _predict(platform, "fb-quality", MIN_LABELED + 1)

    def firing() -> list[Any]:
        return [a for a in alerts.query(state="firing", rule="quality-low") if a.labels.get("model") == "fb-quality"]

    def label(rows: list[dict[str, Any]], right: bool) -> None:
        body = [{"id": p["id"], "label": p["label"] if right else _other(p["label"])} for p in rows]
        assert api.post("/v1/results/feedback", json=body).status_code == 200

    label(predictions[: MIN_LABELED - 1], right=False)  # all wrong, but too few to judge
    alerts.evaluate_now()
    assert firing() == []
    label(predictions[MIN_LABELED - 1 :], right=False)
    label(predictions[:1], right=True)  # 1 right of MIN_LABELED + 1
    evaluation = alerts.evaluate_now()
    [fired] = [a for a in evaluation["fired"] if a["rule"] == "quality-low" and a["labels"]["model"] == "fb-quality"]
    accuracy = 1 / (MIN_LABELED + 1)
    assert fired["value"] == pytest.approx(accuracy) and fired["labels"]["version"] == "1"
    assert evaluation["signals"]["labeled_predictions{model=fb-quality,version=1}"] == MIN_LABELED + 1

    figures = api.get("/v1/results/quality", params={"model": "fb-quality"}).json()["versions"]
    assert [(q["version"], q["labeled"], q["correct"]) for q in figures] == [(1, MIN_LABELED + 1, 1)]
    assert figures[0]["accuracy"] == pytest.approx(accuracy)
    overview = api.get("/v1/monitoring/models/fb-quality", params={"window": "15m"}).json()
    assert overview["quality"]["versions"] == figures and overview["quality"]["window_s"] == settings.quality_window_s
    assert "quality_accuracy" in [c["name"] for c in overview["charts"]]
    page = api.get("/v1/results/labeled", params={"model": "fb-quality", "limit": 4}).json()
    assert len(page["predictions"]) == 4 and page["next_cursor"]
    rest = api.get("/v1/results/labeled", params={"model": "fb-quality", "after": page["next_cursor"]}).json()
    assert {p["result_id"] for p in page["predictions"] + rest["predictions"]} == {p["id"] for p in predictions}

    gauge = METRICS["aip_quality_accuracy"].prometheus_name
    wait_for(
        lambda: (
            scrape(metrics_targets()).series(gauge, ("version",), gauge=True, model="fb-quality")
            == {("1",): pytest.approx(accuracy)}
        ),
        WAIT_S,
        f"Ray's metrics to export {gauge} of fb-quality",
    )
    labeled = METRICS["aip_labeled_predictions"].prometheus_name
    assert scrape(metrics_targets()).series(labeled, (), gauge=True, model="fb-quality") == {(): MIN_LABELED + 1}

    label(predictions, right=True)  # the truth was otherwise after all: every prediction right
    assert alerts.evaluate_now()["resolved"] == []  # resolve_after: 2
    resolved = [a for a in alerts.evaluate_now()["resolved"] if a["rule"] == "quality-low"]
    assert [a["id"] for a in resolved] == [fired["id"]] and firing() == []


def test_the_cli_labels_one_and_a_file_and_shows_quality(
    platform: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aip.cli import main

    settings = platform["settings"]
    monkeypatch.setenv("AIP_HOME", str(settings.home))
    monkeypatch.setenv("AIP_API_URL", platform["url"])
    monkeypatch.setenv("AIP_API_AUTH", "off")
    monkeypatch.setenv("AIP_RAY_ADDRESS", "auto")  # so main() leaves this process's Ray environment alone
    one, two, three = _predict(platform, "fb-digits", 3)
    capsys.readouterr()
    assert main(["results", "label", one["id"], _other(one["label"])]) == 0
    out = capsys.readouterr().out
    assert f"wrong: predicted {one['label']}" in out and "labeled 1 (1 changed)" in out
    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,label\n{one['id']},{one['label']}\n{two['id']},{two['label']}\n")
    assert main(["results", "label", "--file", str(labels)]) == 0
    out = capsys.readouterr().out
    assert f"(was {_other(one['label'])})" in out and "labeled 2 (2 changed)" in out
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps([{"id": three["id"], "label": "banana"}]))
    assert main(["results", "label", "--file", str(as_json)]) == 2
    assert "'banana' is not a class of fb-digits v1; allowed: 0, 1, 2" in capsys.readouterr().err
    assert main(["results", "label", "nope-id", "1"]) == 2 and "not found" in capsys.readouterr().err
    assert main(["results", "show", one["id"]]) == 0
    assert f"true label: {one['label']}" in capsys.readouterr().out
    assert main(["results", "quality", "--model", "fb-digits"]) == 0
    assert "fb-digits v1" in capsys.readouterr().out
    assert main(["monitoring", "show", "fb-digits", "--window", "15m"]) == 0
    out = capsys.readouterr().out
    assert "live quality (labeled predictions of the last 24 h):" in out and "accuracy" in out


def test_the_grafana_alert_rules_are_valid_promql_for_the_real_prometheus(prometheus: Any) -> None:
    from aiplatform.monitoring.grafana import alert_rules

    rules = alert_rules(latency_p99_s=0.5, error_rate=0.05, queue_wait_s=600, drift_psi=0.25)
    [quality] = [r for r in rules if r["uid"] == "aip-quality-low"]
    assert quality["data"][1]["model"]["conditions"][0]["evaluator"] == {"params": [0.8], "type": "lt"}
    for rule in rules:
        prometheus.query(rule["data"][0]["model"]["expr"])  # InvalidArgument if Prometheus cannot parse it
