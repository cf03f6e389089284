"""The ``text-minilm-classification`` template: a classification head on the pretrained MiniLM
sentence encoder (``all-MiniLM-L6-v2``, shipped offline by the ``minilm`` extra).

Against ``text-classification`` it trades speed and size for words the training data never
showed: the encoder has seen a large corpus, the bag of embeddings only the training split.
docs/BENCHMARKS.md records what that costs (training time, package size, latency, accuracy).
The encoder is frozen by default (``train_encoder``: fine-tuning all six layers on CPU is slow).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiplatform.datasets import DatasetManager, DatasetVersion
from aiplatform.preprocessing import text_preprocessing
from aiplatform.training.text import TextClassificationTemplate, TextDataParams

CHUNKING = "windows of max_tokens - 2 word pieces; the document's probabilities are the word-weighted mean"


class MiniLMParams(TextDataParams):
    """Parameters of a ``text-minilm-classification`` run."""

    epochs: int = Field(4, ge=1, le=500)
    learning_rate: float = Field(2e-3, gt=0, le=10, description="peak learning rate")
    hidden_units: int = Field(128, ge=4, le=4096)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_tokens: int = Field(
        64, ge=8, le=512, description="word pieces per input, with [CLS] and [SEP]; longer documents are chunked"
    )
    train_encoder: bool = Field(False, description="fine-tune the encoder too (slow on CPU); off: only the head learns")


class MiniLMClassificationTemplate(TextClassificationTemplate):
    name = "text-minilm-classification"
    title = "Text classification (MiniLM encoder)"
    description = (
        "A classification head on the pretrained MiniLM sentence encoder (all-MiniLM-L6-v2, 22M "
        "parameters): needs the 'minilm' extra where it trains; slower and larger than "
        "text-classification, better on words the training data lacks."
    )
    params_model = MiniLMParams

    def preprocessing(self, params: MiniLMParams, dataset: DatasetVersion, datasets: DatasetManager) -> dict[str, Any]:
        """The encoder's own WordPiece tokenizer (nothing is fitted)."""
        from aiplatform.networks.sentence_encoder import shipped_tokenizer_json
        from aiplatform.text import WordPieceTokenizer

        return text_preprocessing(WordPieceTokenizer(shipped_tokenizer_json(), max_tokens=params.max_tokens))

    def input_spec(self, dataset: DatasetVersion, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {**super().input_spec(dataset, preprocessing), "chunking": CHUNKING}

    def architecture(
        self, params: MiniLMParams, dataset: DatasetVersion, preprocessing: dict[str, Any]
    ) -> dict[str, Any]:
        from aiplatform.networks.sentence_encoder import SHIPPED_ENCODER, shipped_encoder_config

        return {
            "type": "encoder-classifier",
            "encoder": shipped_encoder_config(),
            "pretrained": SHIPPED_ENCODER,
            "hidden_units": params.hidden_units,
            "num_classes": len(dataset.labels),
            "dropout": params.dropout,
            "train_encoder": params.train_encoder,
        }

    def default_model_name(self, params: TextDataParams) -> str:
        return f"{super().default_model_name(params)[:56]}-minilm"
