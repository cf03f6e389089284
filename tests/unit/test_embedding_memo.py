"""A frozen encoder's embeddings are computed once a row for a training run
(aiplatform.networks.embedding_memo): the same logits as without the memo, the encoder run only
for rows it has not seen, nothing kept past the limit, and nothing kept when the encoder learns."""

from __future__ import annotations

import pytest
import torch

from aiplatform.networks.architectures import EncoderClassifier

pytestmark = pytest.mark.unit

TINY_ENCODER = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}


def _model(train_encoder: bool = False) -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier(encoder=TINY_ENCODER, hidden_units=8, num_classes=3, train_encoder=train_encoder)


def _rows(seed: int, count: int) -> torch.Tensor:
    """Left-aligned rows of token ids (pieces, then padding 0), as the text collate makes them."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.zeros(count, 10, dtype=torch.int64)
    for i in range(count):
        length = int(torch.randint(2, 10, (1,), generator=generator))
        rows[i, :length] = torch.randint(1, 50, (length,), generator=generator)
    return rows


def test_remembered_embeddings_give_the_same_logits_and_each_row_is_encoded_once() -> None:
    plain, remembering = _model(), _model()
    remembering.remember_embeddings()
    assert remembering.memo is not None
    first, second = _rows(1, 12), _rows(2, 12)
    for model in (plain, remembering):
        model.eval()
    for batch in (first, second, torch.cat([first[:6], second[6:]]), first.flip(0)):  # epochs, reshuffled
        assert torch.allclose(remembering(batch), plain(batch), atol=1e-5)
    distinct = len({tuple(r.tolist()) for r in torch.cat([first, second])})
    assert remembering.memo.computed == distinct
    remembering.train()  # training mode too: the head's dropout varies, the embeddings do not
    remembering(first)
    assert remembering.memo.computed == distinct


def test_past_the_limit_rows_are_computed_each_time_and_not_kept() -> None:
    model = _model()
    model.remember_embeddings(max_rows=5)
    model.eval()
    rows = _rows(3, 8)
    model(rows)
    model(rows)
    assert model.memo is not None and len(model.memo) == 5
    assert model.memo.computed == 8 + 3  # the three rows past the limit, twice


def test_an_encoder_that_learns_keeps_nothing() -> None:
    model = _model(train_encoder=True)
    model.remember_embeddings()
    assert model.memo is None
