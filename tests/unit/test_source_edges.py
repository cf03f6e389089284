"""The dataset-source allow-list at its edges: ``s3://`` keys that climb out of an allowed prefix,
and symbolic links inside an allowed folder that point out of the data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.datasets.source_policy import SourcePolicy
from aiplatform.errors import InvalidArgument

pytestmark = pytest.mark.unit


@pytest.fixture()
def policy(tmp_path: Path) -> SourcePolicy:
    root = tmp_path / "data"
    (root / "reviews").mkdir(parents=True)
    (root / "reviews" / "a.csv").write_text("text,label\ngood,1\n")
    return SourcePolicy(data_root=root, s3_prefixes=("s3://allowed-bucket/pre",))


@pytest.mark.parametrize(
    "location",
    [
        "s3://allowed-bucket/pre/../../other/secret.csv",
        "s3://allowed-bucket/pre/./x.csv",
        "s3://allowed-bucket/pre//x.csv",
        "s3://allowed-bucket/pre/sub/..",
        "s3:///pre/x.csv",
    ],
)
def test_s3_keys_with_dot_dot_or_empty_segments_are_refused_under_an_allowed_prefix(
    policy: SourcePolicy, location: str
) -> None:
    with pytest.raises(InvalidArgument, match="without '.', '..' or empty segments") as refused:
        policy.check_source(f"csv:{location}")
    assert repr(f"csv:{location}") in refused.value.message


@pytest.mark.parametrize(
    "location", ["s3://allowed-bucket/pre", "s3://allowed-bucket/pre/", "s3://allowed-bucket/pre/a.b/x..csv"]
)
def test_plain_s3_keys_under_an_allowed_prefix_still_pass(policy: SourcePolicy, location: str) -> None:
    assert policy.check_source(f"csv:{location}") == f"csv:{location}"


def test_a_link_out_of_the_data_root_inside_an_allowed_folder_is_refused(policy: SourcePolicy, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("token\nabc\n")
    (policy.data_root / "reviews" / "b.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(InvalidArgument, match="'b.csv' in it links outside the data root") as refused:
        policy.check_source("csv:reviews")
    assert "abc" not in refused.value.message


def test_a_link_to_a_folder_outside_is_refused_and_links_inside_the_root_pass(
    policy: SourcePolicy, tmp_path: Path
) -> None:
    (policy.data_root / "shared").mkdir()
    (policy.data_root / "shared" / "c.csv").write_text("text,label\nbad,0\n")
    (policy.data_root / "reviews" / "more").symlink_to(policy.data_root / "shared")  # inside: fine
    (policy.data_root / "reviews" / "loop").symlink_to(policy.data_root / "reviews")  # a cycle ends
    assert policy.check_source("csv:reviews") == f"csv:{policy.data_root.resolve() / 'reviews'}"
    (tmp_path / "elsewhere").mkdir()
    (policy.data_root / "shared" / "out").symlink_to(tmp_path / "elsewhere")  # reached through 'more'
    with pytest.raises(InvalidArgument, match="'more/out' in it links outside the data root"):
        policy.check_source("csv:reviews")
