"""Benchmark: how well real MNIST test digits are read in the forms people upload them.

    python bench/uploads.py --train-rows 20000 --test-rows 2000 --repeats 3

Trains the cnn-classification template's network on real MNIST (plain PyTorch, in this process,
normalised exactly as the platform does), records the training images' framing as the template does
(``measure_framing``), then sends each test digit through the image kind's upload decoding
(``ImageKind.from_upload``, what the gateway runs) in several forms: the original PNG, inverted
(dark on light), padded into a large canvas, shifted, small in a large image, JPEG, a photo-like
sheet of paper (grey, unevenly lit, noisy, JPEG), drawn on a transparent canvas, and stored rotated
with an EXIF orientation. Prints accuracy per form with the framing and without it (resize only),
and each form's difference from the original, medians over ``--repeats`` seeds of the forms.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import benchpath  # noqa: F401  (first: the working tree ahead of the installed package)
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aiplatform.datasets.sources import _mnist_file, _read_mnist_split
from aiplatform.kinds import kind_for
from aiplatform.kinds.framing import measure_framing
from aiplatform.limits import RequestLimits
from aiplatform.networks.architectures import build_model
from aiplatform.packaging.config import ModelConfig
from aiplatform.preprocessing import image_preprocessing, images_to_tensor

ARCHITECTURE = {
    "type": "cnn",
    "in_channels": 1,
    "image_size": 28,
    "num_classes": 10,
    "conv_channels": [16, 32],
    "kernel_size": 3,
    "hidden_units": 64,
    "dropout": 0.1,
}


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(pixels: np.ndarray, quality: int = 75) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def enlarged(digit: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))


def on_canvas(digit: np.ndarray, canvas: int, side: int, rng: np.random.Generator, fill: int = 0) -> np.ndarray:
    """The digit scaled to ``side`` pixels, somewhere random on a ``canvas`` x ``canvas`` image."""
    image = np.full((canvas, canvas), fill, dtype=np.uint8)
    top, left = rng.integers(0, canvas - side + 1, size=2)
    patch = enlarged(digit, side)
    image[top : top + side, left : left + side] = (
        np.maximum(image[top : top + side, left : left + side], patch)
        if fill == 0
        else np.minimum(image[top : top + side, left : left + side], 255 - patch)
    )
    return image


def photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A dark digit on unevenly lit grey paper with sensor noise, photographed at 8x, as JPEG."""
    side = 224
    ink = enlarged(digit, 160).astype(np.float32) / 255
    paper = np.zeros((side, side), dtype=np.float32)
    top, left = rng.integers(10, side - 160 - 10, size=2)
    paper[top : top + 160, left : left + 160] = ink
    rows, cols = np.indices((side, side)) / side
    light = 200 + 40 * (rows * rng.uniform(-1, 1) + cols * rng.uniform(-1, 1))
    image = light * (1 - 0.8 * paper) + rng.normal(0, 8, (side, side))
    return jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=70)


def transparent(digit: np.ndarray) -> bytes:
    """A black digit drawn on a transparent canvas (what a web drawing pad exports)."""
    big = enlarged(digit, 112)
    rgba = np.zeros((112, 112, 4), dtype=np.uint8)
    rgba[..., 3] = big
    return png(rgba, "RGBA")


def exif_rotated(digit: np.ndarray) -> bytes:
    """Stored turned 90 degrees with an EXIF tag saying how to turn it upright (a phone photo)."""
    stored = Image.fromarray(255 - enlarged(digit, 112)).transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation 8: turn the stored pixels 90 degrees counter-clockwise to view
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()


