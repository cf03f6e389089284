"""The text tokenizer: deterministic vocabulary, ids, bigrams, chunks, config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aiplatform.errors import InvalidArgument
from aiplatform.text import PAD_ID, UNK_ID, Tokenizer, split_tokens

TEXTS = ["I love this car!", "I hate this car.", "Don't love   traffic", "love love car"]


def test_split_normalises_case_width_and_keeps_contractions() -> None:
    assert split_tokens("  Don't  ＬＯＶＥ\ttraffic!! ") == ["don't", "love", "traffic", "!", "!"]


def test_vocabulary_is_ranked_by_frequency_then_alphabet_and_reproducible() -> None:
    tokenizer = Tokenizer.fit(TEXTS, min_freq=2)
    assert tokenizer.vocab == ["love", "car", "i", "this"]
    assert Tokenizer.fit(list(reversed(TEXTS)), min_freq=2).vocab == tokenizer.vocab


def test_encode_pads_marks_unknown_words_and_truncates() -> None:
    tokenizer = Tokenizer(["love", "car"], max_tokens=4)
    assert tokenizer.encode("love the car").tolist() == [2, UNK_ID, 3, PAD_ID]
    assert tokenizer.encode("car car car car car car").tolist() == [3, 3, 3, 3]
    assert tokenizer.encode("").tolist() == [0, 0, 0, 0]


def test_bigrams_hash_into_their_own_id_range() -> None:
    tokenizer = Tokenizer(["a", "b"], max_tokens=3, bigram_buckets=16)
    row = tokenizer.encode("a b a")
    assert len(row) == tokenizer.row_length == 5
    assert row[:3].tolist() == [2, 3, 2] and all(4 <= i < 4 + 16 for i in row[3:5])
    assert tokenizer.size == 2 + 2 + 16


def test_long_documents_split_into_windows() -> None:
    tokenizer = Tokenizer(["w"], max_tokens=4)
    chunks = tokenizer.chunks(" ".join(["w"] * 10))
    assert [len(text.split()) for text, _ in chunks] == [4, 4, 2]
    assert chunks[-1][1].tolist() == [2, 2, 0, 0]
    assert tokenizer.chunks("   ") == []


def test_config_round_trips_through_json_and_rejects_other_rules() -> None:
    tokenizer = Tokenizer.fit(TEXTS, min_freq=1, max_tokens=8, bigram_buckets=32)
    again = Tokenizer.from_config(json.loads(json.dumps(tokenizer.to_config())))
    np.testing.assert_array_equal(again.encode_batch(TEXTS), tokenizer.encode_batch(TEXTS))
    with pytest.raises(InvalidArgument, match="Unsupported tokenizer"):
        Tokenizer.from_config({**tokenizer.to_config(), "pattern": r"\S+"})


def test_coverage_counts_known_words() -> None:
    assert Tokenizer(["love", "car"]).coverage(["love my car", "car"]) == pytest.approx(3 / 4)
