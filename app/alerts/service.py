"""Churn alerts: opened from the scores that call for one, owned by staff, resolved.

The score writer stores a churn score that crosses the alert threshold together with an alert
candidate (``score_alert_candidate``, the scoring package's inbox). ``process_pending`` takes
candidates out of that inbox and, in the same transaction, decides for each one: open an alert,
record the score on the customer's active alert, or hold it (a recently resolved alert is not
reopened unless the risk rose by a margin), and queues the notifications of the alerts it
opens in the outbox. A candidate is deleted only by the transaction that records it, so none
is lost and none is recorded twice, with any number of processors at once. The lifecycle
functions below serve the alert endpoints.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine, Select, select
from sqlalchemy.orm import Session

from app.alerts import repository as repo
from app.alerts.repository import (
    ActiveAlert,
    AlertEventRow,
    AlertScoreUpdate,
    DigestEntryRow,
    NewAlertRow,
    OutboxRow,
    Resolution,
)
from app.alerts.repository import (
    AlertRef as AlertRef,
)
from app.alerts.schemas import (
    AcknowledgeRequest,
    AlertDetail,
    AlertPage,
    AlertSummary,
    ResolveRequest,
    alert_detail,
)
from app.alerts.states import (
    TRANSITIONS,
    AlertAction,
    AlertCause,
    AlertStatus,
    EventKind,
    MessageStatus,
    Outcome,
)
from app.alerts.tables import Alert
from app.config import Settings
from app.db.errors import describe_db_error
from app.errors import Conflict, NotFound
from app.scoring.assess import AlertThresholds
from app.scoring.repository import (
    AlertCandidate,
    TenantScope,
    claim_alert_candidates,
    count_alert_candidates,
)
from app.scoring.rules import rules_from_settings

# Reasons kept in a notification: enough to act on, short enough to read on a phone.
NOTIFIED_REASONS = 5

Clock = Callable[[], datetime]
log = structlog.get_logger("cvm.alerts")


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
    """What the processor does with a candidate once its score crossed the threshold: a
    customer's alert resolved less than ``cooldown`` before the score is not reopened, unless
    the probability rose by ``reopen_margin`` over the one it was resolved at."""

    cooldown: timedelta = timedelta(days=30)
    reopen_margin: float = 0.1

    def holds(self, candidate: AlertCandidate, resolution: Resolution | None) -> bool:
        """Whether a recent resolution keeps this score from opening a new alert."""
        if resolution is None or candidate.created_at >= resolution.resolved_at + self.cooldown:
            return False
        if resolution.probability is None:  # not a churn alert's: the cooldown alone holds
            return True
        return candidate.probability < resolution.probability + self.reopen_margin


@dataclass(frozen=True)
class NotificationPlan:
    """Which notifications a newly opened alert queues in the outbox (one route)."""

    webhook: bool = False
    email_recipients: tuple[str, ...] = ()
    email_digest: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationPlan:
        """The route of alerts without a tenant: the global channels the settings turn on."""
        return cls(
            webhook=settings.webhook_enabled,
            email_recipients=tuple(settings.email_recipients) if settings.email_enabled else (),
            email_digest=settings.email_digest_minutes > 0,
        )

    @property
    def sends(self) -> bool:
        """Whether this route sends anything at all."""
        return self.webhook or bool(self.email_recipients)


@dataclass(frozen=True)
class NotificationRouting:
    """Each tenant's route; ``default`` serves alerts without a tenant only. A tenant without a
    route gets its notifications held, never another tenant's (or the default) receivers."""

    default: NotificationPlan = field(default_factory=NotificationPlan)
    tenants: Mapping[str, NotificationPlan] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationRouting:
        """The default route and ``notification_routes``."""
        digest = settings.email_digest_minutes > 0
        return cls(
            default=NotificationPlan.from_settings(settings),
            tenants={
                tenant: NotificationPlan(
                    webhook=route.webhook_url is not None,
                    email_recipients=tuple(route.email_recipients)
                    if settings.email_enabled
                    else (),
                    email_digest=digest,
                )
                for tenant, route in settings.notification_routes.items()
            },
        )

    @property
    def active(self) -> bool:
        """Whether any notification is configured (otherwise nothing is queued, not even
        held messages)."""
        return self.default.sends or any(plan.sends for plan in self.tenants.values())

    def plan_for(self, tenant: str | None) -> NotificationPlan | None:
        """The tenant's route; None when the tenant has none (its notifications are held)."""
        if tenant is None:
            return self.default
        return self.tenants.get(tenant)


