"""The customer 360: one customer's record assembled from the trail's aggregates, the
lifecycle stages, the stored assessments, and the alerts and casework domains' services."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.alerts.schemas import AlertSummary
from app.alerts.service import list_alerts
from app.alerts.states import AlertStatus
from app.casework.service import customer_complaints
from app.config import Settings
from app.customers.features import (
    INDEX_INPUTS,
    OPENED,
    Feature,
    IndexWeights,
    Kind,
    current_values,
    derive_features,
    month_label,
)
from app.customers.record_schemas import (
    CustomerView,
    Holding,
    IndicesView,
    LatestAssessment,
    StageChange,
    StageView,
    TierView,
    Value,
)
from app.customers.repository import latest_month, read_months
from app.customers.service import CustomerNotFound, customer_events, stored_forms
from app.customers.stages import read_stage
from app.rewards import service as rewards
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope, list_scores
from app.security.pseudonyms import Pseudonymizer
from app.value.policy import TierPolicy
from app.value.service import customer_tier

if TYPE_CHECKING:
    from app.scoring.tables import Score

# Alerts listed per call of the alerts service (a customer has at most one active alert).
ALERTS_LISTED = 50


def customer_view(
    session: Session,
    *,
    customer_id: str,
    caller_tenant: str | None,
    tenant: TenantScope | None,
    pseudonymizer: Pseudonymizer | None,
    events: int,
    index_weights: IndexWeights,
    tier_policy: TierPolicy,
    now: datetime,
) -> CustomerView:
    """One customer's 360 for the caller's tenant; 404 when it has no record there."""
    forms = stored_forms(customer_id, caller_tenant=caller_tenant, pseudonymizer=pseudonymizer)
    stage_row, moves = read_stage(session.connection(), tenant=caller_tenant, customer_ids=forms)
    last = latest_month(session, tenant=caller_tenant, customer_ids=forms)
    if stage_row is None and last is None:
        raise CustomerNotFound(f"no record of customer {customer_id!r}")
    profile: dict[str, Value] = {}
    holdings: list[Holding] = []
    indices: IndicesView | None = None
    if last is not None:
        counts, latest = read_months(session, tenant=caller_tenant, customer_ids=forms, until=last)
        indices = _indices(
            last, derive_features(last, counts, latest, index_weights), index_weights
        )
        current = current_values(latest, last)
        for (kind, key), value in sorted(current.items()):
            if kind == Kind.PROFILE:
                profile[key] = value.number if value.number is not None else value.text
            elif kind == Kind.PRODUCT and value.text == OPENED:
                balance = current.get((Kind.BALANCE, key))
                holdings.append(
                    Holding(
                        product=key,
                        opened_at=value.occurred_at,
                        balance=balance.number if balance is not None else None,
                        balance_at=balance.occurred_at if balance is not None else None,
                    )
                )
    latest_scores = _latest_scores(session, forms, tenant)
    tier = latest_scores.get(Task.TIER.value)
    recommendation = latest_scores.get(Task.RECOMMENDATION.value)
    # events=0 (the console's page, which pages the trail itself): nothing to read.
    latest_events = (
        customer_events(
            session,
            customer_id=customer_id,
            event_type=None,
            limit=events,
            offset=0,
            tenant=tenant,
            caller_tenant=caller_tenant,
            pseudonymizer=pseudonymizer,
        ).items
        if events > 0
        else []
    )
    return CustomerView(
        customer_id=customer_id,
        month=month_label(last) if last is not None else None,
        profile=profile,
        stage=None
        if stage_row is None
        else StageView(
            current=stage_row.stage,
            since=stage_row.since,
            at_risk=stage_row.at_risk,
            history=[
                StageChange(
                    from_stage=m.from_stage,
                    to_stage=m.to_stage,
                    at=m.at,
                    cause=m.cause,
                    source=m.source,
                    recorded_at=m.recorded_at,
                )
                for m in moves
            ],
        ),
        holdings=holdings,
        tier=None
        if tier is None
        else TierView(
            tier=tier.outputs.get("tier"),
            next_tier_gap=tier.outputs.get("next_tier_gap"),
            model_version=tier.model_version,
            assessed_at=tier.created_at,
        ),
        assessments=[_assessment(score) for score in latest_scores.values()],
        recommendations=list(recommendation.outputs.get("products") or [])
        if recommendation is not None
        else [],
        open_alerts=_open_alerts(session, forms, tenant),
        open_complaints=customer_complaints(
            session, tenant=caller_tenant, customer_ids=[customer_id, *forms]
        ),
        events=latest_events[:events],
        indices=indices,
        tier_of_record=None
        if last is None
        else customer_tier(
            session,
            policy=tier_policy,
            customer_id=customer_id,
            caller_tenant=caller_tenant,
            pseudonymizer=pseudonymizer,
        ),
        points=rewards.held(
            session,
            tenant=caller_tenant,
            customer_id=rewards.stored_id(
                customer_id, tenant=caller_tenant, pseudonymizer=pseudonymizer
            ),
            now=now,
        ),
    )


def index_weights(settings: Settings) -> IndexWeights:
    """The configured weights of the satisfaction and loyalty indices."""
    configured = settings.index_weights
    return IndexWeights(
        satisfaction=configured.satisfaction.model_dump(), loyalty=configured.loyalty.model_dump()
    )


def _indices(month: int, features: dict[str, Feature], weights: IndexWeights) -> IndicesView:
    inputs: dict[str, float | int | None] = {}
    for name in INDEX_INPUTS:
        value = features[name]
        inputs[name] = value if isinstance(value, float | int) or value is None else None
    satisfaction, loyalty = features["satisfaction_index"], features["loyalty_index"]
    assert isinstance(satisfaction, float) and isinstance(loyalty, float)
    return IndicesView(
        month=month_label(month),
        satisfaction=satisfaction,
        loyalty=loyalty,
        weights={"satisfaction": dict(weights.satisfaction), "loyalty": dict(weights.loyalty)},
        inputs=inputs,
    )


def _latest_scores(
    session: Session, forms: list[str], tenant: TenantScope | None
) -> dict[str, Score]:
    """Each task's latest stored score of the customer."""
    found: dict[str, Score] = {}
    for task in Task:
        rows, _ = list_scores(session, customer_id=forms, task=task.value, limit=1, tenant=tenant)
        if rows:
            found[task.value] = rows[0]
    return found


def _assessment(score: Score) -> LatestAssessment:
    return LatestAssessment(
        task=score.task,
        model_version=score.model_version,
        stage=score.stage,
        probability=score.probability,
        band=score.band,
        outputs=score.outputs,
        reasons=score.reasons,
        source=score.source,
        assessed_at=score.created_at,
    )


def _open_alerts(
    session: Session, forms: list[str], tenant: TenantScope | None
) -> list[AlertSummary]:
    """The customer's active alerts, through the alerts domain's service."""
    found: list[AlertSummary] = []
    for form in forms:
        for status in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED):
            page = list_alerts(
                session, status=status, customer_id=form, limit=ALERTS_LISTED, tenant=tenant
            )
            found.extend(page.items)
    return sorted(found, key=lambda alert: alert.opened_at)
