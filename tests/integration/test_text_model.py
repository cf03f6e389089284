"""The text-classification template end to end on the session's Ray: the tweets corpus -> Ray
Train -> registry -> the Serve gateway, with pasted text, uploaded documents (chunked) and v2."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aiplatform.datasets import DatasetManager
from aiplatform.storage import storage_from_settings
from tests.factories import train_and_publish

POSITIVE = "I love it, this is wonderful, amazing and awesome. Great job, so happy and excited!"
NEGATIVE = "I hate it, this is terrible, awful and scary. Worst idea ever, so angry and afraid."


@pytest.fixture(scope="module")
def text_model(shared_platform: dict[str, Any]) -> Iterator[dict[str, Any]]:
    settings = shared_platform["settings"]
    outcome, version, _ = train_and_publish(
        settings, "text-classification", {"epochs": 1, "max_tokens": 32}, "tweets-text"
    )
    with httpx.Client(base_url=shared_platform["url"], timeout=300) as client:
        yield {"outcome": outcome, "version": version, "api": client, "settings": settings}


def test_the_tweets_corpus_became_a_stratified_clean_version(text_model: dict[str, Any]) -> None:
    version = text_model["outcome"].dataset
    manifest = version.manifest
    assert manifest["kind"] == "text" and version.labels == ["negative", "neutral", "positive"]
    cleaning = manifest["cleaning"]
    assert cleaning["source_rows"] == 38158 and cleaning["duplicates_removed"] > 0
    assert cleaning["rows"] == sum(manifest["splits"][s]["rows"] for s in ("train", "val", "test"))
    for label in version.labels:  # every class keeps its share in every split
        total = sum(manifest["splits"][s]["per_class"].get(label, 0) for s in ("train", "val", "test"))
        assert abs(manifest["splits"]["test"]["per_class"][label] - total * 0.1) <= 1
        assert abs(manifest["splits"]["val"]["per_class"][label] - total * 0.1) <= 1
    assert manifest["leakage"]["texts_in_several_splits"] == 0
    profile = manifest["profile"]
    assert profile["train"]["mean_words"] > 3
    assert sum(profile["train"]["words_histogram"]["counts"]) == version.rows("train")
    assert set(profile["top_tokens"]) == set(version.labels) and profile["top_tokens"]["positive"]
    assert 0.5 < profile["vocabulary"]["coverage"]["test"] < 1.0


def test_training_reports_accuracy_and_macro_f1_on_the_test_split(text_model: dict[str, Any]) -> None:
    outcome = text_model["outcome"]
    assert outcome.dataset.labels == ["negative", "neutral", "positive"]
    assert [h["epoch"] for h in outcome.history] == [1]
    assert outcome.test_metrics["test_accuracy"] > 0.6 and outcome.test_metrics["test_macro_f1"] > 0.5
    assert outcome.preprocessing["tokenizer"]["vocab"]  # the tokenizer travels with the model
    assert text_model["version"].metrics["test_macro_f1"] == outcome.test_metrics["test_macro_f1"]
    # Where it errs, kept with the version: the matrix covers the whole test split.
    evaluation = text_model["version"].metrics["test_evaluation"]
    assert evaluation["labels"] == outcome.dataset.labels
    assert sum(map(sum, evaluation["confusion_matrix"])) == outcome.test_metrics["test_samples"]
    assert [c["support"] for c in evaluation["per_class"]] == [sum(row) for row in evaluation["confusion_matrix"]]
    assert evaluation["worst"] and all(w["label"] != w["predicted"] for w in evaluation["worst"])


def test_pasted_text_gets_the_right_sentiment(text_model: dict[str, Any]) -> None:
    api = text_model["api"]
    for text, expected in ((POSITIVE, "positive"), (NEGATIVE, "negative")):
        answer = api.post("/v1/models/tweets-text/predict?version=1", json={"text": text})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] == expected, body
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) and "chunks" not in body


def test_an_uploaded_document_is_classified_chunk_by_chunk(text_model: dict[str, Any]) -> None:
    api = text_model["api"]
    document = "# Review\n\n" + " ".join([POSITIVE] * 6) + "\n\n" + NEGATIVE + "\n"
    answer = api.post(
        "/v1/models/tweets-text/predict?version=1", files={"file": ("review.md", document.encode(), "text/markdown")}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["chunks"]) >= 3 and body["label"] == "positive"
    assert sum(c["words"] for c in body["chunks"]) > 90
    assert body["chunks"][-1]["label"] == "negative"  # the sour last paragraph, outweighed


@pytest.mark.parametrize(
    "upload, message",
    [
        (("notes.txt", "caf\xe9 terrible".encode("latin-1")), "is not valid UTF-8"),
        (("notes.txt", b"\x89PNG\r\n\x1a\n\x00\x00binary"), "is binary, not text"),
        (("notes.txt", "hello".encode("utf-16")), "is UTF-16"),
        (("photo.png", b"some text"), "not a text document"),
        (("empty.txt", b""), "is empty"),
    ],
)
def test_bad_documents_are_refused_by_name(text_model: dict[str, Any], upload: tuple[str, bytes], message: str) -> None:
    answer = text_model["api"].post("/v1/models/tweets-text/predict?version=1", files={"file": upload})
    assert answer.status_code == 400 and message in answer.json()["message"], answer.text


def test_empty_text_and_v2_bytes(text_model: dict[str, Any]) -> None:
    api = text_model["api"]
    assert (
        "'text' is empty" in api.post("/v1/models/tweets-text/predict?version=1", json={"text": "  "}).json()["message"]
    )
    assert "text model" in api.post("/v1/models/tweets-text/predict?version=1", json={"array": [1]}).json()["message"]
    metadata = api.get("/v2/models/tweets-text/versions/1").json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    infer = api.post(
        "/v2/models/tweets-text/versions/1/infer",
        json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": [POSITIVE, NEGATIVE]}]},
    )
    assert infer.status_code == 200, infer.text
    labels = next(o for o in infer.json()["outputs"] if o["name"] == "label")["data"]
    assert labels == ["positive", "negative"]
    bad = api.post(
        "/v2/models/tweets-text/versions/1/infer",
        json={"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
    )
    assert bad.status_code == 400 and "BYTES" in bad.json()["error"]


def test_int8_compression_registers_a_smaller_version_that_serves(text_model: dict[str, Any]) -> None:
    api = text_model["api"]
    answer = api.post("/v1/models/tweets-text/compress", json={"version": 1, "method": "int8"})
    assert answer.status_code == 201, answer.text
    report = answer.json()["report"]
    assert report["registered"] and report["parent_version"] == 1 and report["method"] == "int8"
    assert report["size_bytes"]["after"] < 0.35 * report["size_bytes"]["before"]
    test_rows = text_model["outcome"].dataset.rows("test")
    assert report["accuracy_drop"] <= 0.01 and report["metrics"]["after"]["test_samples"] == test_rows
    assert set(report["latency_ms"]) == {"batch_1", "batch_32"}
    new = report["version"]
    version = api.get(f"/v1/models/tweets-text/versions/{new}").json()
    assert version["lineage"]["parent"] == 1 and version["lineage"]["compression"] == "int8"
    assert version["metrics"]["test_accuracy"] == report["metrics"]["after"]["test_accuracy"]
    chain = api.get(f"/v1/models/tweets-text/versions/{new}/lineage").json()["lineage"]
    assert [entry["version"] for entry in chain] == [new, 1]
    served = api.post(f"/v1/models/tweets-text/predict?version={new}", json={"text": POSITIVE})
    assert served.status_code == 200 and served.json()["label"] == "positive", served.text
    again = api.post("/v1/models/tweets-text/compress", json={"version": 1, "method": "int8"})
    assert again.status_code == 201 and again.json()["report"]["version"] == new  # a retry registers nothing new


def test_the_accuracy_gate_refuses_a_lossy_compression_and_keeps_the_registry(text_model: dict[str, Any]) -> None:
    api = text_model["api"]
    before = api.get("/v1/models/tweets-text").json()["versions"]
    answer = api.post(
        "/v1/models/tweets-text/compress", json={"version": 1, "method": "prune:0.95", "max_accuracy_drop": 0.0}
    )
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["error"] == "conflict" and "points of test accuracy" in body["message"]
    assert body["report"]["registered"] is False and body["report"]["accuracy_drop"] > 0
    assert api.get("/v1/models/tweets-text").json()["versions"] == before


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"version": 1, "method": "int4"}, 400, "Unknown compression method"),
        ({"version": 1, "method": "prune:1.5"}, 400, "prune"),
        ({"version": 99, "method": "int8"}, 404, "version=99"),
        ({"version": 1, "alias": "staging", "method": "int8"}, 400, "not both"),
        ({"version": 1, "method": "int8", "max_accuracy_drop": 2}, 400, "max_accuracy_drop"),
    ],
)
def test_bad_compression_requests_are_refused_by_name(
    text_model: dict[str, Any], body: dict[str, Any], status: int, message: str
) -> None:
    answer = text_model["api"].post("/v1/models/tweets-text/compress", json=body)
    assert answer.status_code == status and message in answer.json()["message"], answer.text


def test_the_compress_job_prints_its_report_and_refuses_a_recompression(
    text_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs import compress

    settings = text_model["settings"]
    monkeypatch.setenv("AIP_HOME", str(settings.home))
    monkeypatch.setenv("AIP_RAY_NAMESPACE", settings.ray_namespace)
    assert compress.main(["--model", "tweets-text@1", "--method", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert "tweets-text v1 --fp16--> v" in printed and "latency at batch 32" in printed
    int8 = text_model["api"].post("/v1/models/tweets-text/compress", json={"version": 1, "method": "int8"})
    int8_version = int8.json()["report"]["version"]  # the one registered before, or a new one
    assert compress.main(["--model", f"tweets-text@{int8_version}", "--method", "prune:0.5"]) == 2
    assert "already int8" in capsys.readouterr().err


def _predict_many(api: httpx.Client, texts: list[str]) -> None:
    """One v2 request per 50 texts; each text becomes its own result with its features."""
    for start in range(0, len(texts), 50):
        part = texts[start : start + 50]
        answer = api.post(
            "/v2/models/tweets-text/versions/1/infer",
            json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(part)], "data": part}]},
        )
        assert answer.status_code == 200, answer.text


def _wait_for_results(api: httpx.Client, since: float, count: int) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        results = api.get("/v1/results", params={"model": "tweets-text", "since": since, "limit": 1000}).json()[
            "results"
        ]
        if len(results) >= count:
            assert all(set(r["features"]) == {"chars", "tokens", "oov_rate"} for r in results)
            return
        time.sleep(0.5)
    raise AssertionError(f"the result store did not get {count} results")


def test_drift_is_stable_for_tweets_like_the_training_data_and_significant_for_shifted_text(
    text_model: dict[str, Any],
) -> None:
    api, outcome = text_model["api"], text_model["outcome"]
    dataset = outcome.dataset
    test_texts = [
        str(t)
        for t in DatasetManager(storage_from_settings(text_model["settings"]))
        .read_split_table(dataset, "test")
        .column("text")
        .to_pylist()[:300]
    ]
    started = time.time()
    _predict_many(api, test_texts)
    _wait_for_results(api, started, len(test_texts))
    stable = api.post("/v1/analysis/drift", json={"model": "tweets-text", "version": 1, "since": started})
    assert stable.status_code == 200, stable.text
    report = stable.json()
    assert report["live_samples"] == 300 and report["dataset"] == dataset.ref
    assert set(report["features"]) == {"chars", "tokens", "oov_rate", "predicted_class"}
    assert report["verdict"] == "stable", {name: f["psi"] for name, f in report["features"].items()}
    chart = api.get(report["chart_urls"]["oov_rate"])
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")

    shifted_at = time.time()
    rng = random.Random(0)
    shifted = [
        " ".join("".join(rng.choice("qxzjkvw") for _ in range(7)) for _ in range(40)) + " terrible" for _ in range(300)
    ]  # long texts of words no tweet used
    _predict_many(api, shifted)
    _wait_for_results(api, shifted_at, len(shifted))
    report = api.post("/v1/analysis/drift", json={"model": "tweets-text", "since": shifted_at}).json()
    assert report["verdict"] == "significant" and {"oov_rate", "tokens", "chars"} <= set(report["drifted"])

    # The alert engine hears of it: a drift alert per drifted feature, on the next evaluation.
    evaluation = api.post("/v1/alerts/evaluate").json()
    drift_alerts = {a["labels"]["feature"] for a in evaluation["fired"] if a["rule"] == "drift-significant"}
    assert {"oov_rate", "tokens", "chars"} <= drift_alerts, evaluation["signals"]
    firing = api.get("/v1/alerts", params={"state": "firing", "rule": "drift-significant"}).json()["alerts"]
    # The shared platform's other modules have models of their own drifting (test_tabular's penguins).
    ours = {a["labels"]["feature"] for a in firing if a["labels"]["model"] == "tweets-text"}
    assert {"oov_rate", "tokens", "chars"} <= ours, firing


def test_bad_drift_requests_are_refused_by_name(text_model: dict[str, Any]) -> None:
    api = text_model["api"]
    for body, status, message in (
        ({"model": "nope"}, 404, "nope"),
        ({"model": "tweets-text", "split": "holdout"}, 400, "Unknown split"),
        ({"model": "tweets-text", "since": time.time() + 3600}, 400, "at least 30 recent predictions"),
        ({"model": "tweets-text", "dataset": "mnist@nope"}, 404, "not found"),
        ({"model": "tweets-text", "limit": 0}, 400, "limit"),
    ):
        answer = api.post("/v1/analysis/drift", json=body)
        assert answer.status_code == status and message in answer.json()["message"], (body, answer.text)
    assert api.get("/v1/analysis/datasets/tweets-sentiment/nope").status_code == 404