@dataclass
class ProcessSummary:
    """What processing candidates did (for logs, the CLI and tests)."""

    candidates: int = 0
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    rescored: int = 0
    held: int = 0
    skipped: int = 0
    messages: int = 0

    def add(self, other: ProcessSummary) -> None:
        """Fold in another batch's counts."""
        self.candidates += other.candidates
        self.opened.extend(other.opened)
        self.updated.extend(other.updated)
        self.rescored += other.rescored
        self.held += other.held
        self.skipped += other.skipped
        self.messages += other.messages


@dataclass(slots=True)
class _AlertState:
    alert: ActiveAlert
    update: AlertScoreUpdate | None = None


@dataclass(slots=True)
class _Decisions:
    """One tenant's candidates, sorted out against the alerts stored for their customers."""

    active: dict[str, ActiveAlert]
    openers: dict[str, AlertCandidate]
    held: dict[int, Resolution]


@dataclass(frozen=True)
class ChurnAlerts:
    """The churn alert policy the settings describe: the threshold (applied where scores are
    assessed), what the processor does with the candidates, and what an opening announces."""

    thresholds: AlertThresholds
    policy: AlertPolicy
    actions: RetentionActions
    plan: NotificationPlan | NotificationRouting
    # On: a score is recorded only on its own tenant's alert.
    tenant_isolation: bool = False
    clock: Clock = utc_now

    @classmethod
    def from_settings(cls, settings: Settings) -> ChurnAlerts | None:
        """The alert policy the settings describe, or None when alerts are off."""
        thresholds = rules_from_settings(settings).alerts
        if thresholds is None:
            return None
        return cls(
            thresholds=thresholds,
            policy=AlertPolicy(
                cooldown=timedelta(hours=settings.churn_alert_cooldown_hours),
                reopen_margin=settings.churn_alert_reopen_margin,
            ),
            actions=RetentionActions.load(settings.retention_actions_file),
            plan=NotificationRouting.from_settings(settings),
            tenant_isolation=settings.tenant_isolation,
        )

    def record(
        self, connection: Connection, *, candidates: Sequence[AlertCandidate]
    ) -> ProcessSummary:
        """Open, update or hold alerts for these candidates, in the caller's transaction."""
        summary = ProcessSummary(candidates=len(candidates))
        now = self.clock()
        by_tenant: dict[str | None, list[AlertCandidate]] = {}
        for candidate in candidates:
            # The threshold already left these out; a candidate queued before the policy
            # changed, or by another scorer, is checked again here.
            if not self.thresholds.acts_at(candidate.stage):
                summary.skipped += 1
                continue
            by_tenant.setdefault(candidate.tenant, []).append(candidate)
        # Tenants, then customers, in a fixed order: two processors inserting alerts for the
        # same customers wait for each other instead of deadlocking (PostgreSQL).
        for tenant in sorted(by_tenant, key=lambda t: (t is not None, t or "")):
            self._record_tenant(connection, by_tenant[tenant], tenant, now, summary)
        return summary

    def _decide(
        self,
        connection: Connection,
        candidates: Sequence[AlertCandidate],
        scope: TenantScope | None,
        now: datetime,
    ) -> _Decisions:
        """Which candidates open an alert and which are held; active alerts row-locked."""
        customers = list(dict.fromkeys(c.customer_id for c in candidates))
        active = repo.lock_active_alerts(connection, customer_ids=customers, tenant=scope)
        inactive = [cid for cid in customers if cid not in active]
        resolutions = (
            repo.latest_resolutions(
                connection, customer_ids=inactive, since=now - self.policy.cooldown, tenant=scope
            )
            if inactive and self.policy.cooldown > timedelta(0)
            else {}
        )
        openers: dict[str, AlertCandidate] = {}
        held: dict[int, Resolution] = {}
        for candidate in candidates:
            cid = candidate.customer_id
            if cid in active or cid in openers:
                continue
            resolution = resolutions.get(cid)
            if resolution is not None and self.policy.holds(candidate, resolution):
                held[candidate.id] = resolution
            else:
                openers[cid] = candidate
        return _Decisions(active=active, openers=openers, held=held)

    def _record_tenant(
        self,
        connection: Connection,
        candidates: Sequence[AlertCandidate],
        tenant: str | None,
        now: datetime,
        summary: ProcessSummary,
    ) -> None:
        """Record one tenant's candidates (new alerts are inserted one tenant at a time)."""
        scope = TenantScope(tenant) if self.tenant_isolation else None
        decisions = self._decide(connection, candidates, scope, now)
        openers = decisions.openers
        opened: dict[str, int] = {}
        if openers:
            ordered = sorted(openers.values(), key=lambda c: c.customer_id)
            rows = [self._new_alert(c, now, tenant) for c in ordered]
            opened = repo.insert_new_alerts(connection, rows=rows)
            # Customers missing from ``opened`` lost a race with a concurrent transaction
            # (PostgreSQL): its alert is now committed; record this score on that one.
            late = [cid for cid in openers if cid not in opened]
            if late:
                found = repo.lock_active_alerts(connection, customer_ids=late, tenant=scope)
                decisions.active.update(found)
                for cid in late:
                    del openers[cid]

        states = {cid: _AlertState(alert) for cid, alert in decisions.active.items()}
        events: list[AlertEventRow] = []
        outbox: list[OutboxRow] = []
        digest: list[DigestEntryRow] = []
        for candidate in candidates:
            cid = candidate.customer_id
            if openers.get(cid) is candidate:
                alert_id = opened[cid]
                states[cid] = _AlertState(self._opened_alert(alert_id, candidate))
                events.append(_event(alert_id, EventKind.OPENED, AlertStatus.OPEN, candidate, now))
                self._announce(alert_id, candidate, now, outbox, digest, tenant)
                summary.opened.append(alert_id)
            elif (state := states.get(cid)) is not None:
                self._rescore(state, candidate, now)
                alert = state.alert
                events.append(_event(alert.id, EventKind.RESCORED, alert.status, candidate, now))
                summary.rescored += 1
            elif (resolution := decisions.held.get(candidate.id)) is not None:
                status = AlertStatus.RESOLVED
                events.append(_event(resolution.alert_id, EventKind.HELD, status, candidate, now))
                summary.held += 1

        updates = [s.update for s in states.values() if s.update is not None]
        repo.update_alert_scores(connection, updates=updates)
        repo.insert_alert_events(connection, rows=events)
        repo.insert_outbox_messages(connection, rows=outbox)
        repo.insert_digest_entries(connection, rows=digest)
        summary.updated.extend(u["b_id"] for u in updates)
        summary.messages += len(outbox)

    def _opened_alert(self, alert_id: int, candidate: AlertCandidate) -> ActiveAlert:
        return ActiveAlert(
            id=alert_id,
            customer_id=candidate.customer_id,
            status=AlertStatus.OPEN,
            above_threshold=True,
            peak_probability=candidate.probability,
            score_count=1,
            reasons=candidate.reasons,
            actions=self.actions.for_reasons(candidate.reasons),
        )

    def _rescore(self, state: _AlertState, candidate: AlertCandidate, now: datetime) -> None:
        """Record a later crossing score on an active alert."""
        alert = state.alert
        alert.peak_probability = max(alert.peak_probability, candidate.probability)
        alert.score_count += 1
        if candidate.reasons:  # reasons=0 was asked: keep the last reasons known
            alert.reasons = candidate.reasons
            alert.actions = self.actions.for_reasons(candidate.reasons)
        state.update = AlertScoreUpdate(
            b_id=alert.id,
            risk_band=candidate.band,
            probability=candidate.probability,
            peak_probability=alert.peak_probability,
            above_threshold=True,
            reasons=alert.reasons,
            actions=alert.actions,
            model_version=candidate.model_version,
            score_count=alert.score_count,
            last_request_id=candidate.request_id,
            last_scored_at=candidate.created_at,
            updated_at=now,
        )

    def _new_alert(
        self, candidate: AlertCandidate, now: datetime, tenant: str | None = None
    ) -> NewAlertRow:
        return NewAlertRow(
            customer_id=candidate.customer_id,
            reason=AlertCause.CHURN,
            status=AlertStatus.OPEN,
            risk_band=candidate.band,
            probability=candidate.probability,
            peak_probability=candidate.probability,
            above_threshold=True,
            reasons=candidate.reasons,
            actions=self.actions.for_reasons(candidate.reasons),
            model_version=candidate.model_version,
            score_count=1,
            opened_request_id=candidate.request_id,
            last_request_id=candidate.request_id,
            opened_at=now,
            last_scored_at=candidate.created_at,
            updated_at=now,
            tenant=tenant,
        )

    def _announce(
        self,
        alert_id: int,
        candidate: AlertCandidate,
        now: datetime,
        outbox: list[OutboxRow],
        digest: list[DigestEntryRow],
        tenant: str | None = None,
    ) -> None:
        routing = (
            self.plan
            if isinstance(self.plan, NotificationRouting)
            else NotificationRouting(default=self.plan)
        )
        if not routing.active:
            return
        plan = routing.plan_for(tenant)
        snapshot = alert_snapshot(
            alert_id=alert_id,
            customer_id=candidate.customer_id,
            risk_band=candidate.band,
            probability=candidate.probability,
            reasons=candidate.reasons,
            actions=self.actions.for_reasons(candidate.reasons),
            model_version=candidate.model_version,
            opened_at=now,
        )
        if plan is None:  # no route for this tenant: held, visible, never sent elsewhere
            held = _outbox_row(str(uuid.uuid4()), "none", None, alert_id, snapshot, now, tenant)
            held["status"] = MessageStatus.HELD
            held["last_error"] = "no notification route is configured for this tenant"
            outbox.append(held)
            return
        if plan.webhook:
            message_id = str(uuid.uuid4())
            body = {
                "id": message_id,
                "type": "churn_alert.opened",
                "created_at": now.isoformat(),
                "alert": snapshot,
            }
            outbox.append(_outbox_row(message_id, "webhook", None, alert_id, body, now, tenant))
        for recipient in plan.email_recipients:
            if plan.email_digest:
                entry = DigestEntryRow(recipient=recipient, alert_id=alert_id, created_at=now)
                digest.append(entry)
            else:
                message_id = str(uuid.uuid4())
                outbox.append(
                    _outbox_row(message_id, "email", recipient, alert_id, snapshot, now, tenant)
                )


