"""The loop on a text model, on the session's Ray with the platform's scheduler, gateway and loop
engine: a tiny ``text-classification`` model trained through the task queue on a small CSV under
the data root (reviews in plain words) and made production; traffic moves to slang it has never
read, sent in every form serving takes (a v1 ``{"text"}`` body, an uploaded .txt, v2 BYTES
requests of several texts), a few of production's own test texts among it; most of it is labeled.
A run started by hand builds a text dataset version from production's train and validation texts
and the labeled inputs decoded as serving decoded them (the test texts kept out: counted as seen),
trains from the ``parquet:`` source, gates on production's test split and the held-out slice (its
production accuracy the one serving's answers had) and ends promoted or rejected, with its lineage."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiplatform.datasets import DatasetManager
from aiplatform.loops.data import holdout_inputs
from aiplatform.storage import storage_from_settings
from tests.factories import wait_for
from tests.integration.test_loops import RUN_S, _ended, _run, loop_platform, train_production

pytestmark = pytest.mark.integration

MODEL = "loop-reviews"
PLAIN = {
    "positive": ["good", "great", "lovely", "happy", "excellent", "nice", "wonderful", "pleasant"],
    "negative": ["bad", "awful", "sad", "terrible", "poor", "nasty", "horrible", "dreadful"],
}
SLANG = {
    "positive": ["goated", "bussin", "slaps", "immaculate", "fire", "elite", "banger", "peak"],
    "negative": ["mid", "cringe", "trash", "bleh", "janky", "busted", "washed", "flop"],
}
"""What traffic moves to: words production's tokenizer never saw."""
FILLER = [
    "movie",
    "meal",
    "trip",
    "phone",
    "book",
    "service",
    "show",
    "hotel",
    "today",
    "honestly",
    "really",
    "new",
    "old",
    "friend",
    "said",
    "so",
    "very",
    "quite",
    "week",
    "our",
    "team",
    "game",
    "song",
    "place",
    "staff",
    "price",
    "room",
    "view",
    "night",
    "weekend",
]
PARAMS = {
    "text_column": "text",
    "label_column": "label",
    "epochs": 5,
    "batch_size": 32,
    "learning_rate": 0.02,
    "embedding_dim": 16,
    "hidden_units": 16,
    "max_tokens": 16,
    "min_freq": 1,
    "bigram_buckets": 0,
}
"""Production: 400 plain reviews, a few epochs of a tiny bag of words (the run trains the same)."""
CORPUS, JSON_TEXTS, UPLOADS, V2_REQUESTS, V2_TEXTS, TEST_TEXTS, UNLABELED = 400, 20, 8, 4, 40, 10, 4
"""Reviews production learns from; slang traffic in each form; production's test texts sent
(in the first v2 request); v1 requests left unlabeled."""


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with loop_platform(tmp_path_factory.mktemp("loops-text"), "loopstext") as platform:
        yield platform


def _texts(words: dict[str, list[str]], count: int, rng: random.Random, taken: set[str]) -> list[tuple[str, str]]:
    """``count`` distinct reviews (text, label), classes alternating: two of the class's words
    among four fillers."""
    made: list[tuple[str, str]] = []
    while len(made) < count:
        label = ("positive", "negative")[len(made) % 2]
        tokens = rng.sample(words[label], 2) + rng.sample(FILLER, 4)
        rng.shuffle(tokens)
        text = " ".join(tokens)
        if text not in taken:
            taken.add(text)
            made.append((text, label))
    return made


def _production(platform: dict[str, Any], rng: random.Random, taken: set[str]) -> int:
    folder = platform["settings"].resolved_data_root / "reviews"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "plain.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(_texts(PLAIN, CORPUS, rng, taken))
    params = {"dataset": f"csv:{folder / 'plain.csv'}", **PARAMS}
    return train_production(platform, MODEL, "text-classification", params)


