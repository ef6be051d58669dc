"""Churn alerts: the work queue of the retention team, and its lifecycle transitions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime

from app.alerts import service as alerts
from app.alerts.schemas import (
    AcknowledgeRequest,
    AlertChange,
    AlertDetail,
    AlertPage,
    OwnerId,
    ResolveRequest,
    RiskBand,
)
from app.alerts.states import AlertCause, AlertStatus, Outcome
from app.http.deps import (
    AlertsReader,
    AlertsWriter,
    PseudonymizerDep,
    RequestIdDep,
    SessionDep,
    TenantDep,
)
from app.security.principal import Principal, Scope
from app.security.text import ID_PATTERN

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such alert", **PROBLEM}}
TRANSITION_ERRORS: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"description": "Not allowed from the alert's current status or owner", **PROBLEM},
    422: {"description": "Invalid body", **PROBLEM},
}
# Bounded by the column's range: a larger id cannot exist, and would overflow the driver (500).
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("", response_model=AlertPage)
def list_alerts(
    session: SessionDep,
    caller: AlertsReader,
    tenant: TenantDep,
    pseudonymizer: PseudonymizerDep,
    status: Annotated[AlertStatus | None, Query(description="Only this status.")] = None,
    outcome: Annotated[
        Outcome | None, Query(description="Only alerts resolved with this outcome.")
    ] = None,
    band: Annotated[RiskBand | None, Query(description="Only this latest risk band.")] = None,
    reason: Annotated[
        AlertCause | None,
        Query(description="Only churn alerts, or only the need alerts of one rule."),
    ] = None,
    owner: Annotated[
        OwnerId | None, Query(description="Only alerts this client (its id) owns.")
    ] = None,
    customer_id: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=ID_PATTERN)
    ] = None,
    opened_before: Annotated[
        AwareDatetime | None, Query(description="Opened before this instant (ISO 8601, zoned).")
    ] = None,
    older_than_hours: Annotated[
        float | None, Query(ge=0, le=876_000, description="Opened at least this many hours ago.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AlertPage:
    """Alerts matching every filter given, oldest opened first, one page at a time."""
    return alerts.list_alerts(
        session,
        status=status,
        outcome=outcome,
        risk_band=band,
        reason=reason,
        owner=owner,
        # Stored ids are pseudonyms when a secret is set: the caller's tenant's one.
        customer_id=customer_id
        if customer_id is None or pseudonymizer is None
        else pseudonymizer.pseudonym(customer_id, tenant=caller.tenant),
        opened_before=opened_before,
        older_than_hours=older_than_hours,
        limit=limit,
        offset=offset,
        tenant=tenant,
    )


@router.get("/{alert_id}", response_model=AlertDetail, responses=NOT_FOUND)
def get_alert(
    session: SessionDep, _: AlertsReader, tenant: TenantDep, alert_id: AlertId
) -> AlertDetail:
    """One alert with its reasons, recommended actions and full history."""
    return alerts.get_alert(session, alert_id=alert_id, tenant=tenant)


def visible_to(caller: Principal, alert: AlertDetail) -> AlertDetail | AlertChange:
    """The whole alert for a caller that may read alerts; what changed for the others."""
    if caller.allows(Scope.ALERTS_READ):
        return alert
    return AlertChange(
        id=alert.id, status=alert.status, owner=alert.owner, updated_at=alert.updated_at
    )


TRANSITION_DESCRIPTION = (
    "The caller (the authenticated client) acts: it becomes the owner, and the body's 'by' is "
    "ignored. The answer is the whole alert with the alerts:read scope, else only what changed."
)


@router.post(
    "/{alert_id}/acknowledge",
    response_model=AlertDetail | AlertChange,
    responses=TRANSITION_ERRORS,
    description=TRANSITION_DESCRIPTION,
)
def acknowledge_alert(
    session: SessionDep,
    caller: AlertsWriter,
    tenant: TenantDep,
    request_id: RequestIdDep,
    alert_id: AlertId,
    body: AcknowledgeRequest,
) -> AlertDetail | AlertChange:
    """Take ownership of an open alert (the first client to acknowledge owns it)."""
    alert = alerts.acknowledge_alert(
        session,
        alert_id=alert_id,
        request=body,
        actor=caller.client_id,
        request_id=request_id,
        tenant=tenant,
    )
    return visible_to(caller, alert)


@router.post(
    "/{alert_id}/resolve",
    response_model=AlertDetail | AlertChange,
    responses=TRANSITION_ERRORS,
    description=TRANSITION_DESCRIPTION,
)
def resolve_alert(
    session: SessionDep,
    caller: AlertsWriter,
    tenant: TenantDep,
    request_id: RequestIdDep,
    alert_id: AlertId,
    body: ResolveRequest,
) -> AlertDetail | AlertChange:
    """Close an acknowledged alert with its outcome; only its owner may."""
    alert = alerts.resolve_alert(
        session,
        alert_id=alert_id,
        request=body,
        actor=caller.client_id,
        request_id=request_id,
        tenant=tenant,
    )
    return visible_to(caller, alert)
