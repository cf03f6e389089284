"""The loop on an image model, on the session's Ray with the platform's scheduler, gateway and loop
engine: a small digits CNN trained on upright MNIST through the task queue and made production;
traffic moves to rotated digits (v2 requests of many, and uploads), which it reads worse; part of
it is labeled; the quality alert those labels fire starts a run that builds an image dataset
version with the labeled inputs (decoded as serving decoded them), trains, passes the gate on
production's test split and the rotated held-out slice, canaries and promotes. The promoted
version reads unseen rotated digits better than the old one did, and the run's lineage runs from
the alert to it. Then a candidate that cannot beat production by the policy's margin is refused
at the gate and never canaried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from aiplatform.datasets.sources import mnist_test_digits
from tests.factories import png_bytes, wait_for
from tests.integration.test_loops import RUN_S, _ended, _run, loop_platform, train_production

pytestmark = pytest.mark.integration

MODEL = "loop-digits"
CNN = {"max_rows": 1500, "epochs": 1, "batch_size": 64, "conv_channels": [8], "hidden_units": 32}
"""Production: 1,500 upright MNIST rows, one epoch of a tiny CNN."""
RETRAIN = {"epochs": 2}
"""The run trains production's parameters on its data (upright and rotated) a little longer."""
TRAFFIC, UPLOADS, LABELED, EVALUATED = 1000, 12, 800, 400
"""Rotated digits sent (of them single uploads), labeled, and unseen ones both versions read."""
BATCH = 100


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # Upright digits' model on rotated ones is far below 0.95.
    home = tmp_path_factory.mktemp("loops-digits")
    with loop_platform(home, "loopsdigits", alert_quality_accuracy=0.95) as platform:
        yield platform


