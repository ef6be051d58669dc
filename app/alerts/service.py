"""Churn alerts: opened with the score that crosses the threshold, owned, resolved.

The scoring transaction calls ``ChurnAlerts.record`` on its own connection, so a score, the
alert it opens or updates and the notifications announcing it are committed together or not
at all. The lifecycle functions below serve the alert endpoints.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.alerts import repository as repo
from app.alerts.repository import (
    ActiveAlert,
    AlertEventRow,
    AlertScoreUpdate,
    DigestEntryRow,
    NewAlertRow,
    OutboxRow,
)
from app.alerts.schemas import (
    AcknowledgeRequest,
    AlertDetail,
    AlertPage,
    AlertSummary,
    ResolveRequest,
    alert_detail,
)
from app.config import Settings
from app.errors import Conflict, NotFound
from app.scoring.repository import TenantScope

BAND_ORDER = {"low": 0, "medium": 1, "high": 2}
# Reasons kept in a notification: enough to act on, short enough to read on a phone.
NOTIFIED_REASONS = 5

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


class RetentionActions(BaseModel):
    """Retention actions recommended for the reasons that raise a customer's churn risk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_actions: int = Field(default=3, ge=1)
    default: list[str] = Field(min_length=1)
    by_feature: dict[str, list[str]] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RetentionActions:
        """Read the mapping file."""
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def for_reasons(self, reasons: Sequence[Mapping[str, Any]]) -> list[str]:
        """Actions for the reasons that raise the risk, strongest first; the default if none."""
        actions: list[str] = []
        for reason in reasons:
            if reason.get("direction") != "raises":
                continue
            for action in self.by_feature.get(str(reason.get("feature")), []):
                if action not in actions:
                    actions.append(action)
        return (actions or list(self.default))[: self.max_actions]


@dataclass(frozen=True)
class AlertPolicy:
    """When a churn score opens an alert: from a risk band up, or from a probability up."""

    min_band: str = "high"
    min_probability: float | None = None

    def crosses(self, *, probability: float, risk_band: str) -> bool:
        """Whether this score is above the threshold."""
        if self.min_probability is not None:
            return probability >= self.min_probability
        return BAND_ORDER.get(risk_band, 0) >= BAND_ORDER[self.min_band]


@dataclass(frozen=True)
class NotificationPlan:
    """Which notifications a newly opened alert queues in the outbox."""

    webhook: bool = False
    email_recipients: tuple[str, ...] = ()
    email_digest: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationPlan:
        """The channels the settings turn on."""
        return cls(
            webhook=settings.webhook_enabled,
            email_recipients=tuple(settings.email_recipients) if settings.email_enabled else (),
            email_digest=settings.email_digest_minutes > 0,
        )


class ChurnScores(NamedTuple):
    """One call's churn results as columns: cheap to gather on the request path and to send to
    a writer process; the observations are built where they are recorded."""

    customer_ids: list[str]
    probabilities: list[float]
    risk_bands: list[str]
    reasons: list[list[dict[str, Any]]]
    request_id: str
    model_version: str | None
    # Per score, whether the assessment found the alert threshold for its stage crossed.
    crossed: list[bool]


class ChurnObservation(NamedTuple):
    """One churn score as the alert logic needs it (a named tuple: one per scored customer,
    built on the request path)."""

    customer_id: str
    probability: float
    risk_band: str
    above_threshold: bool
    reasons: list[dict[str, Any]]
    request_id: str
    model_version: str | None


@dataclass
class AlertWriteSummary:
    """What one scoring transaction did to alerts (for tests and logs)."""

    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    messages: int = 0


@dataclass(slots=True)
class _AlertState:
    alert: ActiveAlert
    update: AlertScoreUpdate | None = None


