"""What the CLI parses itself before calling the API: ``--since`` ages and times."""

from __future__ import annotations

import pytest

from aip.results_cli import parse_since
from aiplatform.errors import InvalidArgument

NOW = 1_800_000_000.0


@pytest.mark.parametrize("text, expected", [
    ("90s", NOW - 90), ("30m", NOW - 1800), ("2h", NOW - 7200), ("7d", NOW - 7 * 86400),
    ("2027-01-15T08:00:00+00:00", 1_800_000_000.0), ("2027-01-15T10:00:00+02:00", 1_800_000_000.0),
    ("2027-01-15T08:00", 1_800_000_000.0),  # no zone: UTC
    (None, None)])
def test_since_takes_an_age_or_an_iso_time(text, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "5w", "-3h", "h", ""])
def test_anything_else_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(InvalidArgument, match="give an age such as 30m"):
        parse_since(text, now=NOW)
