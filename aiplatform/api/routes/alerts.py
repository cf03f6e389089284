"""Alerts: what fired, when, and whether it resolved; the rules; one evaluation on demand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from aiplatform.alerting.store import MAX_QUERY_LIMIT, alerts_cursor
from aiplatform.api.deps import AlertsDep
from aiplatform.api.schemas.alerts import AlertDetail, AlertList, AlertPublic, EngineStatus, Evaluation, Rules

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


@router.get("", response_model=AlertList)
def list_alerts(
    engine: AlertsDep,
    state: str | None = None,
    rule: str | None = None,
    since: float | None = None,
    before: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=MAX_QUERY_LIMIT),
) -> dict[str, Any]:
    """Newest first; ``next_before`` (null on the last page) goes in ``before`` for the next."""
    alerts = engine.query(state=state, rule=rule, since=since, before=before, limit=limit)
    return {
        "alerts": [a.to_dict() for a in alerts],
        "firing": sum(1 for a in alerts if a.state == "firing"),
        "next_before": alerts_cursor(alerts) if len(alerts) == limit else None,
    }


@router.get("/rules", response_model=Rules)
def list_rules(engine: AlertsDep) -> dict[str, Any]:
    return {"rules": engine.rules()}


@router.post("/rules/reload", response_model=Rules)
def reload_rules(engine: AlertsDep) -> dict[str, Any]:
    """Read the operator's rules file again, without a restart (400 naming the problem when it
    does not parse; the running rules then stay)."""
    return {"rules": engine.reload_rules()}


@router.get("/status", response_model=EngineStatus)
def engine_status(engine: AlertsDep) -> dict[str, Any]:
    """Evaluations so far, the interval and the latest signals the rules saw."""
    return engine.status()


@router.post("/evaluate", response_model=Evaluation)
def evaluate_now(engine: AlertsDep) -> dict[str, Any]:
    """Scrape and evaluate at once instead of at the next interval."""
    return engine.evaluate_now()


@router.post("/{alert_id}/resolve", response_model=AlertPublic)
def resolve_alert(alert_id: str, engine: AlertsDep) -> dict[str, Any]:
    """Mark an alert resolved by hand (it was dealt with); its webhooks hear of it."""
    return engine.resolve(alert_id).to_dict()


@router.get("/{alert_id}", response_model=AlertDetail)
def get_alert(alert_id: str, engine: AlertsDep) -> dict[str, Any]:
    return {**engine.get(alert_id).to_dict(), "deliveries": engine.deliveries(alert_id)}
