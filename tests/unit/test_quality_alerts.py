"""The quality rule on the alert engine: accuracy below the threshold fires over enough labeled
predictions, never over too few, and resolves like the other rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.alerting.engine import AlertEngine
from aiplatform.alerting.rules import default_rules
from aiplatform.alerting.store import AlertStore
from aiplatform.monitoring.signals import quality_signals

pytestmark = pytest.mark.unit


def _engine(tmp_path: Path) -> AlertEngine:
    rules = default_rules(
        latency_p99_s=0.5,
        error_rate=0.05,
        queue_wait_s=600,
        drift_psi=0.25,
        quality_accuracy=0.8,
        quality_min_labeled=20,
    )
    return AlertEngine(rules, AlertStore(tmp_path / "alerts.sqlite"))


def _quality(accuracy: float, labeled: int) -> list:  # type: ignore[type-arg]
    return quality_signals([{"model": "m", "version": 2, "labeled": labeled, "accuracy": accuracy, "macro_f1": 0.5}])


def test_the_quality_rule_fires_below_its_threshold_over_enough_labels_and_resolves(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    [rule] = [r for r in engine.rules if r.name == "quality-low"]
    assert (rule.signal, rule.op, rule.threshold, rule.min_count) == ("quality_accuracy", "<", 0.8, 20)
    assert engine.evaluate(_quality(0.3, 19), 1000).fired == []  # too few labels: not a value
    [alert] = engine.evaluate(_quality(0.3, 20), 1010).fired
    assert alert.rule == "quality-low" and alert.labels == {"model": "m", "version": "2"}
    assert alert.series == "quality_accuracy{model=m,version=2}" and "0.3 (< 0.8)" in alert.message
    assert engine.evaluate(_quality(0.3, 40), 1020).fired == []  # open once
    assert engine.evaluate(_quality(0.9, 40), 1030).resolved == []  # resolve_after: 2 clear evaluations
    [resolved] = engine.evaluate(_quality(0.9, 40), 1040).resolved
    assert resolved.id == alert.id and resolved.state == "resolved"


def test_quality_signals_carry_their_labeled_count(tmp_path: Path) -> None:
    signals = {s.name: s for s in _quality(0.75, 33)}
    assert signals["quality_accuracy"].value == 0.75 and signals["quality_accuracy"].count == 33
    assert signals["quality_macro_f1"].value == 0.5 and signals["labeled_predictions"].value == 33
    assert signals["quality_accuracy"].labels == (("model", "m"), ("version", "2"))
