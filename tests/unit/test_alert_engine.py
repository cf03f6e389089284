"""The alert engine on synthetic signals: thresholds fire and resolve, anomalies stand out of a
robust band, trends warn before the threshold is crossed, and alerts are deduplicated."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.alerting.engine import AlertEngine
from aiplatform.alerting.rules import default_rules, parse_rules
from aiplatform.alerting.store import FIRING, RESOLVED, AlertStore
from aiplatform.errors import InvalidArgument
from aiplatform.monitoring.signals import Signal

pytestmark = pytest.mark.unit
LABELS = (("model", "m"), ("version", "1"))
INTERVAL_S = 10.0


def _engine(tmp_path: Path, rules: list[dict]) -> AlertEngine:  # type: ignore[type-arg]
    return AlertEngine(parse_rules(rules), AlertStore(tmp_path / "alerts.sqlite"), webhooks=["http://127.0.0.1:9/hook"])


def _run(engine: AlertEngine, name: str, values: list[float], start: float = 1000.0) -> list[tuple[int, str]]:
    """Feed one value per interval; returns (interval, 'fired'|'resolved') events."""
    events = []
    for index, value in enumerate(values):
        result = engine.evaluate([Signal(name, LABELS, value)], start + index * INTERVAL_S)
        events += [(index, "fired") for _ in result.fired] + [(index, "resolved") for _ in result.resolved]
    return events


def test_a_slow_model_fires_a_latency_alert_after_two_intervals_and_it_resolves(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        [
            {
                "name": "latency-p99-high",
                "kind": "threshold",
                "signal": "latency_p99",
                "threshold": 0.5,
                "for_evaluations": 2,
                "resolve_after": 2,
            }
        ],
    )
    events = _run(engine, "latency_p99", [0.02, 0.03, 0.9, 1.1, 1.2, 1.0, 0.03, 0.02, 0.02])
    assert events == [(3, "fired"), (7, "resolved")]
    [alert] = engine.store.query()
    assert alert.state == RESOLVED and alert.labels == {"model": "m", "version": "1"}
    assert "latency_p99 of model=m, version=1 is" in alert.message and alert.resolved_at == 1000 + 7 * INTERVAL_S
    # firing and resolving each queue one webhook delivery
    assert [d["alert_id"] for d in engine.store.deliveries()] == [alert.id, alert.id]


def test_an_error_burst_fires_once_however_long_it_lasts(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        [
            {
                "name": "error-rate-high",
                "kind": "threshold",
                "signal": "error_rate",
                "threshold": 0.05,
                "severity": "critical",
            }
        ],
    )
    events = _run(engine, "error_rate", [0.0, 0.0, 0.4, 0.5, 0.6, 0.45, 0.0, 0.0])
    assert events == [(2, "fired"), (7, "resolved")]
    assert engine.store.query()[0].severity == "critical"


def test_a_rising_trend_warns_before_the_threshold_is_crossed(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        [
            {
                "name": "latency-trend",
                "kind": "trend",
                "signal": "latency_p99",
                "threshold": 0.5,
                "window": 10,
                "horizon_s": 60,
            },
            {"name": "latency-p99-high", "kind": "threshold", "signal": "latency_p99", "threshold": 0.5},
        ],
    )
    rising = [0.10 + 0.03 * i for i in range(20)]  # crosses 0.5 at interval 14
    fired: dict[str, float] = {}
    for index, value in enumerate(rising):
        for alert in engine.evaluate([Signal("latency_p99", LABELS, value)], 1000 + index * INTERVAL_S).fired:
            fired.setdefault(alert.rule, value)
    assert fired["latency-trend"] < 0.5 <= fired["latency-p99-high"]
    warning = engine.store.query(rule="latency-trend")[0]
    assert "rising toward 0.5" in warning.message


def test_flat_or_falling_values_give_no_early_warning(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        [{"name": "t", "kind": "trend", "signal": "error_rate", "threshold": 0.05, "window": 8, "horizon_s": 300}],
    )
    assert _run(engine, "error_rate", [0.02, 0.021, 0.019, 0.02, 0.02, 0.018, 0.016, 0.01, 0.005]) == []


def test_an_anomaly_stands_out_of_the_robust_band_and_an_earlier_outlier_does_not_widen_it(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        [
            {
                "name": "latency-anomaly",
                "kind": "anomaly",
                "signal": "latency_p99",
                "window": 20,
                "sensitivity": 6,
                "min_delta": 0.01,
                "resolve_after": 2,
            }
        ],
    )
    usual = [
        0.020,
        0.022,
        0.019,
        0.021,
        0.020,
        0.023,
        0.018,
        0.021,
        0.020,
        0.5,  # one old outlier
        0.022,
        0.019,
        0.021,
        0.020,
        0.022,
        0.020,
        0.021,
        0.019,
        0.020,
        0.021,
    ]
    events = _run(engine, "latency_p99", [*usual, 0.08, 0.09, 0.09, 0.021, 0.02, 0.02, 0.021])
    # The outlier is an anomaly itself (seen once the window has enough history) and clears; it
    # stays in the window but the median/MAD band ignores it, so a 4x latency still stands out.
    assert events[0][1] == "fired" and 9 <= events[0][0] <= 10 and events[1][1] == "resolved"
    assert (20, "fired") in events and events[-1][1] == "resolved"


def test_drift_alert_per_model_and_feature(tmp_path: Path) -> None:
    engine = _engine(
        tmp_path,
        [r.model_dump() for r in default_rules(latency_p99_s=0.5, error_rate=0.05, queue_wait_s=600, drift_psi=0.25)],
    )
    signals = [
        Signal("drift_score", (("model", "m"), ("feature", "mean_intensity")), 1.7),
        Signal("drift_score", (("model", "m"), ("feature", "predicted_class")), 0.02),
    ]
    fired = engine.evaluate(signals, 1000.0).fired
    assert [(a.rule, a.labels["feature"]) for a in fired] == [("drift-significant", "mean_intensity")]
    assert engine.store.query(state=FIRING)[0].message.startswith("drift_score of model=m, feature=mean_intensity")


def test_a_restarted_engine_does_not_open_an_alert_twice(tmp_path: Path) -> None:
    rules = [{"name": "e", "kind": "threshold", "signal": "error_rate", "threshold": 0.1}]
    first = _engine(tmp_path, rules)
    assert _run(first, "error_rate", [0.5]) == [(0, "fired")]
    second = _engine(tmp_path, rules)  # same file, fresh memory
    assert _run(second, "error_rate", [0.6, 0.7], start=2000) == []
    assert len(second.store.query()) == 1 and second.store.query()[0].value == 0.7


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"name": "x", "kind": "threshold", "signal": "latency_p99"}, "needs a threshold"),
        ({"name": "x", "kind": "spike", "signal": "latency_p99"}, "kind"),
        ({"name": "x", "kind": "threshold", "signal": "cpu", "threshold": 1}, "signal 'cpu' is not one of"),
        ({"name": "Bad Name", "kind": "threshold", "signal": "error_rate", "threshold": 1}, "lowercase"),
        ({"name": "x", "kind": "anomaly", "signal": "error_rate", "window": 2}, "window"),
        ({"name": "x", "kind": "threshold", "signal": "error_rate", "threshold": 1, "colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_are_refused_by_name(rule: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument, match=message):
        parse_rules([rule])


def test_duplicate_rule_names_are_refused() -> None:
    rule = {"name": "x", "kind": "threshold", "signal": "error_rate", "threshold": 1}
    with pytest.raises(InvalidArgument, match="unique"):
        parse_rules([rule, rule])


def test_an_alert_left_open_by_a_restart_resolves_when_its_series_is_gone(tmp_path: Path) -> None:
    rules = [{"name": "d", "kind": "threshold", "signal": "drift_score", "threshold": 0.25, "resolve_after": 1}]
    first = _engine(tmp_path, rules)
    assert _run(first, "drift_score", [0.9]) == [(0, "fired")]
    second = _engine(tmp_path, rules)  # restarted: the drift score is not reported any more
    assert [a.rule for a in second.evaluate([], 2000.0).resolved] == ["d"]


def test_an_operator_resolves_an_alert_by_hand(tmp_path: Path) -> None:
    engine = _engine(tmp_path, [{"name": "e", "kind": "threshold", "signal": "error_rate", "threshold": 0.1}])
    _run(engine, "error_rate", [0.5])
    [alert] = engine.store.query(state=FIRING)
    resolved = engine.store.resolve_by_id(alert.id, engine.webhooks)
    assert resolved.state == RESOLVED and engine.store.resolve_by_id(alert.id, []).resolved_at == resolved.resolved_at


def test_reloaded_rules_keep_the_history_and_open_alerts_of_the_rules_that_stay(tmp_path: Path) -> None:
    latency = {
        "name": "latency-p99-high",
        "kind": "threshold",
        "signal": "latency_p99",
        "threshold": 0.5,
        "resolve_after": 2,
    }
    engine = _engine(
        tmp_path, [latency, {"name": "error-rate-high", "kind": "threshold", "signal": "error_rate", "threshold": 0.05}]
    )
    assert _run(engine, "latency_p99", [0.9]) == [(0, "fired")]
    engine.replace_rules(parse_rules([{**latency, "threshold": 2.0}]))  # raised, and the error rule dropped
    assert [rule.name for rule in engine.rules] == ["latency-p99-high"]
    # Still open under the new threshold: 0.9 is clear now, and two clear intervals resolve it.
    assert _run(engine, "latency_p99", [0.9, 0.9], start=2000.0) == [(1, "resolved")]
    assert not _run(engine, "error_rate", [0.9], start=3000.0)
