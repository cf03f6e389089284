"""What callers send is capped by what it decodes to, before the work: image tensors by the values
they become at the model's input size, CSV headers by their columns (indexed once), texts by their
length once NFKC-normalised (normalised a chunk at a time, stopping at the limit). Each bounded-work
test counts what the code touched, so it fails where the work would grow with the input."""

from __future__ import annotations

import random
import unicodedata

import pytest

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.kinds.documents import check_text
from aiplatform.kinds.rows import MAX_CSV_COLUMNS, FeatureSchema
from aiplatform.kinds.tensors import images_from_infer_request
from aiplatform.limits import MAX_DECODED_VALUES, RequestLimits
from aiplatform.text import nfkc_within
from aiplatform.text.nfkc import CHUNK_CHARS, is_boundary

LARGE = {"type": "image", "height": 2048, "width": 2048, "channels": 3}
"""An imported model's input: 12,582,912 values per row once resized."""


def _tensor(rows: int, side: int = 2) -> dict:
    return {
        "inputs": [
            {
                "name": "input",
                "datatype": "UINT8",
                "shape": [rows, side, side, 3],
                "data": [0] * (rows * side * side * 3),
            }
        ]
    }


# -- 2a: small tensors that decode into huge images ------------------------------------------------
def test_rows_that_would_resize_past_the_budget_are_refused_before_any_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    resized: list[int] = []
    monkeypatch.setattr("aiplatform.kinds.tensors.image_from_array", lambda row, spec: resized.append(1))
    with pytest.raises(
        TooLarge,
        match=f"decode to 75,497,472 values .*2048 x 2048 x 3.*the limit is {MAX_DECODED_VALUES:,} per request",
    ):
        images_from_infer_request(_tensor(6), LARGE, RequestLimits())  # 72 values sent
    assert resized == []  # refused on the shape alone
    images_from_infer_request(_tensor(5), LARGE, RequestLimits())  # 62.9M values: within the budget
    assert len(resized) == 5


def test_the_budget_holds_one_input_of_the_largest_importable_size() -> None:
    limits = RequestLimits()
    limits.check_decoded(1, (4096, 4096, 3))
    limits.check_decoded(256, (224, 224, 3))  # a full request of ordinary photos' inputs
    with pytest.raises(TooLarge, match="the limit is 1,000 per request"):
        RequestLimits(max_decoded_values=1000).check_decoded(16, (8, 8, 1))


# -- 4a: CSV headers --------------------------------------------------------------------------------
class _UnreadHeader(list):
    """A header that fails the test if anything reads its columns (only its length may be asked)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the header's columns were read")

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        raise AssertionError("the header's columns were read")


def _schema(width: int) -> FeatureSchema:
    return FeatureSchema([{"name": f"f{i}", "type": "number"} for i in range(width)])


def test_a_million_column_header_is_refused_before_it_is_searched() -> None:
    schema = _schema(512)
    with pytest.raises(TooLarge, match=f"has 1,000,000 columns; the limit is {MAX_CSV_COLUMNS:,}"):
        schema.header_positions(_UnreadHeader([""] * 1_000_000), "Uploaded file 'x.csv'")
    header = ",".join(f"c{i}" for i in range(1_000_000)).encode()
    with pytest.raises(TooLarge, match="has 1,000,000 columns"):
        schema.encode_csv(header + b"\n1\n", "Uploaded file 'x.csv'", RequestLimits())


def test_header_positions_index_stripped_names_first_one_wins() -> None:
    schema = _schema(3)
    header = ["id", " f2 ", "f0", "label", "f1", "f0"]
    assert schema.header_positions(header, "upload") == [2, 4, 1]
    with pytest.raises(InvalidArgument, match=r"lacks column\(s\) \['f1'\]"):
        schema.header_positions(["f0", "f2"], "upload")
    assert _schema(600).max_csv_columns == 1200  # a model wider than the cap keeps room for its own


# -- 10: NFKC bounded by its result --------------------------------------------------------------------
TRICKY = [
    "\u1100\u1161\u11a8",  # Hangul L V T: one syllable, composed across three characters
    "\uac00\u11a8",  # LV + T
    "\u0b47\u0b3e\u0b57",  # Oriya: a vowel sign (a starter) composes with the one before it
    "\u0dd9\u0dcf\u0dca",  # Sinhala: two compositions in a row
    "e\u0301\u0327",
    "a\u0323\u0302\u0301",  # combining marks reordered, then composed
    "\u1e9b\u0323",  # long s with dot above: NFKC gives U+1E69
    "\ufdfa\u0301x",
    "\ufb01\u0308",
    "\u0344\u0344a",
    "\u0f77\u0f73\u0f71",
    "\uff21\u0301",
    "\u30ab\u3099\u309b",
    "\U00011131\U00011127",
    "\u00bd\u2026\u3300",
]


@pytest.mark.parametrize("text", TRICKY)
def test_chunked_nfkc_equals_whole_text_nfkc(text: str) -> None:
    for chunk in (1, 2, 3):
        assert nfkc_within(text * 3, 10**6, chunk_chars=chunk) == unicodedata.normalize("NFKC", text * 3)


def test_chunked_nfkc_equals_whole_text_nfkc_on_random_mixtures() -> None:
    pool = [c for text in TRICKY for c in text] + list("aé ")
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 30)))
        assert nfkc_within(text, 10**6, chunk_chars=rng.randint(1, 4)) == unicodedata.normalize("NFKC", text), text


def test_cuts_fall_only_before_characters_nothing_before_can_change() -> None:
    assert is_boundary("a") and is_boundary("\ufdfa") and is_boundary("\uac00")
    for joining in ("\u0301", "\u1161", "\u11a8", "\u0b3e", "\u0dcf", "\u3099", "\u0344"):
        assert not is_boundary(joining), hex(ord(joining))


def test_normalising_stops_once_the_result_passes_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """1M x U+FDFA (18M characters once normalised): refused after one chunk, not after all of it."""
    normalised: list[int] = []
    real = unicodedata.normalize

    def counting(form: str, text: str) -> str:
        if form == "NFKC":
            normalised.append(len(text))
        return real(form, text)

    monkeypatch.setattr(unicodedata, "normalize", counting)
    text = "\ufdfa" * 1_000_000
    assert nfkc_within(text, 1_000_000) is None
    assert sum(normalised) <= 1_000_000 // 18 + CHUNK_CHARS  # what reaching the limit takes, and a chunk
    normalised.clear()
    with pytest.raises(TooLarge, match="more than 20,000 characters once Unicode-normalised .*the limit is 20,000"):
        check_text("\ufdfa" * 20_000, "'text'", RequestLimits(max_text_chars=20_000))
    assert sum(normalised) <= CHUNK_CHARS
    assert nfkc_within("plain ascii " * 10, 10**6) == "plain ascii " * 10
    assert nfkc_within("\ufb01ne " * 4_000, 20_000) == "fine " * 4_000  # 20,000 exactly: within
    assert nfkc_within("a" * 11, 10) is None