# --- need alerts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedAlert:
    """A need the trail shows (app/customers/needs.py), as plain data: the customer (stored
    id), the rule, the product to offer, the event behind it and what to tell staff."""

    customer_id: str
    cause: AlertCause
    product: str
    event_id: str
    text: str


def open_need_alerts(
    connection: Connection,
    *,
    tenant: str | None,
    needs: Sequence[NeedAlert],
    request_id: str,
    now: datetime,
    cooldown: timedelta,
) -> list[int]:
    """Open an alert per need (one tenant's), in the caller's transaction, unless the customer
    has an active alert of that rule or one resolved less than ``cooldown`` ago; the ids
    opened. No score: no band or probability; the offer is its action."""
    opened: list[int] = []
    by_cause: dict[AlertCause, dict[str, NeedAlert]] = {}
    for need in needs:
        by_cause.setdefault(need.cause, {}).setdefault(need.customer_id, need)
    scope = TenantScope(tenant)
    # Causes, then customers, in a fixed order: concurrent intakes wait instead of deadlocking.
    for cause in sorted(by_cause):
        found = by_cause[cause]
        active = repo.customers_with_active_alert(
            connection, customer_ids=sorted(found), reason=cause.value, tenant=scope
        )
        for customer_id in active:
            del found[customer_id]
        recent = (
            repo.latest_resolutions(
                connection,
                customer_ids=sorted(found),
                since=now - cooldown,
                tenant=scope,
                reason=cause.value,
            )
            if found and cooldown > timedelta(0)
            else {}
        )
        rows = [
            _need_alert(need, tenant, request_id, now)
            for customer_id, need in sorted(found.items())
            if customer_id not in recent
        ]
        inserted = repo.insert_new_alerts(connection, rows=rows)
        events = [
            AlertEventRow(
                alert_id=alert_id,
                kind=EventKind.OPENED,
                at=now,
                by=None,
                status=AlertStatus.OPEN,
                probability=None,
                risk_band=None,
                request_id=request_id,
                note=found[customer_id].text,
            )
            for customer_id, alert_id in sorted(inserted.items())
        ]
        repo.insert_alert_events(connection, rows=events)
        opened.extend(alert_id for _, alert_id in sorted(inserted.items()))
    return opened


