"""The ``text`` kind: pasted text or UTF-8 documents, BYTES v2 tensors; a document longer than the
model reads becomes several windows (model inputs) whose answers are combined; drift features are
its length in characters and tokens and the share of tokens outside the vocabulary. Its datasets'
profiles hold the lengths, vocabulary and top tokens the build computed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from aiplatform.errors import InvalidArgument
from aiplatform.kinds.base import BarChart, BatchConverter, Chart, DatasetKind, InputConverter, ModelKind, Submit
from aiplatform.kinds.documents import (
    TEXT_EXTENSIONS,
    check_text,
    check_upload_name,
    combine_chunks,
    document_chunks,
    document_tokens,
    text_from_bytes,
)
from aiplatform.kinds.features import TEXT_FEATURES, text_feature_columns, text_features
from aiplatform.kinds.tensors import texts_from_infer_request
from aiplatform.limits import RequestLimits, off_loop_if_large
from aiplatform.text import TextTokenizer, normalize_text, text_tokenizer

if TYPE_CHECKING:  # torch is imported where tensors are made (model servers, training workers)
    import torch

PREVIEW_CHARS = 500
"""A text's first characters in a dataset sample."""
JSON_KEY = "text"
"""A v1 JSON body's text: ``{"text": ...}``."""


class TextDatasets(DatasetKind):
    name: ClassVar[str] = "text"
    dataset_columns: ClassVar[tuple[str, ...]] = ("id", "text", "label")

    @staticmethod
    def sample_previews(table: pa.Table, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"text": text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")}
            for text in (str(t) for t in table.column("text").to_pylist())
        ]

    @staticmethod
    def profile_split(table: pa.Table, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """No per-split summary beyond rows and classes (the build computed lengths, vocabulary and
        top tokens over the whole version); keys: the normalised texts."""
        return {}, [normalize_text(str(t)).lower() for t in table.column("text").to_pylist()]

    @staticmethod
    def profile_extra(manifest: dict[str, Any], splits: list[str]) -> dict[str, Any]:
        profile = manifest.get("profile", {})
        return {
            "text": {
                "lengths": {split: profile.get(split, {}) for split in splits},
                "vocabulary": profile.get("vocabulary", {}),
                "top_tokens": profile.get("top_tokens", {}),
                "cleaning": manifest.get("cleaning", {}),
            }
        }

    @staticmethod
    def profile_charts(profile: dict[str, Any]) -> list[Chart]:
        """Words per text in the train split."""
        lengths = profile.get("text", {}).get("lengths", {}).get("train", {}).get("words_histogram")
        if not lengths:
            return []
        return [BarChart("text_length", "train: words per text", lengths["counts"], [str(b) for b in lengths["bins"]])]

    @staticmethod
    def user_batch_converter(inputs: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> InputConverter:
        """Texts as a list of strings (user code tokenizes them its own way; ``preprocessing`` is
        an image's)."""
        return lambda batch: [str(text) for text in batch["text"]]


class TextKind(ModelKind):
    name: ClassVar[str] = "text"
    datasets: ClassVar[type[DatasetKind]] = TextDatasets
    feature_names: ClassVar[tuple[str, ...]] = TEXT_FEATURES

    def __init__(self, input_spec: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> None:
        super().__init__(input_spec, preprocessing)
        self.tokenizer: TextTokenizer = text_tokenizer(self.preprocessing["tokenizer"])

    @classmethod
    def request_shape(cls) -> dict[str, Any]:
        """Pasted text goes as ``{"text": ...}``; an ONNX file does not carry the tokenizer, so no import."""
        return {
            "upload": list(TEXT_EXTENSIONS),
            "json_keys": [JSON_KEY],
            "paste_key": JSON_KEY,
            "paste_hint": "a text model: the text itself",
            "import_hint": None,
        }

    def from_json(self, payload: Any, limits: RequestLimits) -> str:
        if not isinstance(payload, dict) or JSON_KEY not in payload:
            raise InvalidArgument('This is a text model: send JSON {"text": "..."} or upload a .txt/.md file')
        return check_text(payload[JSON_KEY], "'text'", limits)

    def from_upload(self, filename: str | None, data: bytes, limits: RequestLimits) -> str:
        check_upload_name(filename)
        return text_from_bytes(data, f"Uploaded file {filename!r}", limits)

    def from_v2(self, body: Any, limits: RequestLimits) -> list[str]:
        return [check_text(text, "text input", limits) for text in texts_from_infer_request(body, limits)]

    def v2_inputs(self) -> list[dict[str, Any]]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    async def classify(
        self, item: str, submit: Submit, labels: list[str], max_chunks: int
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """The text's windows go through the batcher together, then are combined. A long text is
        tokenized once (in a worker thread), and no further than ``max_chunks`` windows."""

        def prepare() -> tuple[list[tuple[str, Any]], dict[str, float]]:
            tokens = document_tokens(self.tokenizer, item, max_chunks)
            return document_chunks(self.tokenizer, tokens), text_features(item, self.tokenizer, tokens)

        chunks, features = await off_loop_if_large(len(item), prepare)
        answers = await asyncio.gather(*(submit(ids) for _, ids in chunks))
        return combine_chunks(chunks, list(answers), labels), features

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """Token ids (N, L) -> int64."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.int64))

    def sample_batch(self) -> np.ndarray:
        """A window as long as the model reads (a short text's window is as long once padded)."""
        words = " ".join(["calibration"] * self.tokenizer.window_tokens)
        return self.tokenizer.encode_batch([words])[:1]

    def smoke_inputs(self, rows: int) -> np.ndarray:
        return np.repeat(self.sample_batch(), rows, axis=0)

    def batch_converter(self) -> BatchConverter:
        import torch

        tokenizer = self.tokenizer

        def text_batch(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.from_numpy(tokenizer.encode_batch(str(t) for t in batch["text"]))
            return ids, torch.from_numpy(np.array(batch["label"], dtype=np.int64))

        return text_batch

    def reference_features(self, table: pa.Table, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        return text_feature_columns((str(t) for t in table.column("text").to_pylist()), self.tokenizer)
