"""NFKC normalisation bounded by the length of its result.

NFKC can make a text much longer (U+FDFA, one character, becomes 18), so a text within a character
limit as sent can cost far more once normalised. :func:`nfkc_within` normalises a text a chunk at a
time and stops as soon as the result passes its limit: the work is bounded by the limit, not by
what the characters expand to. Its result equals ``unicodedata.normalize("NFKC", text)``.

Chunks are cut only before a character that nothing before it can change: its decomposition
starts with a starter (canonical combining class 0, so no combining mark is reordered across the
cut) that never combines with a preceding character (so no composition spans the cut). Only the
second characters of canonical compositions and Hangul's medial vowels and final consonants do.
"""

from __future__ import annotations

import functools
import unicodedata

CHUNK_CHARS = 4096
"""Characters normalised at a time (the result passes the limit by at most one chunk's expansion)."""
_COMPOSITES_END = 0x30000
"""Canonical compositions all lie below this code point (the BMP and the SMP; above are CJK
compatibility ideographs, which decompose to one character)."""
_HANGUL_VOWELS_AND_FINALS = (range(0x1161, 0x1176), range(0x11A8, 0x11C3))


@functools.cache
def _joins_backward() -> frozenset[str]:
    """Starters that can compose with the character before them (built once, in some 20 ms)."""
    joining = {chr(c) for block in _HANGUL_VOWELS_AND_FINALS for c in block}
    for code in range(_COMPOSITES_END):
        decomposition = unicodedata.decomposition(chr(code))
        if not decomposition or decomposition.startswith("<"):
            continue  # none, or a compatibility decomposition (NFKC never composes those)
        parts = decomposition.split()
        if len(parts) == 2:
            second = chr(int(parts[1], 16))
            if unicodedata.combining(second) == 0:
                joining.add(second)
    return frozenset(joining)


def is_boundary(char: str) -> bool:
    """Whether a text may be normalised in two parts cut before ``char`` (see the module docstring)."""
    first = unicodedata.normalize("NFKD", char)[0]
    return unicodedata.combining(first) == 0 and first not in _joins_backward()


def nfkc_within(text: str, max_chars: int, chunk_chars: int = CHUNK_CHARS) -> str | None:
    """``text`` in NFKC, or None once the normalised text is longer than ``max_chars`` (the rest
    is not normalised)."""
    if unicodedata.is_normalized("NFKC", text):  # most text; the check never expands anything
        return text if len(text) <= max_chars else None
    pieces: list[str] = []
    written = start = 0
    while start < len(text):
        end = min(start + chunk_chars, len(text))
        while end < len(text) and not is_boundary(text[end]):
            end += 1  # a run of combining marks stays whole (they expand at most 3x)
        piece = unicodedata.normalize("NFKC", text[start:end])
        written += len(piece)
        if written > max_chars:
            return None
        pieces.append(piece)
        start = end
    return "".join(pieces)