def _need_alert(need: NeedAlert, tenant: str | None, request_id: str, now: datetime) -> NewAlertRow:
    return NewAlertRow(
        customer_id=need.customer_id,
        reason=need.cause,
        status=AlertStatus.OPEN,
        risk_band=None,
        probability=None,
        peak_probability=None,
        above_threshold=True,
        reasons=[],
        actions=[need.text],
        model_version=None,
        score_count=0,
        opened_request_id=request_id,
        last_request_id=request_id,
        opened_at=now,
        last_scored_at=now,
        updated_at=now,
        tenant=tenant,
        product=need.product,
    )


# --- the processor ---------------------------------------------------------------------------


def process_pending(
    engine: Engine, *, alerts: ChurnAlerts, batch_size: int = 500
) -> ProcessSummary:
    """Record every candidate waiting in the inbox, one batch per transaction.

    Each transaction takes its candidates out of the inbox and writes what they do to alerts
    (and their outbox) together: a crash rolls both back, leaving the candidates for the next
    run. Processors running at once take disjoint candidates (see
    ``claim_alert_candidates``).
    """
    total = ProcessSummary()
    while True:
        with engine.begin() as connection:
            candidates = claim_alert_candidates(connection, limit=batch_size)
            if not candidates:
                return total
            summary = alerts.record(connection, candidates=candidates)
        total.add(summary)


