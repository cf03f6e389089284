"""Alerts: what fired, when, and whether it resolved; the rules; one evaluation on demand.

Every route answers of the request's project: its alerts (an alert on a model is the model's
project's; one on no model, the queue's or the cluster's, is ``default``'s, the operator's), the
signals of its series, and the rules that apply to its models (the operator's rules are
platform-wide; one that names a model in ``match`` shows only in that model's project). Another
project's alert is a 404 worded as for one that does not exist."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from aiplatform.alerting.actor import AlertClient
from aiplatform.alerting.store import MAX_QUERY_LIMIT, Alert, alerts_cursor
from aiplatform.api.deps import AlertsDep
from aiplatform.api.schemas.alerts import AlertDetail, AlertList, AlertPublic, EngineStatus, Evaluation, Rules
from aiplatform.api.scope import ModelScope, ModelScopeDep
from aiplatform.errors import NotFound

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


def owned_alert(engine: AlertClient, alert_id: str, scope: ModelScope) -> Alert:
    """The alert, when it is the project's; another project's is not found."""
    alert = engine.get(alert_id)
    if alert.project != scope.project:
        raise NotFound(f"Alert {alert_id!r} not found")
    return alert


def rules_of(rules: list[dict[str, Any]], scope: ModelScope) -> list[dict[str, Any]]:
    """The rules that apply to the project's series: those naming no model, and those naming one of its own."""
    return [r for r in rules if "model" not in (r.get("match") or {}) or scope.owns(r["match"]["model"])]


@router.get("", response_model=AlertList)
def list_alerts(
    engine: AlertsDep,
    scope: ModelScopeDep,
    state: str | None = None,
    rule: str | None = None,
    since: float | None = None,
    before: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=MAX_QUERY_LIMIT),
) -> dict[str, Any]:
    """Newest first; ``next_before`` (null on the last page) goes in ``before`` for the next."""
    alerts = engine.query(state=state, rule=rule, since=since, before=before, limit=limit, project=scope.project)
    return {
        "alerts": [a.to_dict() for a in alerts],
        "firing": sum(1 for a in alerts if a.state == "firing"),
        "next_before": alerts_cursor(alerts) if len(alerts) == limit else None,
    }


@router.get("/rules", response_model=Rules)
def list_rules(engine: AlertsDep, scope: ModelScopeDep) -> dict[str, Any]:
    return {"rules": rules_of(engine.rules(), scope)}


@router.post("/rules/reload", response_model=Rules)
def reload_rules(engine: AlertsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """Read the operator's rules file again, without a restart (400 naming the problem when it
    does not parse; the running rules then stay)."""
    return {"rules": rules_of(engine.reload_rules(), scope)}


@router.get("/status", response_model=EngineStatus)
def engine_status(engine: AlertsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """Evaluations so far, the interval and the latest signals the rules saw (the project's series)."""
    return engine.status(project=scope.project)


@router.post("/evaluate", response_model=Evaluation)
def evaluate_now(engine: AlertsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """Scrape and evaluate at once instead of at the next interval (the answer tells of the
    project's series)."""
    return engine.evaluate_now(project=scope.project)


@router.post("/{alert_id}/resolve", response_model=AlertPublic)
def resolve_alert(alert_id: str, engine: AlertsDep, scope: ModelScopeDep) -> dict[str, Any]:
    """Mark an alert resolved by hand (it was dealt with); its webhooks hear of it."""
    owned_alert(engine, alert_id, scope)
    return engine.resolve(alert_id).to_dict()


@router.get("/{alert_id}", response_model=AlertDetail)
def get_alert(alert_id: str, engine: AlertsDep, scope: ModelScopeDep) -> dict[str, Any]:
    return {**owned_alert(engine, alert_id, scope).to_dict(), "deliveries": engine.deliveries(alert_id)}