class ChurnAlerts:
    """Opens and updates churn alerts inside the transaction that saves the scores."""

    def __init__(
        self,
        *,
        policy: AlertPolicy,
        actions: RetentionActions,
        plan: NotificationPlan,
        clock: Clock = utc_now,
        tenant_isolation: bool = False,
    ) -> None:
        self.policy = policy
        self.actions = actions
        self.plan = plan
        self.clock = clock
        # On: a score updates only its own tenant's alert (see record).
        self.tenant_isolation = tenant_isolation

    @classmethod
    def from_settings(cls, settings: Settings) -> ChurnAlerts | None:
        """The alert logic the settings describe, or None when alerts are off."""
        if not settings.churn_alerts_enabled:
            return None
        return cls(
            policy=AlertPolicy(
                min_band=settings.churn_alert_band, min_probability=settings.churn_alert_probability
            ),
            actions=RetentionActions.load(settings.retention_actions_file),
            plan=NotificationPlan.from_settings(settings),
            tenant_isolation=settings.tenant_isolation,
        )

    def observe(
        self,
        *,
        customer_ids: Sequence[str],
        results: Sequence[Mapping[str, Any]],
        crossed: Sequence[bool],
        request_id: str,
        model_version: str | None,
        tenant: str | None = None,
    ) -> Callable[[Connection], None]:
        """A callback recording these churn results on alerts, inside the scores' transaction;
        ``crossed`` is the assessment's verdict on the threshold for each customer's stage."""
        scores = ChurnScores(
            list(customer_ids),
            [float(result["probability"]) for result in results],
            [str(result["risk_band"]) for result in results],
            [list(e["reasons"]) if (e := result.get("explanation")) else [] for result in results],
            request_id,
            model_version,
            list(crossed),
        )
        return RecordObservations(alerts=self, scores=(scores,), tenant=tenant)

    def record(
        self,
        connection: Connection,
        *,
        observations: Sequence[ChurnObservation],
        tenant: str | None = None,
    ) -> AlertWriteSummary:
        """Open, update and announce alerts for these scores on ``connection`` (no commit).

        New alerts carry ``tenant``. With tenant isolation, a score sees and opens only its
        tenant's alerts: two tenants with the same customer id each have their own (the unique
        index allows one active alert per customer id and tenant).
        """
        scope = TenantScope(tenant) if self.tenant_isolation else None
        active = self._lock_active(connection, [o.customer_id for o in observations], scope)
        if not active and not any(o.above_threshold for o in observations):
            return AlertWriteSummary()
        return self._apply(connection, observations, active, scope, tenant)

    def record_scores(
        self,
        connection: Connection,
        *,
        scores: Sequence[ChurnScores],
        tenant: str | None = None,
    ) -> AlertWriteSummary:
        """``record`` for calls' scores as columns: observations are built only for the
        customers alerts concern (a score that crosses the threshold, or an active alert);
        a 1,000-customer call usually concerns a few dozen."""
        flags = [s.crossed for s in scores]
        scope = TenantScope(tenant) if self.tenant_isolation else None
        active = self._lock_active(
            connection, [cid for s in scores for cid in s.customer_ids], scope
        )
        crossing = {
            cid
            for s, f in zip(scores, flags, strict=True)
            for cid, above in zip(s.customer_ids, f, strict=True)
            if above
        }
        if not active and not crossing:
            return AlertWriteSummary()
        concerned = crossing | active.keys()
        observations = [
            ChurnObservation(cid, p, band, above, reasons, s.request_id, s.model_version)
            for s, f in zip(scores, flags, strict=True)
            for cid, p, band, above, reasons in zip(
                s.customer_ids, s.probabilities, s.risk_bands, f, s.reasons, strict=True
            )
            if cid in concerned
        ]
        return self._apply(connection, observations, active, scope, tenant)

    @staticmethod
    def _lock_active(
        connection: Connection, customer_ids: list[str], scope: TenantScope | None
    ) -> dict[str, ActiveAlert]:
        # The one statement every churn write pays: an index lookup that finds nothing when
        # no customer in the write has an alert.
        unique = list(dict.fromkeys(customer_ids))
        return repo.lock_active_alerts(connection, customer_ids=unique, tenant=scope)

    def _apply(
        self,
        connection: Connection,
        observations: Sequence[ChurnObservation],
        active: dict[str, ActiveAlert],
        scope: TenantScope | None,
        tenant: str | None,
    ) -> AlertWriteSummary:
        """Open, update and announce, given the customers' active alerts (locked)."""
        summary = AlertWriteSummary()
        now = self.clock()

        # The first crossing of each customer without an active alert opens one.
        openers: dict[str, int] = {}
        for index, observation in enumerate(observations):
            cid = observation.customer_id
            if observation.above_threshold and cid not in active and cid not in openers:
                openers[cid] = index
        opened: dict[str, int] = {}
        if openers:
            rows = [self._new_alert(observations[i], now, tenant) for i in openers.values()]
            opened = repo.insert_new_alerts(connection, rows=rows)
            # Customers missing from ``opened`` lost a race with a concurrent transaction
            # (PostgreSQL): its alert is now committed; record this score on that one.
            late = [cid for cid in openers if cid not in opened]
            if late:
                active.update(repo.lock_active_alerts(connection, customer_ids=late, tenant=scope))
                for cid in late:
                    del openers[cid]

        states = {cid: _AlertState(alert) for cid, alert in active.items()}
        events: list[AlertEventRow] = []
        outbox: list[OutboxRow] = []
        digest: list[DigestEntryRow] = []
        for index, observation in enumerate(observations):
            cid = observation.customer_id
            if openers.get(cid) == index:
                alert_id = opened[cid]
                states[cid] = _AlertState(
                    ActiveAlert(
                        id=alert_id,
                        customer_id=cid,
                        status="open",
                        above_threshold=True,
                        peak_probability=observation.probability,
                        score_count=1,
                        reasons=observation.reasons,
                        actions=self.actions.for_reasons(observation.reasons),
                    )
                )
                events.append(_event(alert_id, "opened", "open", observation, now))
                self._announce(alert_id, observation, now, outbox, digest)
                summary.opened.append(alert_id)
                continue
            state = states.get(cid)
            if state is None:
                continue  # below the threshold, no alert: nothing to record
            alert = state.alert
            kind = (
                "rescored"
                if observation.above_threshold == alert.above_threshold
                else "above_threshold"
                if observation.above_threshold
                else "below_threshold"
            )
            alert.above_threshold = observation.above_threshold
            alert.peak_probability = max(alert.peak_probability, observation.probability)
            alert.score_count += 1
            if observation.reasons:  # reasons=0 was asked: keep the last reasons known
                alert.reasons = observation.reasons
                alert.actions = self.actions.for_reasons(observation.reasons)
            state.update = AlertScoreUpdate(
                b_id=alert.id,
                risk_band=observation.risk_band,
                probability=observation.probability,
                peak_probability=alert.peak_probability,
                above_threshold=observation.above_threshold,
                reasons=alert.reasons,
                actions=alert.actions,
                model_version=observation.model_version,
                score_count=alert.score_count,
                last_request_id=observation.request_id,
                last_scored_at=now,
                updated_at=now,
            )
            events.append(_event(alert.id, kind, alert.status, observation, now))

        updates = [s.update for s in states.values() if s.update is not None]
        repo.update_alert_scores(connection, updates=updates)
        repo.insert_alert_events(connection, rows=events)
        repo.insert_outbox_messages(connection, rows=outbox)
        repo.insert_digest_entries(connection, rows=digest)
        summary.updated = [u["b_id"] for u in updates]
        summary.messages = len(outbox)
        return summary

    def _new_alert(
        self, observation: ChurnObservation, now: datetime, tenant: str | None = None
    ) -> NewAlertRow:
        return NewAlertRow(
            customer_id=observation.customer_id,
            status="open",
            risk_band=observation.risk_band,
            probability=observation.probability,
            peak_probability=observation.probability,
            above_threshold=True,
            reasons=observation.reasons,
            actions=self.actions.for_reasons(observation.reasons),
            model_version=observation.model_version,
            score_count=1,
            opened_request_id=observation.request_id,
            last_request_id=observation.request_id,
            opened_at=now,
            last_scored_at=now,
            updated_at=now,
            tenant=tenant,
        )

    def _announce(
        self,
        alert_id: int,
        observation: ChurnObservation,
        now: datetime,
        outbox: list[OutboxRow],
        digest: list[DigestEntryRow],
    ) -> None:
        if not self.plan.webhook and not self.plan.email_recipients:
            return
        snapshot = alert_snapshot(
            alert_id=alert_id,
            customer_id=observation.customer_id,
            risk_band=observation.risk_band,
            probability=observation.probability,
            reasons=observation.reasons,
            actions=self.actions.for_reasons(observation.reasons),
            model_version=observation.model_version,
            opened_at=now,
        )
        if self.plan.webhook:
            message_id = str(uuid.uuid4())
            body = {
                "id": message_id,
                "type": "churn_alert.opened",
                "created_at": now.isoformat(),
                "alert": snapshot,
            }
            outbox.append(_outbox_row(message_id, "webhook", None, alert_id, body, now))
        for recipient in self.plan.email_recipients:
            if self.plan.email_digest:
                entry = DigestEntryRow(recipient=recipient, alert_id=alert_id, created_at=now)
                digest.append(entry)
            else:
                message_id = str(uuid.uuid4())
                outbox.append(_outbox_row(message_id, "email", recipient, alert_id, snapshot, now))


