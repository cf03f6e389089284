"""PSI drift scores and the charts reports carry."""

from __future__ import annotations

import io
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from aiplatform.analysis.charts import bar_chart_svg, grayscale_png
from aiplatform.analysis.drift import categorical_psi, drift_summary, numeric_psi
from aiplatform.errors import InvalidArgument
from aiplatform.kinds.features import image_feature_columns, image_features, text_features
from aiplatform.text import Tokenizer, split_tokens

pytestmark = pytest.mark.unit


def test_the_same_distribution_is_stable_and_a_shift_is_significant() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0.13, 0.03, 20_000)
    same = numeric_psi(reference, rng.normal(0.13, 0.03, 500))
    assert same["verdict"] == "stable" and same["psi"] < 0.05
    assert sum(same["reference"]) == pytest.approx(1.0) and len(same["live"]) == len(same["edges"]) + 1
    shifted = numeric_psi(reference, rng.normal(0.25, 0.03, 500))  # brighter images
    assert shifted["verdict"] == "significant" and shifted["psi"] > 1.0
    slight = numeric_psi(reference, rng.normal(0.14, 0.03, 5000))
    assert slight["psi"] < shifted["psi"] and slight["live_mean"] == pytest.approx(0.14, abs=0.01)


def test_predicted_classes_against_the_class_balance() -> None:
    balance = {"negative": 430.0, "neutral": 390.0, "positive": 180.0}
    labels = list(balance)
    like = ["negative"] * 43 + ["neutral"] * 39 + ["positive"] * 18
    assert categorical_psi(balance, like, labels)["psi"] < 0.01
    skewed = categorical_psi(balance, ["positive"] * 90 + ["negative"] * 10, labels)
    assert skewed["verdict"] == "significant" and skewed["live"] == [0.1, 0.0, 0.9]


def test_the_summary_names_the_worst_feature_and_needs_enough_samples() -> None:
    features = {
        "a": {"psi": 0.02, "verdict": "stable"},
        "b": {"psi": 0.4, "verdict": "significant"},
        "c": {"psi": 0.12, "verdict": "moderate"},
    }
    summary = drift_summary(features, live_samples=100)
    assert summary == {"score": 0.4, "verdict": "significant", "worst_feature": "b", "drifted": ["b", "c"]}
    with pytest.raises(InvalidArgument, match="at least 30 recent predictions"):
        drift_summary(features, live_samples=5)


def test_input_features_are_the_same_one_by_one_and_in_batches() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    columns = image_feature_columns(images)
    assert [image_features(i)["mean_intensity"] for i in images] == pytest.approx(
        list(columns["mean_intensity"]), abs=1e-5
    )
    tokenizer = Tokenizer(["good", "movie"])  # "a", "," and "!" are tokens it does not know
    assert text_features("A good movie, GOOD!", tokenizer) == {"chars": 19.0, "tokens": 6.0, "oov_rate": 0.5}
    assert text_features("", tokenizer)["oov_rate"] == 0.0
    text = "A good movie, GOOD!"  # the gateway passes the tokens it already split for the model
    assert text_features(text, tokenizer, split_tokens(text)) == text_features(text, tokenizer)


def test_charts_are_valid_svg_and_png() -> None:
    svg = bar_chart_svg("title <&>", [0.2, 0.8], ["a", "b"], compare=[0.5, 0.5])
    root = ElementTree.fromstring(svg)
    assert len(root.findall(".//{http://www.w3.org/2000/svg}rect[@class='bar']")) == 4
    image = Image.open(io.BytesIO(grayscale_png(np.linspace(0, 1, 28 * 28).reshape(28, 28, 1), scale=2)))
    assert image.size == (56, 56) and image.mode == "L"
    assert image.getpixel((0, 0)) == 0 and image.getpixel((55, 55)) == 255


def test_drift_reference_rows_are_read_with_the_datasets_own_image_shape() -> None:
    """A model taking 8x8 images compared against a dataset of 4x4 ones: the rows decode with the
    dataset's shape (the features are scale-free), not the model's."""
    import pyarrow as pa

    from aiplatform.kinds import kind_for

    kind = kind_for({"input": {"type": "image", "height": 8, "width": 8, "channels": 1}, "preprocessing": {}})
    rows = [np.full((4, 4, 1), value, dtype=np.uint8).tobytes() for value in (0, 255)]
    table = pa.table({"image": pa.array(rows, pa.binary()), "label": [0, 1]})
    features = kind.reference_features(table, {"image": {"height": 4, "width": 4, "channels": 1}})
    assert features["mean_intensity"].tolist() == [0.0, 1.0]