def rotated(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST test digits turned a quarter turn (past the rows production's dataset holds)."""
    images, labels = mnist_test_digits(count, offset=offset)
    return np.ascontiguousarray(np.rot90(images, k=1, axes=(1, 2))), labels


def _production(platform: dict[str, Any]) -> int:
    return train_production(platform, MODEL, "cnn-classification", CNN)


def _infer(api: httpx.Client, images: np.ndarray, version: int | None = None) -> dict[str, Any]:
    tensor = {"name": "input", "datatype": "UINT8", "shape": [len(images), 28, 28], "data": images.ravel().tolist()}
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    answer = api.post(path, json={"inputs": [tensor]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _accuracy(api: httpx.Client, version: int, images: np.ndarray, labels: np.ndarray) -> float:
    predicted: list[str] = []
    for start in range(0, len(images), BATCH):
        outputs = _infer(api, images[start : start + BATCH], version)["outputs"]
        predicted += next(o for o in outputs if o["name"] == "label")["data"]
    return float(np.mean([p == str(t) for p, t in zip(predicted, labels)]))


def _shifted_traffic(platform: dict[str, Any]) -> list[dict[str, Any]]:
    """Rotated digits through the default route (v2 requests of many, a few uploads), the first
    ``LABELED`` of them labeled with their digit."""
    api = platform["api"]
    images, labels = rotated(TRAFFIC, offset=CNN["max_rows"])
    named: list[tuple[dict[str, Any], int]] = []
    for i in range(UPLOADS):
        answer = api.post(
            f"/v1/models/{MODEL}/predict", files={"file": ("digit.png", png_bytes(images[i]), "image/png")}
        )
        assert answer.status_code == 200, answer.text
        named.append(({"id": answer.json()["request_id"]}, i))
    for start in range(UPLOADS, TRAFFIC, BATCH):
        request_id = _infer(api, images[start : start + BATCH])["parameters"]["request_id"]
        named += [({"request_id": request_id, "index": i}, start + i) for i in range(min(BATCH, TRAFFIC - start))]
    feedback = [{**who, "label": str(labels[i])} for who, i in named[:LABELED]]
    last = feedback[-1]
    wait_for(
        lambda: api.get(f"/v1/results/{last['request_id']}-{last['index']}").status_code == 200,
        60,
        "the predictions in the result store",
    )
    answer = api.post("/v1/results/feedback", json=feedback)
    assert answer.status_code == 200, answer.text
    assert answer.json()["labeled"] == LABELED
    return feedback


def test_a_digits_model_shifted_to_rotated_digits_is_retrained_on_its_labels_and_promoted(
    platform: dict[str, Any],
) -> None:
    api, registry = platform["api"], platform["registry"]
    production = _production(platform)
    _shifted_traffic(platform)
    policy = {
        "model": MODEL,
        "on_alerts": ["quality-low"],
        "cooldown_s": 0,
        "data": {"holdout_fraction": 0.3, "seed": 3},
        "train": {"params": RETRAIN},
        "gate": {"margin": 0.0},
        "canary": {"weight": 25, "watch_s": 1},
    }
    created = api.post("/v1/loops", json=policy)
    assert created.status_code == 201, created.text

    evaluation = api.post("/v1/alerts/evaluate").json()
    fired = [a for a in evaluation["fired"] if a["rule"] == "quality-low" and a["labels"].get("model") == MODEL]
    assert fired, evaluation["signals"]
    wait_for(lambda: api.get(f"/v1/loops/{MODEL}/runs").json()["runs"], 60, "the alert's run")
    run_id = api.get(f"/v1/loops/{MODEL}/runs").json()["runs"][0]["id"]
    wait_for(lambda: _ended(api, run_id), 2 * RUN_S, "the run's end")

    run = _run(api, run_id)
    steps = {s["step"]: s for s in run["steps"]}
    assert run["state"] == "promoted", run
    assert list(steps) == ["triggered", "data", "train", "gate", "canary", "decide"]
    data = steps["data"]
    assert data["kind"] == "image" and data["unreadable"] == 0 and data["labeled"] == LABELED
    assert data["holdout"] > 0 and data["fresh_train"] + data["holdout"] == LABELED
    # Production's training rows (its test rows stay out: the gate's original slice) and the fresh ones.
    assert sum(data["rows"].values()) == CNN["max_rows"] + data["fresh_train"]
    candidate = steps["train"]["version"]
    gate = steps["gate"]
    assert gate["fresh"]["rows"] == data["holdout"]
    assert gate["fresh"]["candidate_accuracy"] > gate["fresh"]["production_accuracy"]
    assert gate["original"]["candidate_accuracy"] >= gate["original"]["production_accuracy"]
    assert steps["canary"]["weights"] == {str(production): 75.0, str(candidate): 25.0}
    assert registry.aliases(MODEL)["production"] == candidate and registry.get_traffic(MODEL) == {}
    assert registry.get_version(MODEL, candidate).lineage["dataset"] == data["dataset"]

    # Unseen rotated digits: the promoted version reads them better than the old one did.
    images, labels = rotated(EVALUATED, offset=CNN["max_rows"] + TRAFFIC)
    before, after = _accuracy(api, production, images, labels), _accuracy(api, candidate, images, labels)
    assert after > before + 0.1, (before, after)

    chain = api.get(f"/v1/loops/runs/{run_id}/lineage").json()["chain"]
    assert [link["kind"] for link in chain] == ["alert", "dataset", "task", "version", "gate", "canary", "decide"]
    assert chain[0]["alert_id"] == fired[0]["id"] and chain[1]["labeled"] == LABELED
    assert chain[3]["version"] == candidate and chain[-1]["outcome"] == "promoted"

    # A margin no candidate can reach: trained, refused at the gate, never canaried.
    strict = {**policy, "on_alerts": [], "data": {"min_labeled": 0}, "gate": {"margin": 1.0}}
    strict["train"] = {"params": {"epochs": 1}}
    assert api.post("/v1/loops", json=strict).status_code in (200, 201)
    started = api.post(f"/v1/loops/{MODEL}/trigger", json={"detail": "a margin none can reach"}).json()
    assert started["run"] is not None, started
    refused_id = started["run"]["id"]
    wait_for(lambda: _ended(api, refused_id), 2 * RUN_S, "the refused run's end")
    refused = _run(api, refused_id)
    assert refused["state"] == "rejected", refused["steps"]
    assert [s["step"] for s in refused["steps"]] == ["triggered", "data", "train", "gate"]
    assert "original: accuracy" in refused["steps"][-1]["reasons"][0]
    # Its data is production's whole: split by content, every row lands in the split it was in.
    assert refused["steps"][1]["labeled"] == 0 and refused["steps"][1]["rows"] == data["rows"]
    assert registry.aliases(MODEL)["production"] == candidate and registry.get_traffic(MODEL) == {}
