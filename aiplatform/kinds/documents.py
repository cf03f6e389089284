"""Text inputs for text models: decoding uploads, chunking long documents, combining the answers.

A document longer than the model's ``max_tokens`` words is cut into consecutive windows; each is
classified on its own (they share the model servers' batches), and the document's probabilities
are the mean of the windows' weighted by their word counts, so a long positive review with one
sour paragraph stays positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aiplatform.errors import InvalidArgument, TooLarge
from aiplatform.limits import MAX_UPLOAD_BYTES, RequestLimits
from aiplatform.text import TextTokenizer, nfkc_within

TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".text")
CHUNK_PREVIEW_CHARS = 160


def text_from_bytes(data: bytes, what: str = "Uploaded file", limits: RequestLimits = RequestLimits()) -> str:
    """UTF-8 text (a BOM is allowed); binary data and other encodings are refused by name."""
    if not data:
        raise InvalidArgument(f"{what} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise TooLarge(f"{what} is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidArgument(f"{what} is UTF-16; send UTF-8 text")
    if b"\x00" in data:
        raise InvalidArgument(f"{what} is binary, not text; send a UTF-8 .txt or .md file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 text") from exc
    return check_text(text, what, limits)


def check_text(text: Any, what: str = "'text'", limits: RequestLimits = RequestLimits()) -> str:
    """A text to classify: a non-empty string within the character limit, as sent and once
    normalised (NFKC can make a text 18 times longer: it is normalised a chunk at a time and
    refused as soon as it passes the limit, so the work is bounded by the limit)."""
    if not isinstance(text, str):
        raise InvalidArgument(f"{what} must be a string")
    limits.check_text_chars(text, what)
    if nfkc_within(text, limits.max_text_chars) is None:
        raise TooLarge(
            f"{what} has more than {limits.max_text_chars:,} characters once Unicode-normalised "
            f"(NFKC); the limit is {limits.max_text_chars:,}"
        )
    if not text.strip():
        raise InvalidArgument(f"{what} is empty")
    return text


def check_upload_name(filename: str | None) -> None:
    if filename and not filename.lower().endswith(TEXT_EXTENSIONS):
        raise InvalidArgument(f"Uploaded file {filename!r} is not a text document; send .txt or .md (UTF-8)")


def document_tokens(tokenizer: TextTokenizer, text: str, max_chunks: int) -> list[str]:
    """The text's tokens, as many as ``max_chunks`` windows hold: a longer document is refused
    (413) without tokenizing the rest of it."""
    limit = max_chunks * tokenizer.window_tokens
    tokens = tokenizer.split(text, limit=limit + 1)
    if len(tokens) > limit:
        raise TooLarge(
            f"The document is longer than {max_chunks} chunks of {tokenizer.window_tokens} tokens, "
            "the most one request may hold"
        )
    return tokens


def document_chunks(tokenizer: TextTokenizer, tokens: list[str]) -> list[tuple[str, np.ndarray]]:
    """The windows the model classifies, from the text's tokens (:func:`document_tokens`)."""
    chunks = tokenizer.token_chunks(tokens)
    if not chunks:
        raise InvalidArgument("The text has no words to classify")
    return chunks


def combine_chunks(
    chunks: list[tuple[str, np.ndarray]], answers: list[dict[str, Any]], labels: list[str]
) -> dict[str, Any]:
    """The document's answer (word-weighted mean of the chunks' probabilities) and, for more
    than one chunk, the per-chunk breakdown."""
    weights = np.array([len(text.split()) for text, _ in chunks], dtype=np.float64)
    matrix = np.array([[a["probabilities"][label] for label in labels] for a in answers])
    mean = (matrix * weights[:, None]).sum(0) / weights.sum()
    best = int(mean.argmax())
    answer: dict[str, Any] = {
        "label": labels[best],
        "probability": float(mean[best]),
        "probabilities": {label: float(p) for label, p in zip(labels, mean)},
        "batch_size": max(a.get("batch_size", 1) for a in answers),
    }
    if len(chunks) > 1:
        answer["chunks"] = [
            {
                "index": i,
                "words": int(w),
                "text": text[:CHUNK_PREVIEW_CHARS],
                "label": a["label"],
                "probability": a["probability"],
                "probabilities": a["probabilities"],
            }
            for i, ((text, _), w, a) in enumerate(zip(chunks, weights, answers))
        ]
    return answer
