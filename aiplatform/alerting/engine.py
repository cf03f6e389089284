"""The alert engine: rules evaluated over each interval's signals, alerts opened and resolved.

State per (rule, series): the recent values (for anomaly and trend rules) and how many
evaluations in a row the condition has held or not. That state lives in memory and is rebuilt
from new values after a restart; the alerts themselves are in the store, so a restarted engine
neither forgets an open alert nor opens it twice.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aiplatform.alerting.rules import Rule
from aiplatform.alerting.store import Alert, AlertStore
from aiplatform.monitoring.metrics import inc
from aiplatform.monitoring.signals import Signal

EWMA_ALPHA = 0.5
MAD_SCALE = 1.4826  # a MAD of normal data times this is its standard deviation
MIN_TREND_POINTS = 5


@dataclass
class _SeriesState:
    values: deque[tuple[float, float]]  # (time, value)
    breaching: int = 0
    clear: int = 0
    ewma: float | None = None


@dataclass
class Evaluation:
    """What one evaluation changed."""

    fired: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)


class AlertEngine:
    def __init__(self, rules: list[Rule], store: AlertStore, webhooks: list[str] | None = None) -> None:
        self.rules = rules
        self.store = store
        self.webhooks = list(webhooks or [])
        self._state: dict[tuple[str, str], _SeriesState] = {}
        # Alerts left open by an earlier run: their series get state again, so that they resolve
        # once their condition is gone (and are never opened twice while it holds).
        windows = {rule.name: rule.window for rule in rules}
        for alert in store.query(state="firing", limit=1000):
            if alert.rule in windows:
                self._state[(alert.rule, alert.series)] = _SeriesState(deque(maxlen=windows[alert.rule] + 1))

    def replace_rules(self, rules: list[Rule]) -> None:
        """Run ``rules`` from now on (a rules file edited and reloaded). A rule that stays keeps
        its series' history and open alerts; the state of a removed rule is dropped."""
        windows = {rule.name: rule.window for rule in rules}
        self._state = {
            (name, key): replace(state, values=deque(state.values, maxlen=windows[name] + 1))
            for (name, key), state in self._state.items()
            if name in windows
        }
        self.rules = rules

    def evaluate(self, signals: list[Signal], now: float) -> Evaluation:
        """Apply every rule to the signals of one interval."""
        result = Evaluation()
        for rule in self.rules:
            seen: set[str] = set()
            for signal in signals:
                if signal.name != rule.signal or any(dict(signal.labels).get(k) != v for k, v in rule.match.items()):
                    continue
                if rule.min_count and signal.count is not None and signal.count < rule.min_count:
                    continue  # too few observations: as if no value came (clear)
                seen.add(signal.key)
                state = self._state.setdefault((rule.name, signal.key), _SeriesState(deque(maxlen=rule.window + 1)))
                message = self._condition(rule, state, signal, now)
                state.values.append((now, signal.value))
                self._apply(rule, state, signal, message, now, result)
            # A series with no value this interval (no traffic) counts as clear.
            for (name, key), state in list(self._state.items()):
                if name == rule.name and key not in seen:
                    self._apply(rule, state, None, None, now, result, series=key)
        return result

    def raise_alert(
        self,
        rule: str,
        series: str,
        labels: dict[str, str],
        severity: str,
        message: str,
        value: float | None,
        now: float,
    ) -> Alert:
        """An alert from outside the rules (e.g. an automatic canary rollback)."""
        alert, new = self.store.open_alert(rule, series, labels, severity, message, value, self.webhooks, now)
        if new:
            inc("aip_alerts", rule=rule, severity=severity)
        return alert

    def _condition(self, rule: Rule, state: _SeriesState, signal: Signal, now: float) -> str | None:
        """The alert message when the rule's condition holds for this value, else None."""
        value = signal.value
        where = ", ".join(f"{k}={v}" for k, v in signal.labels) or "platform"
        if rule.kind == "threshold":
            assert rule.threshold is not None
            if rule.breached(value, rule.threshold):
                return f"{rule.signal} of {where} is {value:.4g} ({rule.op} {rule.threshold:g})"
            return None
        if rule.kind == "anomaly":
            state.ewma = value if state.ewma is None else EWMA_ALPHA * value + (1 - EWMA_ALPHA) * state.ewma
            past = [v for _, v in state.values][-rule.window :]
            if len(past) < rule.window // 2 or len(past) < 5:
                return None
            median = statistics.median(past)
            spread = MAD_SCALE * statistics.median(abs(v - median) for v in past)
            departure = state.ewma - median
            if rule.op == "<":
                departure = -departure
            band = rule.sensitivity * spread
            if departure > max(band, rule.min_delta):
                return (
                    f"{rule.signal} of {where} is anomalous: {state.ewma:.4g} smoothed against a usual "
                    f"{median:.4g} ± {band:.3g}"
                )
            return None
        # trend: early warning
        assert rule.threshold is not None
        points = [*list(state.values)[-(rule.window - 1) :], (now, value)]
        if len(points) < MIN_TREND_POINTS or rule.breached(value, rule.threshold):
            return None
        slope, intercept = _fit_line(points)
        projected = intercept + slope * (now + rule.horizon_s)
        heading = slope > 0 if rule.op == ">" else slope < 0
        if heading and rule.breached(projected, rule.threshold):
            eta = (rule.threshold - (intercept + slope * now)) / slope if slope else float("inf")
            return (
                f"{rule.signal} of {where} is {value:.4g} and rising toward {rule.threshold:g}: projected "
                f"{projected:.4g} in {rule.horizon_s:g} s (crossing in about {max(0.0, eta):.0f} s)"
            )
        return None

    def _apply(
        self,
        rule: Rule,
        state: _SeriesState,
        signal: Signal | None,
        message: str | None,
        now: float,
        result: Evaluation,
        series: str | None = None,
    ) -> None:
        key = series or (signal.key if signal else "")
        if message is not None and signal is not None:
            state.breaching, state.clear = state.breaching + 1, 0
            if state.breaching >= rule.for_evaluations:
                alert, new = self.store.open_alert(
                    rule.name, key, dict(signal.labels), rule.severity, message, signal.value, self.webhooks, now
                )
                if new:
                    inc("aip_alerts", rule=rule.name, severity=rule.severity)
                    result.fired.append(alert)
            return
        state.breaching, state.clear = 0, state.clear + 1
        if state.clear >= rule.resolve_after:
            resolved = self.store.resolve(rule.name, key, self.webhooks, now=now)
            if resolved is not None:
                result.resolved.append(resolved)


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of value over time."""
    times = [t for t, _ in points]
    values = [v for _, v in points]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    var = sum((t - mean_t) ** 2 for t in times)
    if var == 0:
        return 0.0, mean_v
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var
    return slope, mean_v - slope * mean_t


SignalSource = Callable[[], list[Signal]]
