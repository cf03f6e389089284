"""The XGBoost template's reports are spaced by time: a worker's result queue holds one report and
Ray Train's controller takes one per poll, so a report sent before the last was collected blocks
boosting until the next poll."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aiplatform.training.boosting import RoundReporter

pytestmark = pytest.mark.unit


class RecordingReporter(RoundReporter):
    """The real decisions; the report itself only records its round."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config, {"history": [], "best": None, "finished": False}, done=0, rows=100)
        self.rounds: list[int] = []

    def _report(self, model: Any, point: dict[str, Any]) -> None:
        self.rounds.append(self.round)
        self.started, self.rounds_since, self.reported_at = time.perf_counter(), 0, time.perf_counter()


def boost(reporter: RoundReporter, rounds: int) -> None:
    for epoch in range(rounds):
        loss = 1.0 / (epoch + 1)  # improving every round: no early stop
        log = {"train": {"mlogloss": [loss], "merror": [0.1]}, "val": {"mlogloss": [loss], "merror": [0.1]}}
        assert reporter.after_iteration(None, epoch, log) is False


def config(spacing_s: float) -> dict[str, Any]:
    return {"num_boost_round": 40, "early_stopping_rounds": 20, "report_every": 2, "report_spacing_s": spacing_s}


def test_fast_rounds_report_once_until_the_spacing_has_passed() -> None:
    reporter = RecordingReporter(config(spacing_s=3600))
    boost(reporter, 39)
    assert reporter.rounds == [2]  # the first report has nothing to queue behind; the rest wait


def test_rounds_slower_than_the_spacing_report_every_few_rounds() -> None:
    reporter = RecordingReporter(config(spacing_s=0))
    boost(reporter, 39)
    assert reporter.rounds == list(range(2, 40, 2))
