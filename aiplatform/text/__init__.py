"""Text for models: normalisation (``nfkc_within`` bounds it by its result's length), the tokenizers
a ``model.json`` can name, and the factory that reads one back (word-regex with hashed bigrams, or
WordPiece for the MiniLM encoder)."""

from __future__ import annotations

from typing import Any

from aiplatform.text.nfkc import nfkc_within
from aiplatform.text.tokenizer import (
    PAD_ID,
    UNK_ID,
    TextTokenizer,
    Tokenizer,
    normalize_text,
    split_tokens,
)
from aiplatform.text.wordpiece import WordPieceTokenizer

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "TextTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "nfkc_within",
    "normalize_text",
    "split_tokens",
    "text_tokenizer",
]


def text_tokenizer(config: dict[str, Any]) -> TextTokenizer:
    """The tokenizer a ``model.json``'s ``preprocessing.tokenizer`` block describes."""
    if config.get("type") == "wordpiece":
        return WordPieceTokenizer.from_config(config)
    return Tokenizer.from_config(config)
