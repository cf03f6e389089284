"""Alerts: what fired, when, and whether it resolved; the rules; one evaluation on demand."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query

from aiplatform.alerting.store import MAX_QUERY_LIMIT, alerts_cursor
from aiplatform.api.deps import PlatformDep

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


@router.get("")
def list_alerts(platform: PlatformDep, state: Optional[str] = None, rule: Optional[str] = None,
                since: Optional[float] = None, before: Optional[str] = Query(None, max_length=200),
                limit: int = Query(100, ge=1, le=MAX_QUERY_LIMIT)) -> dict[str, Any]:
    """Newest first; ``next_before`` (null on the last page) goes in ``before`` for the next."""
    alerts = platform.alerts.query(state=state, rule=rule, since=since, before=before, limit=limit)
    return {"alerts": [a.to_dict() for a in alerts], "firing": sum(1 for a in alerts if a.state == "firing"),
            "next_before": alerts_cursor(alerts) if len(alerts) == limit else None}


@router.get("/rules")
def list_rules(platform: PlatformDep) -> dict[str, Any]:
    return {"rules": platform.alerts.rules()}


@router.post("/rules/reload")
def reload_rules(platform: PlatformDep) -> dict[str, Any]:
    """Read the operator's rules file again, without a restart (400 naming the problem when it
    does not parse; the running rules then stay)."""
    return {"rules": platform.alerts.reload_rules()}


@router.get("/status")
def engine_status(platform: PlatformDep) -> dict[str, Any]:
    """Evaluations so far, the interval and the latest signals the rules saw."""
    return platform.alerts.status()


@router.post("/evaluate")
def evaluate_now(platform: PlatformDep) -> dict[str, Any]:
    """Scrape and evaluate at once instead of at the next interval."""
    return platform.alerts.evaluate_now()


@router.post("/{alert_id}/resolve")
def resolve_alert(alert_id: str, platform: PlatformDep) -> dict[str, Any]:
    """Mark an alert resolved by hand (it was dealt with); its webhooks hear of it."""
    return platform.alerts.resolve(alert_id).to_dict()


@router.get("/{alert_id}")
def get_alert(alert_id: str, platform: PlatformDep) -> dict[str, Any]:
    return {**platform.alerts.get(alert_id).to_dict(), "deliveries": platform.alerts.deliveries(alert_id)}