def alert_snapshot(
    *,
    alert_id: int,
    customer_id: str,
    risk_band: str,
    probability: float,
    reasons: Sequence[Mapping[str, Any]],
    actions: Sequence[str],
    model_version: str | None,
    opened_at: datetime,
) -> dict[str, Any]:
    """What a notification says about an alert (frozen when it is queued)."""
    return {
        "id": alert_id,
        "customer_id": customer_id,
        "risk_band": risk_band,
        "probability": probability,
        "reasons": [
            {
                "feature": r.get("feature"),
                "text": r.get("text"),
                "direction": r.get("direction"),
                "contribution": r.get("contribution"),
            }
            for r in list(reasons)[:NOTIFIED_REASONS]
        ],
        "actions": list(actions),
        "model_version": model_version,
        "opened_at": opened_at.isoformat(),
        "href": f"/v1/alerts/{alert_id}",
    }


def _event(
    alert_id: int, kind: str, status: str, observation: ChurnObservation, now: datetime
) -> AlertEventRow:
    return AlertEventRow(
        alert_id=alert_id,
        kind=kind,
        at=now,
        by=None,
        status=status,
        probability=observation.probability,
        risk_band=observation.risk_band,
        request_id=observation.request_id,
        note=None,
    )


def _outbox_row(
    message_id: str,
    channel: str,
    recipient: str | None,
    alert_id: int,
    payload: dict[str, Any],
    now: datetime,
) -> OutboxRow:
    return OutboxRow(
        id=message_id,
        channel=channel,
        kind="alert_opened",
        recipient=recipient,
        alert_id=alert_id,
        payload=payload,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )


