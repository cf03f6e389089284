"""Automatic canary rollback: a canary version whose error rate or latency is anomalous against
production's, over the same interval, gets its traffic share removed, and an alert says so."""

from __future__ import annotations

from typing import Any

from aiplatform.monitoring.signals import Signal

ERROR_RATE_MARGIN = 0.05
LATENCY_RATIO = 2.0
LATENCY_MARGIN_S = 0.05
CONSECUTIVE = 2


def canary_problem(signals: list[Signal], model: str, production: int, canary: int) -> str | None:
    """Why the canary is worse than production in these signals, or None."""
    values: dict[tuple[str, str], float] = {}
    for signal in signals:
        labels = dict(signal.labels)
        if labels.get("model") == model:
            values[(signal.name, labels.get("version", ""))] = signal.value
    prod_errors, canary_errors = values.get(("error_rate", str(production))), values.get(("error_rate", str(canary)))
    if canary_errors is not None and canary_errors > (prod_errors or 0.0) + ERROR_RATE_MARGIN:
        return (
            f"canary v{canary} error rate {canary_errors:.1%} against production v{production}'s "
            f"{(prod_errors or 0.0):.1%}"
        )
    prod_p99, canary_p99 = values.get(("latency_p99", str(production))), values.get(("latency_p99", str(canary)))
    if (
        prod_p99 is not None
        and canary_p99 is not None
        and canary_p99 > max(LATENCY_RATIO * prod_p99, prod_p99 + LATENCY_MARGIN_S)
    ):
        return f"canary v{canary} p99 latency {canary_p99 * 1000:.0f} ms against production v{production}'s {prod_p99 * 1000:.0f} ms"
    return None


class CanaryGuard:
    """Checks every model with a canary split on each evaluation; rolls back after
    ``CONSECUTIVE`` bad intervals in a row."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._strikes: dict[tuple[str, int], int] = {}

    def check(self, signals: list[Signal]) -> list[tuple[str, int, str]]:
        """Rolled-back canaries as (model, version, reason)."""
        rolled_back = []
        for entry in self.registry.list_models():
            name = entry["name"]
            weights = self.registry.get_traffic(name)
            production = self.registry.aliases(name).get("production")
            if not weights or production is None:
                continue
            for version, weight in weights.items():
                if int(version) == production or weight <= 0:
                    continue
                reason = canary_problem(signals, name, production, int(version))
                key = (name, int(version))
                self._strikes[key] = self._strikes.get(key, 0) + 1 if reason else 0
                if reason and self._strikes[key] >= CONSECUTIVE:
                    self.registry.set_traffic(name, {})
                    self._strikes.pop(key, None)
                    rolled_back.append((name, int(version), reason))
        return rolled_back