def _traffic(
    api: httpx.Client, rng: random.Random, taken: set[str], test_texts: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Slang sent as v1 JSON bodies, uploaded .txt documents and v2 BYTES requests (the first
    with production's test texts in it); the labels for all but the first ``UNLABELED``."""
    named: list[dict[str, Any]] = []
    for text, label in _texts(SLANG, JSON_TEXTS, rng, taken):
        answer = api.post(f"/v1/models/{MODEL}/predict", json={"text": text})
        assert answer.status_code == 200, answer.text
        named.append({"id": answer.json()["request_id"], "label": label})
    for text, label in _texts(SLANG, UPLOADS, rng, taken):
        document = f"{text}.\n\n{text.upper()}!\n"
        answer = api.post(
            f"/v1/models/{MODEL}/predict", files={"file": ("review.txt", document.encode(), "text/plain")}
        )
        assert answer.status_code == 200, answer.text
        named.append({"id": answer.json()["request_id"], "label": label})
    for n in range(V2_REQUESTS):
        batch = _texts(SLANG, V2_TEXTS, rng, taken) + (test_texts if n == 0 else [])
        tensor = {"name": "text", "datatype": "BYTES", "shape": [len(batch)], "data": [t for t, _ in batch]}
        answer = api.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["parameters"]["request_id"]
        named += [{"request_id": request_id, "index": i, "label": label} for i, (_, label) in enumerate(batch)]
    last = named[-1]
    wait_for(
        lambda: api.get(f"/v1/results/{last['request_id']}-{last['index']}").status_code == 200,
        60,
        "the predictions in the result store",
    )
    feedback = named[UNLABELED:]
    answer = api.post("/v1/results/feedback", json=feedback)
    assert answer.status_code == 200, answer.text
    assert answer.json()["labeled"] == len(feedback)
    return feedback


def test_a_text_model_is_retrained_on_its_labeled_texts_and_uploads(platform: dict[str, Any]) -> None:
    api, registry, settings = platform["api"], platform["registry"], platform["settings"]
    rng, taken = random.Random(7), set[str]()
    production = _production(platform, rng, taken)
    datasets = DatasetManager.from_settings(storage_from_settings(settings), settings)
    original = datasets.get_ref(registry.get_version(MODEL, production).lineage["dataset"])
    test_table = datasets.read_split_table(original, "test")
    test_texts = [
        (str(text), original.labels[int(index)])
        for text, index in zip(test_table.column("text").to_pylist(), test_table.column("label").to_pylist())
    ][:TEST_TEXTS]
    labeled = _traffic(api, rng, taken, test_texts)

    policy = {
        "model": MODEL,
        "cooldown_s": 0,
        "data": {"holdout_fraction": 0.3, "seed": 2},
        "gate": {"margin": 0.0},
        "canary": {"weight": 20, "watch_s": 1},
    }
    created = api.post("/v1/loops", json=policy)
    assert created.status_code == 201, created.text
    started = api.post(f"/v1/loops/{MODEL}/trigger", json={"detail": "slang arrived"})
    assert started.status_code == 202 and started.json()["run"] is not None, started.text
    run_id = started.json()["run"]["id"]
    wait_for(lambda: _ended(api, run_id), RUN_S, "the run's end")

    run = _run(api, run_id)
    steps = {s["step"]: s for s in run["steps"]}
    assert run["state"] in ("promoted", "rejected"), run
    data = steps["data"]
    # Every labeled prediction is accounted for: trained on, held out, unreadable, or a text the
    # gate's slices hold (production's test texts, a held-out text) and so not trained on.
    assert data["kind"] == "text" and data["unreadable"] == 0
    assert data["fresh_train"] + data["holdout"] + data["unreadable"] + data["seen"] == len(labeled)
    assert data["labeled"] == data["fresh_train"] + data["holdout"]
    assert data["holdout"] > 0 and data["fresh_train"] > data["holdout"] and data["seen"] >= 1
    built = datasets.get_ref(data["dataset"])
    assert built.kind == "text" and built.labels == original.labels
    assert built.manifest["spec"]["source"].startswith("parquet:")
    assert all(data["rows"][split] > 0 for split in ("train", "val", "test"))
    # Production's train and validation texts and the fresh training texts, all distinct.
    assert sum(data["rows"].values()) == original.rows("train") + original.rows("val") + data["fresh_train"]

    # The task trained from the run's parquet: source, and its version came from that build.
    train = steps["train"]
    task = platform["queue"].get(train["task_id"])
    assert task.template == "text-classification" and task.params["dataset"].startswith("parquet:")
    assert task.params["epochs"] == PARAMS["epochs"] and task.params.get("max_rows") is None
    candidate = train["version"]
    assert registry.get_version(MODEL, candidate).lineage["dataset"] == data["dataset"]

    # The gate: production's test split, and the held-out kept requests read as serving read
    # them (production's accuracy there is the one its served answers had).
    gate = steps["gate"]
    assert gate["original"]["rows"] == original.rows("test")
    assert gate["fresh"]["rows"] == data["holdout"]
    result_ids, _, truths = holdout_inputs(Path(data["holdout_path"]))
    served = [api.get(f"/v1/results/{result_id}").json()["output"].get("label") for result_id in result_ids]
    assert gate["fresh"]["production_accuracy"] == pytest.approx(
        sum(s == t for s, t in zip(served, truths)) / len(truths)
    )
    for figures in (gate["original"], gate["fresh"]):
        assert 0.0 <= figures["production_accuracy"] <= 1.0 and 0.0 <= figures["candidate_accuracy"] <= 1.0
    assert gate["fresh"]["candidate_accuracy"] > gate["fresh"]["production_accuracy"], gate

    kinds = ["manual", "dataset", "task", "version", "gate"]
    if run["state"] == "promoted":
        assert list(steps) == ["triggered", "data", "train", "gate", "canary", "decide"]
        assert steps["canary"]["weights"] == {str(production): 80.0, str(candidate): 20.0}
        assert registry.aliases(MODEL)["production"] == candidate and registry.get_traffic(MODEL) == {}
        kinds += ["canary", "decide"]
    else:
        assert list(steps) == ["triggered", "data", "train", "gate"] and steps["gate"]["reasons"], steps["gate"]
        assert registry.aliases(MODEL)["production"] == production and registry.get_traffic(MODEL) == {}
    chain = api.get(f"/v1/loops/runs/{run_id}/lineage").json()["chain"]
    assert [link["kind"] for link in chain] == kinds
    assert chain[0]["detail"] == "slang arrived" and chain[1]["ref"] == data["dataset"]
    assert chain[1]["labeled"] == data["labeled"] and chain[2]["id"] == train["task_id"]
    assert chain[3]["version"] == candidate
    print(f"\nloop text run {run['state']}: data {data['rows']}, gate {gate}")