# --- lifecycle ---------------------------------------------------------------------------------


def list_alerts(
    session: Session,
    *,
    status: str | None = None,
    risk_band: str | None = None,
    owner: str | None = None,
    customer_id: str | None = None,
    opened_before: datetime | None = None,
    older_than_hours: float | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
    tenant: TenantScope | None = None,
) -> AlertPage:
    """One page of alerts matching every filter given, oldest opened first."""
    if older_than_hours is not None:
        cutoff = (now or utc_now()) - timedelta(hours=older_than_hours)
        opened_before = cutoff if opened_before is None else min(opened_before, cutoff)
    alerts, total = repo.list_alerts(
        session,
        status=status,
        risk_band=risk_band,
        owner=owner,
        customer_id=customer_id,
        opened_before=opened_before,
        limit=limit,
        offset=offset,
        tenant=tenant,
    )
    return AlertPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AlertSummary.model_validate(a, from_attributes=True) for a in alerts],
    )


def get_alert(session: Session, *, alert_id: int, tenant: TenantScope | None = None) -> AlertDetail:
    """An alert with its history, or 404 (also for another tenant's alert)."""
    alert = repo.get_alert(session, alert_id=alert_id, tenant=tenant)
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    return alert_detail(alert, repo.alert_history(session, alert_id=alert_id))


def acknowledge_alert(
    session: Session,
    *,
    alert_id: int,
    request: AcknowledgeRequest,
    request_id: str | None = None,
    now: datetime | None = None,
    tenant: TenantScope | None = None,
) -> AlertDetail:
    """open -> acknowledged: the caller takes ownership; 409 from any other status."""
    now = now or utc_now()
    return _apply_transition(
        session,
        alert_id=alert_id,
        action="acknowledge",
        from_status="open",
        owner=None,
        values={
            "status": "acknowledged",
            "owner": request.by,
            "acknowledged_at": now,
            "updated_at": now,
        },
        request=request,
        request_id=request_id,
        now=now,
        tenant=tenant,
    )


