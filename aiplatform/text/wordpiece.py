"""The WordPiece tokenizer of a pretrained encoder, with the same interface as the word tokenizer
(:class:`aiplatform.text.tokenizer.Tokenizer`): training, the gateway's document chunking and the
drift features use either through ``text_tokenizer(config)``.

The whole ``tokenizers`` JSON travels in ``model.json``, so serving reproduces training without
the encoder's package. A row is ``[CLS] pieces [SEP]`` padded with 0 to ``max_tokens``; a long
document is cut into windows of ``max_tokens - 2`` pieces.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument
from aiplatform.text.tokenizer import TextTokenizer, normalize_text

UNKNOWN, CLS, SEP = "[UNK]", "[CLS]", "[SEP]"


class WordPieceTokenizer(TextTokenizer):
    """Text -> WordPiece ids for a BERT-style encoder (``tokenizers``' fast implementation)."""

    def __init__(self, tokenizer_json: dict[str, Any], *, max_tokens: int) -> None:
        from tokenizers import Tokenizer as FastTokenizer

        if not 3 <= max_tokens <= 512:
            raise InvalidArgument(f"max_tokens must be between 3 and 512 for a WordPiece encoder (got {max_tokens})")
        self.tokenizer_json = tokenizer_json
        self.max_tokens = int(max_tokens)
        self._fast = FastTokenizer.from_str(json.dumps(tokenizer_json))
        self._fast.no_truncation()
        self._fast.no_padding()
        self._vocab = self._fast.get_vocab()
        missing = [t for t in (UNKNOWN, CLS, SEP) if t not in self._vocab]
        if missing:
            raise InvalidArgument(f"The WordPiece vocabulary lacks {missing}")

    @property
    def row_length(self) -> int:
        return self.max_tokens

    def split(self, text: str, limit: int | None = None) -> list[str]:
        """The text's word pieces (no special tokens; the first ``limit``)."""
        pieces = self._fast.encode(normalize_text(text), add_special_tokens=False).tokens
        return list(pieces if limit is None else pieces[:limit])

    @property
    def window_tokens(self) -> int:
        return self.max_tokens - 2  # [CLS] and [SEP] take two places

    def encode(self, text: str) -> np.ndarray:
        """The first window of a text as a padded int64 row."""
        return self._row(self.split(text)[: self.max_tokens - 2])

    def token_chunks(self, tokens: list[str]) -> list[tuple[str, np.ndarray]]:
        """Consecutive windows of ``max_tokens - 2`` pieces: (window text, ids)."""
        width = self.window_tokens
        windows = [tokens[i : i + width] for i in range(0, len(tokens), width)]
        return [(self._fast.decode([self._vocab[t] for t in w]), self._row(w)) for w in windows]

    def known(self, token: str) -> bool:
        """Whether a piece is in the vocabulary (WordPiece maps the rest to ``[UNK]``)."""
        return token != UNKNOWN

    def _row(self, pieces: list[str]) -> np.ndarray:
        ids = [self._vocab[CLS]] + [self._vocab.get(p, self._vocab[UNKNOWN]) for p in pieces] + [self._vocab[SEP]]
        row = np.zeros(self.row_length, dtype=np.int64)
        row[: len(ids)] = ids
        return row

    def to_config(self) -> dict[str, Any]:
        return {"type": "wordpiece", "max_tokens": self.max_tokens, "pad_id": 0, "tokenizer": self.tokenizer_json}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WordPieceTokenizer:
        if config.get("type") != "wordpiece" or not isinstance(config.get("tokenizer"), dict):
            raise InvalidArgument(f"Not a WordPiece tokenizer config (type {config.get('type')!r})")
        return cls(config["tokenizer"], max_tokens=int(config["max_tokens"]))
