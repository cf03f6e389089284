"""Summary features of one model input: what the gateway records with each prediction and what
drift analysis computes the same way over a dataset version, so the two are comparable.

Images: mean and standard deviation of the uint8 pixels scaled to [0, 1] (after the input was
converted to the model's shape). Text: characters, tokens and the share of tokens outside the
model's vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from aiplatform.text import TextTokenizer

IMAGE_FEATURES = ("mean_intensity", "std_intensity")
TEXT_FEATURES = ("chars", "tokens", "oov_rate")


def image_features(image: np.ndarray) -> dict[str, float]:
    """One uint8 image (H, W, C)."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return {"mean_intensity": round(float(pixels.mean()), 6), "std_intensity": round(float(pixels.std()), 6)}


def image_feature_columns(images: np.ndarray) -> dict[str, np.ndarray]:
    """A uint8 batch (N, H, W, C) -> one array per feature."""
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return {"mean_intensity": pixels.mean(axis=1), "std_intensity": pixels.std(axis=1)}


def text_features(text: str, tokenizer: TextTokenizer, tokens: list[str] | None = None) -> dict[str, float]:
    """One text, with its tokens (words and punctuation) as the model's tokenizer splits them;
    pass ``tokens`` when the text was already split."""
    tokens = tokenizer.split(text) if tokens is None else tokens
    unknown = sum(1 for t in tokens if not tokenizer.known(t))
    return {
        "chars": float(len(text)),
        "tokens": float(len(tokens)),
        "oov_rate": round(unknown / len(tokens), 6) if tokens else 0.0,
    }


def text_feature_columns(texts: Iterable[str], tokenizer: TextTokenizer) -> dict[str, np.ndarray]:
    rows = [text_features(t, tokenizer) for t in texts]
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in TEXT_FEATURES}