def resolve_alert(
    session: Session,
    *,
    alert_id: int,
    request: ResolveRequest,
    request_id: str | None = None,
    now: datetime | None = None,
    tenant: TenantScope | None = None,
) -> AlertDetail:
    """acknowledged -> resolved, by its owner only, with the outcome; 409 otherwise."""
    now = now or utc_now()
    return _apply_transition(
        session,
        alert_id=alert_id,
        action="resolve",
        from_status="acknowledged",
        owner=request.by,
        values={
            "status": "resolved",
            "resolved_by": request.by,
            "resolved_at": now,
            "outcome": request.outcome,
            "resolution_note": request.note,
            "updated_at": now,
        },
        request=request,
        request_id=request_id,
        now=now,
        tenant=tenant,
    )


def _apply_transition(
    session: Session,
    *,
    alert_id: int,
    action: str,
    from_status: str,
    owner: str | None,
    values: dict[str, Any],
    request: AcknowledgeRequest | ResolveRequest,
    request_id: str | None,
    now: datetime,
    tenant: TenantScope | None,
) -> AlertDetail:
    """One conditional UPDATE plus its history event, committed together; 404/409 if refused."""
    changed = repo.transition_alert(
        session,
        alert_id=alert_id,
        from_status=from_status,
        owner=owner,
        values=values,
        tenant=tenant,
    )
    if not changed:
        session.rollback()
        raise _refusal(session, alert_id, action, tenant)
    event = _transition_event(alert_id, values["status"], request, request_id, now)
    repo.add_alert_event(session, row=event)
    session.commit()
    return get_alert(session, alert_id=alert_id, tenant=tenant)


def _transition_event(
    alert_id: int,
    kind: str,
    request: AcknowledgeRequest | ResolveRequest,
    request_id: str | None,
    now: datetime,
) -> AlertEventRow:
    note = request.note
    if isinstance(request, ResolveRequest):
        note = f"outcome: {request.outcome}" + (f"; {request.note}" if request.note else "")
    return AlertEventRow(
        alert_id=alert_id,
        kind=kind,
        at=now,
        by=request.by,
        status=kind,
        probability=None,
        risk_band=None,
        # The call that made the transition: the audit log's line for it names the client.
        request_id=request_id,
        note=note,
    )


def _refusal(
    session: Session, alert_id: int, action: str, tenant: TenantScope | None = None
) -> NotFound | Conflict:
    """Why a transition did not apply: the alert is missing, or in the wrong state or hands."""
    alert = repo.get_alert(session, alert_id=alert_id, tenant=tenant)
    if alert is None:
        return NotFound(f"no alert {alert_id}")
    extra = {"alert_status": alert.status, "owner": alert.owner}
    if alert.status == "resolved":
        detail = f"alert {alert_id} is already resolved ({alert.outcome})"
    elif action == "acknowledge":
        detail = f"alert {alert_id} is already acknowledged by {alert.owner}"
    elif alert.status == "open":
        detail = f"alert {alert_id} is open: acknowledge it before resolving it"
    else:
        detail = f"alert {alert_id} is owned by {alert.owner}; only its owner may resolve it"
    session.rollback()
    return Conflict(detail, extra=extra)


@dataclass(frozen=True)
class RecordObservations:
    """The after-insert callback of one scoring call; calls of one tenant merge into one."""

    alerts: ChurnAlerts
    scores: tuple[ChurnScores, ...]
    tenant: str | None

    def __call__(self, connection: Connection) -> None:
        self.alerts.record_scores(connection, scores=self.scores, tenant=self.tenant)

    def merge(self, other: object) -> RecordObservations | None:
        """One callback for both, when they record for the same alerts and tenant."""
        if (
            not isinstance(other, RecordObservations)
            or other.alerts is not self.alerts
            or other.tenant != self.tenant
        ):
            return None
        return RecordObservations(
            alerts=self.alerts, scores=(*self.scores, *other.scores), tenant=self.tenant
        )