def pending_candidates(engine: Engine) -> int:
    """Candidates committed and not yet processed."""
    with engine.connect() as connection:
        return count_alert_candidates(connection)


class AlertProcessor:
    """Runs ``process_pending`` in a background thread every ``poll_s``: candidates are taken
    in batches, not one commit at a time (a wake-up per scoring call cost ~50 µs of the
    worker's CPU per call, bench/inprocess.py); an alert opens within ``poll_s``."""

    def __init__(
        self,
        engine: Engine,
        *,
        alerts: ChurnAlerts,
        poll_s: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self.alerts = alerts
        self.poll_s = poll_s
        self.batch_size = batch_size
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> ProcessSummary:
        """Process what is pending now, in the caller's thread."""
        return process_pending(self.engine, alerts=self.alerts, batch_size=self.batch_size)

    def start(self) -> None:
        """Start the background thread."""
        if self._thread is not None:
            raise RuntimeError("alert processor already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="cvm-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Process what is pending one last time, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_s):
            self._process()
        self._process()  # what was committed before the stop

    def _process(self) -> None:
        try:
            summary = self.run_once()
        except Exception as error:
            # The candidates stay in the inbox: the next poll retries them.
            log.error("alert_processing_failed", error=describe_db_error(error))
            return
        if summary.candidates:
            log.info(
                "alert_candidates_processed",
                candidates=summary.candidates,
                opened=len(summary.opened),
                rescored=summary.rescored,
                held=summary.held,
                skipped=summary.skipped,
            )


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
    alert_id: int, kind: EventKind, status: str, candidate: AlertCandidate, now: datetime
) -> AlertEventRow:
    return AlertEventRow(
        alert_id=alert_id,
        kind=kind,
        at=now,
        by=None,
        status=status,
        probability=candidate.probability,
        risk_band=candidate.band,
        request_id=candidate.request_id,
        note=None,
    )


def _outbox_row(
    message_id: str,
    channel: str,
    recipient: str | None,
    alert_id: int,
    payload: dict[str, Any],
    now: datetime,
    tenant: str | None = None,
) -> OutboxRow:
    return OutboxRow(
        id=message_id,
        channel=channel,
        kind="alert_opened",
        recipient=recipient,
        alert_id=alert_id,
        payload=payload,
        status=MessageStatus.PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        tenant=tenant,
        last_error=None,
    )


def queue_email(
    session: Session,
    *,
    message_id: str,
    recipient: str,
    kind: str,
    payload: dict[str, Any],
    tenant: str | None,
    now: datetime,
    channel: str = "email",
) -> bool:
    """Queue one e-mail (or ``channel`` message) in the outbox (flushed, not committed) unless
    a message with this id is already there: a deterministic id makes a repeated call a no-op.
    Whether it was new."""
    connection = session.connection()
    if repo.outbox_message_exists(connection, message_id=message_id):
        return False
    row = OutboxRow(
        id=message_id,
        channel=channel,
        kind=kind,
        recipient=recipient,
        alert_id=None,
        payload=payload,
        status=MessageStatus.PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        tenant=tenant,
        last_error=None,
    )
    repo.insert_outbox_messages(connection, rows=[row])
    return True


# --- lifecycle ---------------------------------------------------------------------------------


def list_alerts(
    session: Session,
    *,
    status: AlertStatus | None = None,
    outcome: Outcome | None = None,
    risk_band: str | None = None,
    owner: str | None = None,
    customer_id: str | None = None,
    opened_before: datetime | None = None,
    older_than_hours: float | None = None,
    reason: AlertCause | None = None,
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
        outcome=outcome,
        risk_band=risk_band,
        owner=owner,
        customer_id=customer_id,
        opened_before=opened_before,
        limit=limit,
        offset=offset,
        tenant=tenant,
        reason=None if reason is None else reason.value,
    )
    return AlertPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AlertSummary.model_validate(a, from_attributes=True) for a in alerts],
    )


