"""The ``image`` kind: PNG/JPEG uploads, base64 or pixel arrays in JSON, UINT8/FP32 v2 tensors;
one image is one model input; drift features are the pixels' mean and spread. Its datasets'
profiles hold mean images and intensity histograms; an ONNX graph of (N, C, H, W) or (N, H, W, C)
square images imports as one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from aiplatform.errors import InvalidArgument
from aiplatform.kinds.base import (
    BarChart,
    BatchConverter,
    Chart,
    DatasetKind,
    ImageChart,
    ImportedInput,
    InputConverter,
    ModelKind,
    Submit,
)
from aiplatform.kinds.features import IMAGE_FEATURES, image_feature_columns, image_features
from aiplatform.kinds.images import (
    IMAGE_MAGIC,
    JSON_IMAGE_KEYS,
    image_from_bytes,
    image_from_json,
    image_shape,
    json_image_bytes,
    thumbnail,
)
from aiplatform.kinds.tensors import FLOAT_DATATYPES, images_from_infer_request
from aiplatform.limits import RequestLimits
from aiplatform.preprocessing import batch_to_tensors, decode_rows, images_to_tensor

if TYPE_CHECKING:  # torch is imported where tensors are made (model servers, training workers)
    import torch

INTENSITY_BINS = 16
TABLE_BATCH_ROWS = 4096
MAX_IMAGE_SIDE = 4096
"""An imported graph's images, at most (pixels a side)."""
UPLOAD_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageDatasets(DatasetKind):
    name: ClassVar[str] = "image"
    dataset_columns: ClassVar[tuple[str, ...]] = ("id", "image", "label", "variant")

    @staticmethod
    def sample_previews(table: pa.Table, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"image": png_data_url(image)}
            for batch in _image_batches(table, _dataset_shape(manifest))
            for image in batch
        ]

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
            histogram += np.bincount(
                (batch.reshape(-1).astype(np.int64) * INTENSITY_BINS) // 256, minlength=INTENSITY_BINS
            )
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

    @staticmethod
    def profile_charts(profile: dict[str, Any]) -> list[Chart]:
        """Each split's mean image, and the train split's pixel intensities."""
        charts: list[Chart] = [
            ImageChart(f"mean_image_{split}", np.array(summary["mean_image"]))
            for split, summary in profile["splits"].items()
            if "mean_image" in summary
        ]
        train = profile["splits"].get("train", {})
        if "intensity_histogram" in train:
            shares = train["intensity_histogram"]["shares"]
            charts.append(
                BarChart(
                    "intensity_histogram",
                    "train: pixel intensity (share of pixels)",
                    shares,
                    [f"{i * 256 // len(shares)}" for i in range(len(shares))],
                )
            )
        return charts

    @staticmethod
    def input_preview(data: bytes, size: int) -> dict[str, Any] | None:
        """A PNG/JPEG upload or a JSON body's base64 image (``JSON_IMAGE_KEYS``, as decoding takes
        them) as a thumbnail."""
        image = data if data.startswith(IMAGE_MAGIC) else json_image_bytes(data)
        return thumbnail(image, size) if image is not None else None

    @staticmethod
    def worker_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
        return {"image_shape": list(_dataset_shape(manifest))}

    @staticmethod
    def user_batch_converter(inputs: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> InputConverter:
        """Images as float (N, C, H, W) after ``value * scale``, then ``(value - mean) / std``
        (default: 0..255 -> 0..1; the steps and checks an import of the same model applies)."""
        shape = tuple(int(d) for d in inputs["image_shape"])
        steps = image_preprocessing_steps(dict(preprocessing), channels=shape[2])
        return lambda batch: images_to_tensor(decode_rows(batch["image"], shape), steps)


class ImageKind(ModelKind):
    name: ClassVar[str] = "image"
    datasets: ClassVar[type[DatasetKind]] = ImageDatasets
    feature_names: ClassVar[tuple[str, ...]] = IMAGE_FEATURES
    importable: ClassVar[bool] = True

    @classmethod
    def request_shape(cls) -> dict[str, Any]:
        return {
            "upload": list(UPLOAD_EXTENSIONS),
            "json_keys": [*JSON_IMAGE_KEYS, "array"],
            "paste_key": None,
            "paste_hint": 'an image model: JSON {"image_b64": "<base64 PNG/JPEG>"} or {"array": [[...]]}',
            "import_hint": '{"scale": 0.00392, "mean": [0.5], "std": [0.25]}',
        }

    @classmethod
    def import_input(cls, graph_input: dict[str, Any], given: dict[str, Any]) -> ImportedInput:
        height, width, channels, layout = image_geometry(graph_input)
        steps = image_preprocessing_steps(given, channels, floating=graph_input["datatype"] in FLOAT_DATATYPES)
        return ImportedInput(
            {"type": cls.name, "height": height, "width": width, "channels": channels},
            steps,
            layout,
            height * width * channels,
            f"{height}x{width}x{channels}",
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return image_shape(self.input_spec)

    @property
    def framing(self) -> dict[str, Any] | None:
        """How uploads are brought into the training data's framing (``model.json``), if recorded."""
        return self.preprocessing.get("framing")

    def from_json(self, payload: Any, limits: RequestLimits) -> np.ndarray:
        return image_from_json(payload, self.input_spec, limits.max_image_pixels, self.framing)

    def from_upload(self, filename: str | None, data: bytes, limits: RequestLimits) -> np.ndarray:
        return image_from_bytes(
            data, self.input_spec, f"Uploaded file {filename!r}", limits.max_image_pixels, self.framing
        )

    def from_v2(self, body: Any, limits: RequestLimits) -> list[np.ndarray]:
        images, _ = images_from_infer_request(body, self.input_spec, limits)
        return images

    def v2_inputs(self) -> list[dict[str, Any]]:
        height, width, channels = self.shape
        return [{"name": "input", "datatype": "UINT8", "shape": [-1, height, width, channels]}]

    async def classify(
        self, item: np.ndarray, submit: Submit, labels: list[str], max_chunks: int
    ) -> tuple[dict[str, Any], dict[str, float]]:
        return await submit(item), image_features(item)

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W, C) -> normalised float (N, C, H, W)."""
        return images_to_tensor(batch, self.preprocessing)

    def sample_batch(self) -> np.ndarray:
        return np.zeros((1, *self.shape), dtype=np.uint8)

    def smoke_inputs(self, rows: int) -> np.ndarray:
        return np.random.default_rng(rows).integers(0, 256, (rows, *self.shape), dtype=np.uint8)

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


def image_geometry(spec: dict[str, Any]) -> tuple[int, int, int, str]:
    """(height, width, channels, layout) of an image graph's input: (N, C, H, W) or (N, H, W, C),
    square (as the image kind decodes uploads) and at most ``MAX_IMAGE_SIDE`` pixels a side."""
    shape = spec["shape"]
    found = None
    if len(shape) == 4 and shape[1] in (1, 3) and shape[2] > 0 and shape[3] > 0:
        found = (shape[2], shape[3], shape[1], "NCHW")
    elif len(shape) == 4 and shape[3] in (1, 3) and shape[1] > 0 and shape[2] > 0:
        found = (shape[1], shape[2], shape[3], "NHWC")
    if found is not None:
        height, width = found[0], found[1]
        if height != width or height > MAX_IMAGE_SIDE:
            raise InvalidArgument(
                f"The ONNX model's input {spec['name']!r} is {height}x{width} pixels; image models "
                f"here take square images of at most {MAX_IMAGE_SIDE} pixels a side"
            )
        return found
    raise InvalidArgument(
        f"The ONNX model's input {spec['name']!r} has shape {shape}; an image model takes "
        "(batch, channels, height, width) or (batch, height, width, channels) with 1 or 3 "
        "channels and a fixed height and width"
    )


def image_preprocessing_steps(given: dict[str, Any], channels: int, floating: bool = True) -> dict[str, Any]:
    """How pixels become the graph's input: ``value * scale``, then ``(value - mean) / std`` per
    channel (default for a float input: 0..255 -> 0..1; an integer input takes the pixels as
    they are, and nothing else: its values would be truncated)."""
    unknown = sorted(set(given) - {"scale", "mean", "std"})
    if unknown:
        raise InvalidArgument(f"Unknown image preprocessing keys {unknown}; known: mean, scale, std")
    identity = {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
    if not floating:
        if given and {**identity, **given} != identity:
            raise InvalidArgument("The ONNX model takes integer pixels: it cannot be given scale, mean or std")
        return identity
    steps = {"scale": 1 / 255, "mean": [0.0] * channels, "std": [1.0] * channels, **given}
    try:
        scale = float(steps["scale"])
        mean = [float(v) for v in steps["mean"]]
        std = [float(v) for v in steps["std"]]
    except (TypeError, ValueError):
        raise InvalidArgument("preprocessing scale must be a number and mean, std lists of numbers") from None
    if (
        len(mean) != channels
        or len(std) != channels
        or not all(np.isfinite([scale, *mean, *std]))
        or any(s <= 0 for s in std)
        or scale <= 0
    ):
        raise InvalidArgument(
            f"preprocessing needs a positive scale and {channels} mean and positive std values "
            f"(one per channel), got {given}"
        )
    return {**steps, "scale": scale, "mean": mean, "std": std}
