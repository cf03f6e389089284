"""The ``image`` kind: PNG/JPEG uploads, base64 or pixel arrays in JSON, UINT8/FP32 v2 tensors;
one image is one model input; drift features are the pixels' mean and spread."""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Optional

import numpy as np
import pyarrow as pa
import torch

from aiplatform.kinds.base import BatchConverter, ModelKind, Submit
from aiplatform.kinds.features import IMAGE_FEATURES, image_feature_columns, image_features
from aiplatform.kinds.images import image_from_bytes, image_from_json, image_shape
from aiplatform.kinds.limits import RequestLimits
from aiplatform.kinds.tensors import images_from_infer_request
from aiplatform.preprocessing import batch_to_tensors, decode_rows, images_to_tensor

INTENSITY_BINS = 16
TABLE_BATCH_ROWS = 4096


class ImageKind(ModelKind):
    name: ClassVar[str] = "image"
    feature_names: ClassVar[tuple[str, ...]] = IMAGE_FEATURES
    dataset_columns: ClassVar[tuple[str, ...]] = ("id", "image", "label", "variant")

    @property
    def shape(self) -> tuple[int, int, int]:
        return image_shape(self.input_spec)

    @property
    def framing(self) -> Optional[dict[str, Any]]:
        """How uploads are brought into the training data's framing (``model.json``), if recorded."""
        return self.preprocessing.get("framing")

    def from_json(self, payload: Any, limits: RequestLimits) -> np.ndarray:
        return image_from_json(payload, self.input_spec, limits.max_image_pixels, self.framing)

    def from_upload(self, filename: Optional[str], data: bytes, limits: RequestLimits) -> np.ndarray:
        return image_from_bytes(data, self.input_spec, f"Uploaded file {filename!r}", limits.max_image_pixels,
                                self.framing)

    def from_v2(self, body: Any, limits: RequestLimits) -> list[np.ndarray]:
        images, _ = images_from_infer_request(body, self.input_spec, limits)
        return images

    def v2_inputs(self) -> list[dict[str, Any]]:
        height, width, channels = self.shape
        return [{"name": "input", "datatype": "UINT8", "shape": [-1, height, width, channels]}]

    async def classify(self, item: np.ndarray, submit: Submit, labels: list[str],
                       max_chunks: int) -> tuple[dict[str, Any], dict[str, float]]:
        return await submit(item), image_features(item)

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W, C) -> normalised float (N, C, H, W)."""
        return images_to_tensor(batch, self.preprocessing)

    def sample_batch(self) -> np.ndarray:
        return np.zeros((1, *self.shape), dtype=np.uint8)

    def batch_converter(self) -> BatchConverter:
        shape, preprocessing = self.shape, self.preprocessing
        return lambda batch: batch_to_tensors(batch, shape, preprocessing)

    def reference_features(self, table: pa.Table, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        """Rows decoded with the dataset's own image shape (a dataset of another size than the
        model's input can still be compared: the features are scale-free)."""
        columns: dict[str, list[np.ndarray]] = {name: [] for name in IMAGE_FEATURES}
        for images in _image_batches(table, _dataset_shape(manifest)):
            for name, values in image_feature_columns(images).items():
                columns[name].append(values)
        return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}

    # -- datasets of this kind (no model needed) -------------------------------------------------
    @staticmethod
    def sample_previews(table: pa.Table, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"image": png_data_url(image)} for batch in _image_batches(table, _dataset_shape(manifest))
                for image in batch]

    @staticmethod
    def profile_split(table: pa.Table, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        """A split's summary (mean image, intensity histograms) and one key per row for finding
        duplicates and leakage (the image bytes)."""
        shape = _dataset_shape(manifest)
        total = np.zeros(shape, dtype=np.float64)
        histogram = np.zeros(INTENSITY_BINS, dtype=np.int64)
        means: list[np.ndarray] = []
        for batch in _image_batches(table, shape):
            total += batch.sum(axis=0, dtype=np.float64) / 255.0
            histogram += np.bincount((batch.reshape(-1).astype(np.int64) * INTENSITY_BINS) // 256,
                                     minlength=INTENSITY_BINS)
            means.append(image_feature_columns(batch)["mean_intensity"])
        per_image = np.concatenate(means) if means else np.zeros(0)
        pixels = max(1, int(histogram.sum()))
        summary = {
            "mean_image": np.round(total / max(1, table.num_rows), 5).tolist(),
            "intensity_histogram": {"bins": INTENSITY_BINS, "shares": [round(int(h) / pixels, 6) for h in histogram]},
            "mean_intensity": round(float(per_image.mean()), 6) if per_image.size else 0.0,
            "image_mean_intensity_histogram": _histogram(per_image, 0.0, 1.0, 20),
        }
        return summary, list(table.column("image").to_pylist())

    @staticmethod
    def profile_extra(manifest: dict[str, Any], splits: list[str]) -> dict[str, Any]:
        return {}


def png_data_url(image: np.ndarray) -> str:
    """A uint8 (H, W, C) image as a ``data:image/png`` URL (the UI's CSP allows data: images)."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _dataset_shape(manifest: dict[str, Any]) -> tuple[int, int, int]:
    image = manifest["image"]
    return int(image["height"]), int(image["width"]), int(image["channels"])


def _image_batches(table: pa.Table, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    for batch in table.to_batches(max_chunksize=TABLE_BATCH_ROWS):
        yield decode_rows(batch.column("image").to_numpy(zero_copy_only=False), shape)


def _histogram(values: np.ndarray, low: float, high: float, bins: int) -> dict[str, Any]:
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}

