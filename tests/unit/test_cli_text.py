"""What the CLI does itself around the API: ``--since`` ages and times, a version's evaluation as text."""

from __future__ import annotations

import pytest

from aip.results_cli import parse_since
from aiplatform.errors import InvalidArgument

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("7d", NOW - 7 * 86400),
        ("2027-01-15T08:00:00+00:00", 1_800_000_000.0),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000.0),
        ("2027-01-15T08:00", 1_800_000_000.0),  # no zone: UTC
        (None, None),
    ],
)
def test_since_takes_an_age_or_an_iso_time(text, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "5w", "-3h", "h", ""])
def test_anything_else_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(InvalidArgument, match="give an age such as 30m"):
        parse_since(text, now=NOW)


def test_the_cli_reads_the_evaluation_under_the_key_training_writes_it() -> None:
    from aip import cli
    from aiplatform import evaluation

    assert cli.EVALUATION_KEY == evaluation.EVALUATION_KEY
    lines = cli.evaluation_lines(
        {
            "labels": ["cat", "dog"],
            "confusion_matrix": [[3, 1], [0, 4]],
            "per_class": [
                {"label": "cat", "precision": 1.0, "recall": 0.75, "f1": 0.857, "support": 4},
                {"label": "dog", "precision": 0.8, "recall": 1.0, "f1": 0.889, "support": 4},
            ],
            "worst": [{"id": "img-7", "label": "cat", "predicted": "dog", "probability": 0.93}],
        }
    )
    assert lines[1].split() == ["cat", "1.0000", "0.7500", "0.8570", "4"]
    assert lines[4].split() == ["3", "1"] and lines[5].split() == ["0", "4"]
    assert "img-7 cat read as dog (p=0.930)" in lines[-1]
