"""Model architectures, built from the plain-data ``architecture`` block of a ``model.json``.

Packages never carry code: a loader looks the architecture ``type`` up here and builds the module,
then loads weights into it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from aiplatform.errors import InvalidArgument
from aiplatform.networks.embedding_memo import MAX_REMEMBERED_ROWS, EmbeddingMemo


class ConvClassifier(nn.Module):
    """A small VGG-style CNN: [conv-relu-maxpool] per entry of ``conv_channels``, then an MLP head."""

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        num_classes: int,
        conv_channels: list[int],
        kernel_size: int = 3,
        hidden_units: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for out_channels in conv_channels:
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size, padding=kernel_size // 2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels, size = out_channels, size // 2
        if size < 1:
            raise InvalidArgument(f"image_size {image_size} is too small for {len(conv_channels)} pooling stages")
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * size * size, hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _build_cnn(arch: dict[str, Any]) -> nn.Module:
    return ConvClassifier(
        in_channels=int(arch["in_channels"]),
        image_size=int(arch["image_size"]),
        num_classes=int(arch["num_classes"]),
        conv_channels=[int(c) for c in arch["conv_channels"]],
        kernel_size=int(arch.get("kernel_size", 3)),
        hidden_units=int(arch.get("hidden_units", 128)),
        dropout=float(arch.get("dropout", 0.25)),
    )


class BagOfEmbeddingsClassifier(nn.Module):
    """fastText-style: the mean of word (and hashed bigram) embeddings, then a small MLP head.
    Id 0 pads and is left out of the mean."""

    def __init__(
        self, *, vocab_size: int, embedding_dim: int, hidden_units: int, num_classes: int, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embedding_dim, mode="mean", padding_idx=0)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(embedding_dim, hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, num_classes),
        )

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(token_ids))


def _build_bag(arch: dict[str, Any]) -> nn.Module:
    return BagOfEmbeddingsClassifier(
        vocab_size=int(arch["vocab_size"]),
        embedding_dim=int(arch["embedding_dim"]),
        hidden_units=int(arch["hidden_units"]),
        num_classes=int(arch["num_classes"]),
        dropout=float(arch.get("dropout", 0.2)),
    )


class EncoderClassifier(nn.Module):
    """A pretrained sentence encoder (MiniLM) with a small MLP head. With ``train_encoder`` off
    the encoder is frozen (no gradients, dropout-free): only the head learns, which on CPU costs
    one encoder forward pass per example instead of a backward pass through six layers."""

    def __init__(
        self,
        *,
        encoder: dict[str, Any],
        hidden_units: int,
        num_classes: int,
        dropout: float = 0.1,
        train_encoder: bool = False,
    ) -> None:
        super().__init__()
        from aiplatform.networks.sentence_encoder import SentenceEncoder

        self.encoder = SentenceEncoder(encoder)
        self.train_encoder = bool(train_encoder)
        self.encoder.requires_grad_(self.train_encoder)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(int(encoder["hidden_size"]), hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, num_classes),
        )
        self.memo: EmbeddingMemo | None = None

    def remember_embeddings(self, max_rows: int = MAX_REMEMBERED_ROWS) -> None:
        """Keep the frozen encoder's embeddings for the rest of this process's run (the training
        loop asks; ``aiplatform.networks.embedding_memo``). A no-op when the encoder learns too."""
        self.memo = None if self.train_encoder else EmbeddingMemo(max_rows)

    def train(self, mode: bool = True) -> EncoderClassifier:
        super().train(mode)
        self.encoder.train(mode and self.train_encoder)
        return self

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.train_encoder:
            return self.head(self.encoder(token_ids))
        with torch.no_grad():
            embeddings = self.encoder(token_ids) if self.memo is None else self.memo.embed(token_ids, self.encoder)
        return self.head(embeddings)


def _build_encoder_classifier(arch: dict[str, Any]) -> nn.Module:
    return EncoderClassifier(
        encoder=dict(arch["encoder"]),
        hidden_units=int(arch["hidden_units"]),
        num_classes=int(arch["num_classes"]),
        dropout=float(arch.get("dropout", 0.1)),
        train_encoder=bool(arch.get("train_encoder", False)),
    )


def load_pretrained(model: nn.Module, architecture: dict[str, Any]) -> nn.Module:
    """Fill a freshly built model's pretrained part (training starts from it; a package's
    weights replace everything later, so loading a package never needs this)."""
    source = architecture.get("pretrained")
    if source is None:
        return model
    from aiplatform.networks.sentence_encoder import SHIPPED_ENCODER, shipped_encoder_weights

    if source != SHIPPED_ENCODER or not isinstance(model, EncoderClassifier):
        raise InvalidArgument(f"Unknown pretrained weights {source!r} for architecture {architecture.get('type')!r}")
    model.encoder.load_state_dict(shipped_encoder_weights(), strict=True)
    return model


class FaultInjection(nn.Module):
    """Another architecture, made slower (``delay_ms`` per forward pass) or failing (a share
    ``error_rate`` of forward passes raise): for rehearsing alerting, canary rollback and SLOs
    with a real package on real servers. Never produced by training."""

    def __init__(self, inner: nn.Module, *, delay_ms: float = 0.0, error_rate: float = 0.0) -> None:
        super().__init__()
        if delay_ms < 0 or not 0.0 <= error_rate <= 1.0:
            raise InvalidArgument("fault-injection needs delay_ms >= 0 and 0 <= error_rate <= 1")
        self.inner = inner
        self.delay_ms = float(delay_ms)
        self.error_rate = float(error_rate)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)
        if self.error_rate and random.random() < self.error_rate:
            raise RuntimeError(f"fault injection: this forward pass fails (error_rate {self.error_rate:g})")
        return self.inner(inputs)


def _build_fault_injection(arch: dict[str, Any]) -> nn.Module:
    return FaultInjection(
        build_model(dict(arch["inner"])),
        delay_ms=float(arch.get("delay_ms", 0.0)),
        error_rate=float(arch.get("error_rate", 0.0)),
    )


ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "cnn": _build_cnn,
    "embedding-bag": _build_bag,
    "encoder-classifier": _build_encoder_classifier,
    "fault-injection": _build_fault_injection,
}


def build_model(architecture: dict[str, Any]) -> nn.Module:
    """Instantiate the module an ``architecture`` block describes (weights uninitialised)."""
    kind = architecture.get("type")
    builder = ARCHITECTURES.get(str(kind))
    if builder is None:
        raise InvalidArgument(f"Unknown model architecture type {kind!r}; known: {sorted(ARCHITECTURES)}")
    try:
        return builder(architecture)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"Invalid {kind} architecture {architecture}: {exc}") from exc
