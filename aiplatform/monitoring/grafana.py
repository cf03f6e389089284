"""Grafana provisioning: the Prometheus data source, a folder, the dashboards and alert rules,
made idempotently through Grafana's HTTP API with ``grafana-client``.

Each object is read first and written only when missing or different, so a second run changes
nothing. Grafana's errors become platform errors that say what to fix: a refused token (401/403)
or a conflicting object (409) is not retried; a server error (5xx) or timeout is retried with
backoff, then reported as unavailable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiplatform.errors import Conflict, InvalidArgument, NotFound, Unavailable
from aiplatform.monitoring.dashboards import (
    DATASOURCE_UID,
    FOLDER_TITLE,
    FOLDER_UID,
    all_dashboards,
)
from aiplatform.monitoring.metrics import METRICS

RULE_GROUP = "aiplatform"
RETRIES = 3
RETRY_BASE_DELAY_S = 0.5
T = TypeVar("T")


@dataclass
class ProvisionResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def alert_rules(
    *,
    latency_p99_s: float,
    error_rate: float,
    queue_wait_s: float,
    drift_psi: float,
    quality_accuracy: float = 0.8,
    quality_min_labeled: int = 50,
) -> list[dict[str, Any]]:
    """Grafana alert rules (the platform's threshold rules, for operators who alert in Grafana),
    built with Grafana's SDK."""
    from grafana_foundation_sdk.builders import alerting, expr, prometheus
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.alerting import RelativeTimeRange

    requests = METRICS["aip_requests"].prometheus_name
    latency = METRICS["aip_request_latency_seconds"].prometheus_name
    wait = METRICS["aip_task_wait_seconds"].prometheus_name
    drift = METRICS["aip_drift_score"].prometheus_name
    accuracy = METRICS["aip_quality_accuracy"].prometheus_name
    labeled = METRICS["aip_labeled_predictions"].prometheus_name
    specs = [
        (
            "aip-latency-p99-high",
            "p99 latency of a model version is too high",
            "critical",
            latency_p99_s,
            f"histogram_quantile(0.99, sum by (le, model, version) (rate({latency}_bucket[5m])))",
        ),
        (
            "aip-error-rate-high",
            "too many server errors or rejections",
            "critical",
            error_rate,
            f'sum by (model) (rate({requests}{{outcome=~"server_error|rejected"}}[5m])) / '
            f"clamp_min(sum by (model) (rate({requests}[5m])), 1e-9)",
        ),
        (
            "aip-queue-wait-high",
            "training tasks wait too long to start",
            "warning",
            queue_wait_s,
            f"histogram_quantile(0.9, sum by (le) (rate({wait}_bucket[1h])))",
        ),
        (
            "aip-drift-significant",
            "live inputs differ from the training data (PSI)",
            "warning",
            drift_psi,
            f"max by (model, feature) ({drift})",
        ),
        (
            "aip-quality-low",
            "accuracy of a version's labeled predictions in the quality window is too low",
            "warning",
            quality_accuracy,
            f"max by (model, version) ({accuracy}) and on (model, version) "
            f"(max by (model, version) ({labeled}) >= {quality_min_labeled})",
        ),
    ]
    below = {"aip-quality-low"}
    """Rules that fire below their threshold (the others above it)."""
    rules = []
    for uid, summary, severity, threshold, promql in specs:
        rule = (
            alerting.Rule(summary)
            .uid(uid)
            .folder_uid(FOLDER_UID)
            .rule_group(RULE_GROUP)
            .condition("C")
            .for_val("2m")
            .no_data_state("OK")
            .exec_err_state("Error")
            .org_id(1)
            .labels({"severity": severity, "platform": "aiplatform"})
            .annotations({"summary": summary})
            .with_query(
                alerting.Query("A")
                .datasource_uid(DATASOURCE_UID)
                .relative_time_range(RelativeTimeRange(from_val=600, to=0))
                .model(prometheus.Dataquery().expr(promql).instant().ref_id("A"))
            )
            .with_query(
                alerting.Query("C")
                .datasource_uid("__expr__")
                .model(
                    expr.TypeThreshold()
                    .expression("A")
                    .ref_id("C")
                    .conditions(
                        [
                            expr.ExprTypeThresholdConditions().evaluator(
                                expr.ExprTypeThresholdConditionsEvaluator()
                                .type("lt" if uid in below else "gt")
                                .params([threshold])
                            )
                        ]
                    )
                )
            )
        )
        rules.append(json.loads(json.dumps(rule.build(), cls=JSONEncoder)))
    return rules


def datasource(prometheus_url: str) -> dict[str, Any]:
    return {
        "uid": DATASOURCE_UID,
        "name": "AI Platform Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": False,
        "jsonData": {"timeInterval": "5s", "httpMethod": "POST"},
    }


class GrafanaProvisioner:
    """Provisions one Grafana. ``api`` is a ``grafana_client.GrafanaApi``."""

    def __init__(self, api: Any, url: str, *, retries: int = RETRIES, base_delay_s: float = RETRY_BASE_DELAY_S) -> None:
        self.api = api
        self.url = url
        self.retries = retries
        self.base_delay_s = base_delay_s

    @classmethod
    def connect(cls, url: str, token: str, timeout_s: float = 10.0) -> GrafanaProvisioner:
        from grafana_client import GrafanaApi

        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"Grafana URL {url!r} must start with http:// or https://")
        if not token:
            raise InvalidArgument("Give a Grafana service-account token (--token)")
        return cls(GrafanaApi.from_url(url, credential=token, timeout=timeout_s), url)

    def provision(self, *, prometheus_url: str, rules: list[dict[str, Any]]) -> ProvisionResult:
        result = ProvisionResult()
        self._datasource(datasource(prometheus_url), result)
        self._folder(result)
        for uid, model in all_dashboards().items():
            self._dashboard(uid, model, result)
        for rule in rules:
            self._alert_rule(rule, result)
        return result

    def _datasource(self, desired: dict[str, Any], result: ProvisionResult) -> None:
        what = f"data source {desired['uid']}"
        existing = self._get(lambda: self.api.datasource.get_datasource_by_uid(desired["uid"]))
        if existing is None:
            self._call(lambda: self.api.datasource.create_datasource(desired), what)
            result.created.append(what)
        elif any(existing.get(k) != v for k, v in desired.items() if k != "jsonData") or any(
            (existing.get("jsonData") or {}).get(k) != v for k, v in desired["jsonData"].items()
        ):
            self._call(lambda: self.api.datasource.update_datasource_by_uid(desired["uid"], desired), what)
            result.updated.append(what)
        else:
            result.unchanged.append(what)

    def _folder(self, result: ProvisionResult) -> None:
        what = f"folder {FOLDER_UID}"
        existing = self._get(lambda: self.api.folder.get_folder(FOLDER_UID))
        if existing is None:
            self._call(lambda: self.api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID), what)
            result.created.append(what)
        elif existing.get("title") != FOLDER_TITLE:
            self._call(lambda: self.api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True), what)
            result.updated.append(what)
        else:
            result.unchanged.append(what)

    def _dashboard(self, uid: str, model: dict[str, Any], result: ProvisionResult) -> None:
        what = f"dashboard {uid}"
        existing = self._get(lambda: self.api.dashboard.get_dashboard(uid))
        body = {
            "dashboard": {**model, "id": None},
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "aip monitoring provision",
        }
        if existing is None:
            self._call(lambda: self.api.dashboard.update_dashboard(body), what)
            result.created.append(what)
            return
        current = {k: v for k, v in (existing.get("dashboard") or {}).items() if k not in ("id", "version")}
        wanted = {k: v for k, v in model.items() if k not in ("id", "version")}
        if current != wanted or (existing.get("meta") or {}).get("folderUid") != FOLDER_UID:
            self._call(lambda: self.api.dashboard.update_dashboard(body), what)
            result.updated.append(what)
        else:
            result.unchanged.append(what)

    def _alert_rule(self, rule: dict[str, Any], result: ProvisionResult) -> None:
        what = f"alert rule {rule['uid']}"
        existing = self._get(lambda: self.api.alertingprovisioning.get_alertrule(rule["uid"]))
        if existing is None:
            self._call(lambda: self.api.alertingprovisioning.create_alertrule(rule), what)
            result.created.append(what)
        elif any(existing.get(k) != v for k, v in rule.items()):
            self._call(lambda: self.api.alertingprovisioning.update_alertrule(rule["uid"], rule), what)
            result.updated.append(what)
        else:
            result.unchanged.append(what)

    def _get(self, read: Callable[[], T]) -> T | None:
        """The object, or None when Grafana answers 404."""
        try:
            return self._call(read, "read")
        except NotFound:
            return None

    def _call(self, request: Callable[[], T], what: str) -> T:
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaServerError,
            GrafanaTimeoutError,
        )

        for attempt in range(1, self.retries + 1):
            try:
                return request()
            except (GrafanaServerError, GrafanaTimeoutError) as exc:
                if attempt == self.retries:
                    raise Unavailable(f"Grafana at {self.url} failed {what} {self.retries} times: {exc}") from exc
                time.sleep(self.base_delay_s * 2 ** (attempt - 1))
            except GrafanaClientError as exc:
                status = getattr(exc, "status_code", None)
                if status in (401, 403):
                    raise InvalidArgument(
                        f"Grafana at {self.url} refused the token (HTTP {status}) for {what}: "
                        "give a service-account token with the Editor or Admin role"
                    ) from exc
                if status == 404:
                    raise NotFound(f"Grafana at {self.url} has no such object ({what})") from exc
                if status == 409:
                    raise Conflict(
                        f"Grafana at {self.url} refused {what}: it conflicts with an existing object ({exc})"
                    ) from exc
                raise InvalidArgument(f"Grafana at {self.url} refused {what} (HTTP {status}): {exc}") from exc
            except Exception as exc:  # connection refused, DNS...
                if attempt == self.retries:
                    raise Unavailable(f"Grafana at {self.url} cannot be reached: {exc}") from exc
                time.sleep(self.base_delay_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")
