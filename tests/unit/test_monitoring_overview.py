"""The Monitoring page's data without Prometheus: the alert engine's bounded signal history, charts
built from it, and the CLI's rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from aip.monitoring_cli import show_lines, sparkline
from aiplatform.alerting.history import SignalHistory
from aiplatform.alerting.overview import CHARTS, HistorySeries, model_overview, window_seconds
from aiplatform.alerting.rules import default_rules
from aiplatform.alerting.store import Alert
from aiplatform.errors import InvalidArgument
from aiplatform.monitoring.signals import Signal

pytestmark = pytest.mark.unit
NOW = 1_700_000_000.0


def _interval(history: SignalHistory, at: float, ok: int, failed: int, version: str = "1") -> None:
    labels = (("model", "m"), ("version", version))
    history.record(
        at,
        [
            Signal("requests", (*labels, ("outcome", "ok")), ok),
            Signal("requests", (*labels, ("outcome", "server_error")), failed),
            Signal("request_rate", labels, (ok + failed) / 10),
            Signal("error_rate", labels, failed / (ok + failed)),
            Signal("queued_tasks", (), 2),
        ],
    )


def test_the_history_keeps_points_by_series_and_forgets_old_ones(tmp_path: Path) -> None:
    history = SignalHistory(tmp_path / "signals.sqlite", max_age_s=100, max_points=1000)
    for step in range(5):
        _interval(history, NOW + 10 * step, ok=8, failed=2)
    rates = history.series(["request_rate"], NOW, NOW + 100, {"model": "m"})
    assert rates == [
        {
            "name": "request_rate",
            "labels": {"model": "m", "version": "1"},
            "points": [[NOW + 10 * s, 1.0] for s in range(5)],
        }
    ]
    assert history.series(["request_rate"], NOW, NOW + 100, {"model": "other"}) == []
    history.prune(now=NOW + 115)  # older than 100 s: the first two intervals
    assert [p[0] for p in history.series(["request_rate"], 0, NOW + 200)[0]["points"]] == [NOW + 20, NOW + 30, NOW + 40]


def test_the_history_stays_under_its_point_limit(tmp_path: Path) -> None:
    history = SignalHistory(tmp_path / "signals.sqlite", max_points=12)
    for step in range(10):  # 5 points each
        _interval(history, NOW + step, ok=1, failed=1)
    history.prune(now=NOW + 10)
    kept = [
        p[0]
        for entry in history.series(["requests", "request_rate", "error_rate", "queued_tasks"], 0, NOW + 20)
        for p in entry["points"]
    ]
    assert len(kept) <= 12 and min(kept) == NOW + 8  # the newest intervals are what is kept


def test_an_overview_from_the_history_has_totals_thresholds_and_alerts(tmp_path: Path) -> None:
    history = SignalHistory(tmp_path / "signals.sqlite")
    for step in range(6):
        _interval(history, NOW - 600 + 60 * step, ok=9, failed=1)
    _interval(history, NOW - 7200, ok=1000, failed=1000)  # outside the 15-minute window
    rules = [
        r.model_dump() for r in default_rules(latency_p99_s=0.5, error_rate=0.05, queue_wait_s=600, drift_psi=0.25)
    ]
    firing = Alert(
        "a1",
        "error-rate-high",
        "error_rate{model=m,version=1}",
        {"model": "m", "version": "1"},
        "critical",
        "firing",
        "error_rate 0.1 > 0.05",
        0.1,
        NOW - 300,
        NOW - 60,
        None,
    )
    old = Alert(
        "a2",
        "error-rate-high",
        "error_rate{model=m,version=1}",
        {"model": "m", "version": "1"},
        "critical",
        "resolved",
        "old",
        0.5,
        NOW - 7300,
        NOW - 7100,
        NOW - 7000,
    )
    other = Alert(
        "a3",
        "error-rate-high",
        "error_rate{model=x,version=1}",
        {"model": "x", "version": "1"},
        "critical",
        "firing",
        "another model",
        0.5,
        NOW - 100,
        NOW - 60,
        None,
    )
    overview = model_overview(HistorySeries(history.series), "m", None, "15m", rules, [firing, old, other], now=NOW)

    assert overview["source"] == "signals" and overview["since"] == NOW - 900
    assert overview["totals"] == {"ok": 54, "server_error": 6}
    assert [a["id"] for a in overview["alerts"]] == ["a1"]
    charts = {c["name"]: c for c in overview["charts"]}
    assert list(charts) == [spec.name for spec in CHARTS]
    [errors] = charts["error_rate"]["series"]
    assert errors["labels"] == {"version": "1", "outcome": ""} and [v for _, v in errors["points"]] == [0.1] * 6
    assert charts["error_rate"]["thresholds"] == [
        {"rule": "error-rate-high", "value": 0.05, "op": ">", "severity": "critical"}
    ]
    assert not charts["batch_size"]["available"] and not charts["class_share"]["available"]
    [queued] = charts["queued_tasks"]["series"]  # not per model
    assert queued["labels"] == {} and queued["points"][0][1] == 2
    one_version = model_overview(HistorySeries(history.series), "m", "2", "15m", rules, [firing], now=NOW)
    assert one_version["totals"] == {} and one_version["alerts"] == []


def test_a_week_is_downsampled_to_a_drawable_number_of_points(tmp_path: Path) -> None:
    history = SignalHistory(tmp_path / "signals.sqlite")
    for step in range(2000):
        _interval(history, NOW - 7 * 86400 + 300 * step, ok=1, failed=0)
    overview = model_overview(HistorySeries(history.series), "m", None, "7d", [], [], now=NOW)
    [rate] = next(c for c in overview["charts"] if c["name"] == "request_rate")["series"]
    assert 100 <= len(rate["points"]) <= 121
    assert overview["totals"] == {"ok": 2000}


@pytest.mark.parametrize(
    "model, version, window, message",
    [
        ("m", None, "2h", "window must be one of"),
        ('m"}) or vector(1', None, "1h", "is not a model name"),
        ("m", "1|2", "1h", "is not a model name or version"),
    ],
)
def test_bad_arguments_are_refused_by_name(tmp_path: Path, model: str, version: str, window: str, message: str) -> None:
    history = SignalHistory(tmp_path / "signals.sqlite")
    with pytest.raises(InvalidArgument, match=message):
        model_overview(HistorySeries(history.series), model, version, window, [], [], now=NOW)
    with pytest.raises(InvalidArgument):
        window_seconds("forever")


def test_the_cli_prints_latest_values_and_sparklines(tmp_path: Path) -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([3, 3, 3]) == "▁▁▁" and sparkline([]) == ""
    history = SignalHistory(tmp_path / "signals.sqlite")
    for step in range(3):
        _interval(history, NOW - 300 + 60 * step, ok=9 + step, failed=1)
    lines = show_lines(model_overview(HistorySeries(history.series), "m", None, "1h", [], [], now=NOW))
    assert lines[0] == "m, last 1h (from signals)"
    assert lines[1] == "requests: ok 30, server_error 3"
    rate = next(line for line in lines if line.strip().startswith("Requests per second"))
    assert "1.2 req/s" in rate and rate.endswith("▁▅█"), rate
    assert any("needs Prometheus" in line for line in lines)
