"""The text tokenizer: rules written down in ``model.json`` so serving reproduces training exactly.

Text is Unicode-normalised (NFKC), lowercased and split by one regular expression into words
(letters/digits, with an inner apostrophe: ``don't``) and single punctuation marks. Ids: 0 pads,
1 is an unknown word, then the vocabulary fitted on the training split (most frequent first),
then ``bigram_buckets`` hashed ids for adjacent word pairs (fastText's trick: word order at the
cost of a table, no second vocabulary). CRC-32 hashes them: stable across processes and versions.
"""

from __future__ import annotations

import collections
import itertools
import re
import unicodedata
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument

TOKEN_PATTERN = r"\w+(?:'\w+)?|[^\w\s]"
PAD_ID, UNK_ID = 0, 1
RESERVED = 2
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def normalize_text(text: str) -> str:
    """NFKC, whitespace collapsed, stripped (what cleaning and tokenizing both start from)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def split_tokens(text: str, limit: int | None = None) -> list[str]:
    """Words and punctuation of the normalised text; with ``limit``, the first ``limit`` only
    (the rest of a long text is not scanned)."""
    normalized = normalize_text(text).lower()
    if limit is None:
        return _TOKEN_RE.findall(normalized)
    return [match.group() for match in itertools.islice(_TOKEN_RE.finditer(normalized), limit)]


class TextTokenizer(ABC):
    """What training, the gateway's document chunking and the drift features need of a
    tokenizer: :class:`Tokenizer` (words) or ``aiplatform.text.wordpiece.WordPieceTokenizer``."""

    max_tokens: int

    @property
    @abstractmethod
    def row_length(self) -> int:
        """Ids per encoded row."""

    @abstractmethod
    def split(self, text: str, limit: int | None = None) -> list[str]:
        """The text's tokens (the first ``limit``): what :meth:`token_chunks` and :meth:`known` take."""

    @property
    def window_tokens(self) -> int:
        """Tokens of the text in one window (:meth:`token_chunks`)."""
        return self.max_tokens

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """The text's first window as a padded int64 row."""

    @abstractmethod
    def token_chunks(self, tokens: list[str]) -> list[tuple[str, np.ndarray]]:
        """Consecutive windows of a split text: (window text, ids)."""

    @abstractmethod
    def known(self, token: str) -> bool:
        """Whether a token is in the vocabulary."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """The ``preprocessing.tokenizer`` block of ``model.json``."""

    def chunks(self, text: str) -> list[tuple[str, np.ndarray]]:
        """A long document as consecutive windows: (window text, ids)."""
        return self.token_chunks(self.split(text))

    def encode_batch(self, texts: Iterable[str]) -> np.ndarray:
        rows = [self.encode(t) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.row_length), dtype=np.int64)


class Tokenizer(TextTokenizer):
    """Words -> ids, fitted once on training text; ``to_config()`` is what the package keeps."""

    def __init__(self, vocab: list[str], *, max_tokens: int = 64, bigram_buckets: int = 0) -> None:
        if max_tokens < 1:
            raise InvalidArgument(f"max_tokens must be >= 1 (got {max_tokens})")
        self.vocab = list(vocab)
        self.max_tokens = int(max_tokens)
        self.bigram_buckets = int(bigram_buckets)
        self._ids = {word: i + RESERVED for i, word in enumerate(self.vocab)}

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        *,
        max_vocab: int = 20_000,
        min_freq: int = 2,
        max_tokens: int = 64,
        bigram_buckets: int = 0,
    ) -> Tokenizer:
        """The ``max_vocab`` words seen at least ``min_freq`` times (ties broken alphabetically,
        so the same text always gives the same vocabulary)."""
        counts: collections.Counter[str] = collections.Counter()
        for text in texts:
            counts.update(split_tokens(text))
        ranked = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_vocab], max_tokens=max_tokens, bigram_buckets=bigram_buckets)

    def split(self, text: str, limit: int | None = None) -> list[str]:
        """The text's tokens (:func:`split_tokens`): what ``token_chunks`` and ``known`` take."""
        return split_tokens(text, limit)

    @property
    def size(self) -> int:
        """Rows the embedding table needs."""
        return RESERVED + len(self.vocab) + self.bigram_buckets

    def word_ids(self, tokens: list[str]) -> list[int]:
        ids = [self._ids.get(t, UNK_ID) for t in tokens]
        if self.bigram_buckets:
            base = RESERVED + len(self.vocab)
            ids += [base + zlib.crc32(f"{a} {b}".encode()) % self.bigram_buckets for a, b in itertools.pairwise(tokens)]
        return ids

    def encode(self, text: str) -> np.ndarray:
        """The first ``max_tokens`` words (and their bigrams) as a padded int64 row."""
        return self._pad(self.word_ids(split_tokens(text)[: self.max_tokens]))

    def token_chunks(self, tokens: list[str]) -> list[tuple[str, np.ndarray]]:
        """Windows of ``max_tokens`` words of a text already :meth:`split` (the gateway splits
        once for both the model and the drift features)."""
        if not tokens:
            return []
        windows = [tokens[i : i + self.max_tokens] for i in range(0, len(tokens), self.max_tokens)]
        return [(" ".join(w), self._pad(self.word_ids(w))) for w in windows]

    @property
    def row_length(self) -> int:
        return self.max_tokens * 2 - 1 if self.bigram_buckets else self.max_tokens

    def _pad(self, ids: list[int]) -> np.ndarray:
        row = np.zeros(self.row_length, dtype=np.int64)
        row[: len(ids)] = ids[: self.row_length]
        return row

    def known(self, token: str) -> bool:
        """Whether a word is in the vocabulary."""
        return token in self._ids

    def coverage(self, texts: Iterable[str]) -> float:
        """Share of word tokens that are in the vocabulary."""
        seen = known = 0
        for text in texts:
            tokens = split_tokens(text)
            seen += len(tokens)
            known += sum(1 for t in tokens if t in self._ids)
        return known / seen if seen else 0.0

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "word-regex",
            "normalization": "NFKC",
            "lowercase": True,
            "pattern": TOKEN_PATTERN,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "first_word_id": RESERVED,
            "max_tokens": self.max_tokens,
            "bigram_buckets": self.bigram_buckets,
            "bigram_hash": "crc32('a b') % buckets",
            "vocab": self.vocab,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Tokenizer:
        if config.get("type") != "word-regex" or config.get("pattern") != TOKEN_PATTERN:
            raise InvalidArgument(
                f"Unsupported tokenizer {config.get('type')!r} with pattern {config.get('pattern')!r}"
            )
        return cls(
            list(config["vocab"]),
            max_tokens=int(config["max_tokens"]),
            bigram_buckets=int(config.get("bigram_buckets", 0)),
        )