def open_alert_refs(
    session: Session, *, after_id: int, limit: int, tenant: TenantScope | None = None
) -> list[AlertRef]:
    """Alerts nobody has acknowledged yet, of one tenant or all, by id after ``after_id``."""
    return repo.open_alert_refs(session, after_id=after_id, limit=limit, tenant=tenant)


def alert_refs(session: Session, *, alert_ids: Sequence[int]) -> dict[int, AlertRef]:
    """These alerts' customer, tenant, status and owner, by id (routing)."""
    return repo.alert_refs(session, alert_ids=alert_ids)


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
    actor: str,
    request_id: str | None = None,
    now: datetime | None = None,
    tenant: TenantScope | None = None,
) -> AlertDetail:
    """open -> acknowledged: ``actor`` (the authenticated client) takes ownership; 409 from any
    other status. ``request.by`` is ignored: ownership is never what a body says."""
    now = now or utc_now()
    return _apply_transition(
        session,
        alert_id=alert_id,
        action=AlertAction.ACKNOWLEDGE,
        owner=None,
        actor=actor,
        values={
            "owner": actor,
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
    actor: str,
    request_id: str | None = None,
    now: datetime | None = None,
    tenant: TenantScope | None = None,
) -> AlertDetail:
    """acknowledged -> resolved, by its owner (``actor``, the authenticated client) only, with
    the outcome; 409 otherwise."""
    now = now or utc_now()
    return _apply_transition(
        session,
        alert_id=alert_id,
        action=AlertAction.RESOLVE,
        owner=actor,
        actor=actor,
        values={
            "resolved_by": actor,
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
    action: AlertAction,
    owner: str | None,
    actor: str,
    values: dict[str, Any],
    request: AcknowledgeRequest | ResolveRequest,
    request_id: str | None,
    now: datetime,
    tenant: TenantScope | None,
) -> AlertDetail:
    """One conditional UPDATE plus its history event, committed together; 404/409 if refused."""
    from_status, to_status = TRANSITIONS[action]
    changed = repo.transition_alert(
        session,
        alert_id=alert_id,
        from_status=from_status,
        owner=owner,
        values={**values, "status": to_status},
        tenant=tenant,
    )
    if not changed:
        session.rollback()
        raise _refusal(session, alert_id, action, tenant)
    event = _transition_event(alert_id, to_status, request, actor, request_id, now)
    repo.add_alert_event(session, row=event)
    session.commit()
    return get_alert(session, alert_id=alert_id, tenant=tenant)


def _transition_event(
    alert_id: int,
    status: AlertStatus,
    request: AcknowledgeRequest | ResolveRequest,
    actor: str,
    request_id: str | None,
    now: datetime,
) -> AlertEventRow:
    note = request.note
    if isinstance(request, ResolveRequest):
        note = f"outcome: {request.outcome}" + (f"; {request.note}" if request.note else "")
    # The event of a transition is named after the status it reached.
    return AlertEventRow(
        alert_id=alert_id,
        kind=EventKind(status.value),
        at=now,
        by=actor,
        status=status,
        probability=None,
        risk_band=None,
        # The call that made the transition: the audit log's line for it names the client.
        request_id=request_id,
        note=note,
    )


def _refusal(
    session: Session, alert_id: int, action: AlertAction, tenant: TenantScope | None = None
) -> NotFound | Conflict:
    """Why a transition did not apply: the alert is missing, or in the wrong state or hands."""
    alert = repo.get_alert(session, alert_id=alert_id, tenant=tenant)
    if alert is None:
        return NotFound(f"no alert {alert_id}")
    extra = {"alert_status": alert.status, "owner": alert.owner}
    if alert.status == AlertStatus.RESOLVED:
        detail = f"alert {alert_id} is already resolved ({alert.outcome})"
    elif action is AlertAction.ACKNOWLEDGE:
        detail = f"alert {alert_id} is already acknowledged by {alert.owner}"
    elif alert.status == AlertStatus.OPEN:
        detail = f"alert {alert_id} is open: acknowledge it before resolving it"
    else:
        detail = f"alert {alert_id} is owned by {alert.owner}; only its owner may resolve it"
    session.rollback()
    return Conflict(detail, extra=extra)


def outcome_rows() -> Select[int, str | None]:
    """Every alert's id and outcome (None until resolved): a subquery for reports to join."""
    return select(Alert.id.label("alert_id"), Alert.outcome.label("outcome"))