FORMS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "original PNG (28x28, light on dark)": lambda d, rng: png(d),
    "inverted (dark on light)": lambda d, rng: png(255 - d),
    "padded into 280x280": lambda d, rng: png(on_canvas(d, 280, 200, rng)),
    "shifted (off-centre in 56x56)": lambda d, rng: png(on_canvas(d, 56, 28, rng)),
    "small (40 px in 400x400)": lambda d, rng: png(on_canvas(d, 400, 40, rng)),
    "JPEG q60, dark on light, 4x": lambda d, rng: jpeg(255 - enlarged(d, 112), 60),
    "photo-like paper": photo,
    "transparent canvas (RGBA)": lambda d, rng: transparent(d),
    "EXIF-rotated phone JPEG": lambda d, rng: exif_rotated(d),
}


def train(images: np.ndarray, labels: np.ndarray, preprocessing: dict, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs = images_to_tensor(images[..., None], preprocessing)
    targets = torch.from_numpy(labels.astype(np.int64))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), 128):
            batch = order[start : start + 128]
            optimizer.zero_grad()
            F.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: torch.nn.Module, kind, payloads: list[bytes], labels: np.ndarray) -> float:
    limits = RequestLimits()
    decoded = np.stack([kind.from_upload("upload", payload, limits) for payload in payloads])
    with torch.no_grad():
        predicted = model(kind.to_tensor(decoded)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)

    path = _mnist_file()
    train_images, train_labels = _read_mnist_split(path, "train", slice(args.train_rows))
    test_images, test_labels = _read_mnist_split(path, "test", slice(args.test_rows))
    pixels = train_images.astype(np.float32) / 255
    preprocessing = image_preprocessing(28, 28, 1, float(pixels.mean()), float(pixels.std()))
    framing = measure_framing(train_images[:2000, ..., None])
    print(f"framing measured on 2,000 training images: {framing}")
    started = time.perf_counter()
    model = train(train_images, train_labels, preprocessing, args.epochs)
    print(f"trained on {args.train_rows:,} rows, {args.epochs} epochs in {time.perf_counter() - started:.0f} s")

    config = {
        "name": "bench",
        "template": "cnn-classification",
        "architecture": ARCHITECTURE,
        "labels": [str(i) for i in range(10)],
        "input": {"type": "image", "height": 28, "width": 28, "channels": 1},
    }
    framed = kind_for(ModelConfig.model_validate({**config, "preprocessing": {**preprocessing, "framing": framing}}))
    resized = kind_for(ModelConfig.model_validate({**config, "preprocessing": preprocessing}))
    with torch.no_grad():
        tensor_accuracy = float(
            (model(images_to_tensor(test_images[..., None], preprocessing)).argmax(1).numpy() == test_labels).mean()
        )
    print(f"test digits as tensors (no decoding at all): accuracy {tensor_accuracy:.4f}\n")

    results: dict[str, dict[str, list[float]]] = {form: {"framed": [], "resized": [], "ms": []} for form in FORMS}
    for repeat in range(args.repeats):
        for form, make in FORMS.items():
            rng = np.random.default_rng(repeat)
            payloads = [make(digit, rng) for digit in test_images]
            started = time.perf_counter()
            results[form]["framed"].append(accuracy(model, framed, payloads, test_labels))
            results[form]["ms"].append((time.perf_counter() - started) * 1000 / len(payloads))
            results[form]["resized"].append(accuracy(model, resized, payloads, test_labels))
    median = {form: {key: statistics.median(values) for key, values in r.items()} for form, r in results.items()}
    original = median[next(iter(FORMS))]["framed"]
    print(f"{args.test_rows:,} real MNIST test digits per form, medians of {args.repeats} runs\n")
    print("| form | accuracy, framed | vs original | accuracy, resize only | decode ms/image (framed) |")
    print("| --- | --- | --- | --- | --- |")
    for form, m in median.items():
        print(
            f"| {form} | {m['framed']:.4f} | {(m['framed'] - original) * 100:+.2f} points | {m['resized']:.4f} "
            f"| {m['ms']:.2f} |"
        )
    worst = min(m["framed"] - original for m in median.values())
    print(f"\nworst form: {worst * 100:+.2f} points from the original (target: within 2 points)")


if __name__ == "__main__":
    main()
