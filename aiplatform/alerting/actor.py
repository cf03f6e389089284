"""The alert engine as a detached, head-pinned Ray actor, and the client every process uses.

Every ``alert_interval_s`` it scrapes the platform's metrics from each node's Ray metrics agent,
turns the interval into signals, keeps them (``signals.sqlite``, bounded), applies the rules, checks canaries against production (rolling
back a bad one), and sends due webhook deliveries. On failure: Ray restarts it
(``max_restarts=-1``); the alerts and the webhook outbox are in ``alerts.sqlite``, so nothing
acknowledged is lost and no open alert is opened twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import ray

from aiplatform.alerting.canary import CanaryGuard
from aiplatform.alerting.engine import AlertEngine
from aiplatform.alerting.history import SignalHistory
from aiplatform.alerting.notify import WebhookNotifier
from aiplatform.alerting.rules import Rule, default_rules, load_rules_file
from aiplatform.alerting.store import Alert, AlertStore
from aiplatform.monitoring.metrics import set_gauge
from aiplatform.monitoring.scrape import Snapshot, scrape
from aiplatform.monitoring.signals import Signal, compute_signals, drift_signals, quality_signals
from aiplatform.registry import ModelProjects
from aiplatform.runtime import ActorProxy, head_actor
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
ALERT_ACTOR_NAME = "alert-engine"
CANARY_RULE = "canary-rollback"


def rules_from_settings(settings: Settings) -> list[Rule]:
    if settings.alert_rules_file is not None:
        return load_rules_file(settings.alert_rules_file)
    return default_rules(
        latency_p99_s=settings.alert_latency_p99_s,
        error_rate=settings.alert_error_rate,
        queue_wait_s=settings.alert_queue_wait_s,
        drift_psi=settings.alert_drift_psi,
        quality_accuracy=settings.alert_quality_accuracy,
        quality_min_labeled=settings.alert_quality_min_labeled,
    )


def metrics_targets() -> list[str]:
    """Every live node's metrics agent (where the platform's metrics are exported)."""
    return [
        f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
        for node in ray.nodes()
        if node.get("Alive") or node.get("alive")
    ]


class AlertAPI(Protocol):
    """What callers may ask of the alert engine: the actor through a client (or an AlertActor in process)."""

    def evaluate_now(self, project: str | None = None) -> dict[str, Any]: ...

    def record_drift(self, model: str, scores: dict[str, float]) -> None: ...

    def query(self, **filters: Any) -> list[Alert]: ...

    def get(self, alert_id: str) -> Alert: ...

    def rules(self) -> list[dict[str, Any]]: ...

    def reload_rules(self) -> list[dict[str, Any]]: ...

    def resolve(self, alert_id: str) -> Alert: ...

    def deliveries(self, alert_id: str | None = None) -> list[dict[str, Any]]: ...

    def status(self, project: str | None = None) -> dict[str, Any]: ...

    def history(
        self, names: list[str], since: float, until: float, match: dict[str, str] | None = None
    ) -> list[dict[str, Any]]: ...


class AlertActor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = AlertStore(
            settings.resolved_state_dir / "alerts.sqlite",
            ModelProjects(settings.resolved_state_dir / "registry.sqlite").project_of,
        )
        self.signal_history = SignalHistory(settings.resolved_state_dir / "signals.sqlite")
        self.engine = AlertEngine(rules_from_settings(settings), self.store, settings.webhook_urls)
        self.notifier = WebhookNotifier(self.store)
        self._canaries: CanaryGuard | None = None
        self._previous: Snapshot | None = None
        self._lock = threading.Lock()
        self.last_signals: list[Signal] = []
        self.evaluations = 0
        self._drift: dict[tuple[str, str], float] = {}
        self._quality: list[Signal] = []
        self._results: Any = None
        self._quality_exported: set[tuple[str, str]] = set()
        threading.Thread(target=self._loop, name="alert-engine", daemon=True).start()

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def evaluate_now(self, project: str | None = None) -> dict[str, Any]:
        """One evaluation at once (the loop does the same every interval); the answer tells of
        ``project``'s series only, when given (the evaluation itself covers every series)."""
        with self._lock:
            snapshot = scrape(metrics_targets())
            signals = [
                *compute_signals(self._previous, snapshot),
                *drift_signals(self._drift),
                *self._quality_signals(snapshot.at),
            ]
            self._previous = snapshot
            self.signal_history.record(snapshot.at, signals)
            result = self.engine.evaluate(signals, snapshot.at)
            rolled_back = self._check_canaries(signals, snapshot.at)
            self.notifier.deliver_due()
            self.last_signals = signals
            self.evaluations += 1
        return {
            "at": snapshot.at,
            "signals": self._signals_of(signals, project),
            "fired": [a.to_dict() for a in result.fired if project in (None, a.project)],
            "resolved": [a.to_dict() for a in result.resolved if project in (None, a.project)],
            "rolled_back": [
                r for r in rolled_back if project in (None, self.store.series_project({"model": r["model"]}))
            ],
        }

    def _signals_of(self, signals: list[Signal], project: str | None) -> dict[str, float]:
        """The signals by key, of ``project``'s series only when given."""
        return {
            s.key: s.value for s in signals if project is None or self.store.series_project(dict(s.labels)) == project
        }

    def record_drift(self, model: str, scores: dict[str, float]) -> None:
        """The PSI per feature of a model's latest drift analysis (exported as ``aip_drift_score``)."""
        with self._lock:
            for feature, score in scores.items():
                self._drift[(model, feature)] = float(score)
                set_gauge("aip_drift_score", float(score), model=model, feature=feature)

    def query(self, **filters: Any) -> list[Alert]:
        return self.store.query(**filters)

    def _quality_signals(self, now: float) -> list[Signal]:
        """Accuracy, macro-F1 and labeled count per model version over the quality window, from
        the result store, exported as gauges (``aip_quality_*``). The store out of reach: the
        last figures stand, so a hiccup neither fires nor resolves a quality alert."""
        from aiplatform.results import ResultClient

        try:
            if self._results is None:
                self._results = ResultClient.connect(self.settings)
            figures = self._results.quality(since=now - self.settings.quality_window_s)
        except Exception:
            logger.warning("the result store did not answer; quality signals keep their last values", exc_info=True)
            return self._quality
        exported = set()
        for q in figures:
            tags = {"model": q.model, "version": q.version}
            set_gauge("aip_quality_accuracy", q.accuracy, **tags)
            set_gauge("aip_quality_macro_f1", q.macro_f1, **tags)
            set_gauge("aip_labeled_predictions", q.labeled, **tags)
            exported.add((q.model, str(q.version)))
        for model, version in self._quality_exported - exported:  # out of the window: none labeled now
            set_gauge("aip_labeled_predictions", 0, model=model, version=version)
        self._quality_exported |= exported
        self._quality = quality_signals(q.to_dict() for q in figures)
        return self._quality

    def get(self, alert_id: str) -> Alert:
        return self.store.get(alert_id)

    def rules(self) -> list[dict[str, Any]]:
        return [rule.model_dump() for rule in self.engine.rules]

    def reload_rules(self) -> list[dict[str, Any]]:
        """Read the rules again (the operator edited ``AIP_ALERT_RULES_FILE``); a file that does
        not parse is refused and the running rules stay."""
        rules = rules_from_settings(self.settings)
        with self._lock:
            self.engine.replace_rules(rules)
        return self.rules()

    def resolve(self, alert_id: str) -> Alert:
        with self._lock:
            return self.store.resolve_by_id(alert_id, self.settings.webhook_urls, message=None)

    def deliveries(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.deliveries(alert_id)

    def status(self, project: str | None = None) -> dict[str, Any]:
        """Evaluations so far and the latest signals (``project``'s series only, when given)."""
        return {
            "evaluations": self.evaluations,
            "interval_s": self.settings.alert_interval_s,
            "signals": self._signals_of(self.last_signals, project),
            "webhooks": len(self.settings.alert_webhooks),
        }

    def history(
        self, names: list[str], since: float, until: float, match: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The signals ``names`` as recorded each interval (``alerting.history``)."""
        return self.signal_history.series(names, since, until, match)

    def _check_canaries(self, signals: list[Signal], now: float) -> list[dict[str, Any]]:
        if self._canaries is None:
            from aiplatform.registry import RegistryClient

            self._canaries = CanaryGuard(RegistryClient.connect(self.settings))
        rolled_back = []
        for model, version, reason in self._canaries.check(signals):
            self.engine.raise_alert(
                CANARY_RULE,
                f"{CANARY_RULE}{{model={model},version={version}}}",
                {"model": model, "version": str(version)},
                "critical",
                f"Rolled back the canary of {model}: {reason}; all traffic follows production",
                None,
                now,
            )
            rolled_back.append({"model": model, "version": version, "reason": reason})
        return rolled_back

    def _loop(self) -> None:
        while True:
            time.sleep(self.settings.alert_interval_s)
            try:
                self.evaluate_now()
            except Exception:
                logger.exception("alert evaluation failed; trying again next interval")


class AlertClient(ActorProxy, AlertAPI, protocol=AlertAPI):
    """The alert actor, called like the engine (see ``ActorProxy``)."""

    @classmethod
    def connect(cls, settings: Settings) -> AlertClient:
        return cls(head_actor(AlertActor, ALERT_ACTOR_NAME, settings))
