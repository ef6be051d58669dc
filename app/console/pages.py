"""What each page shows, gathered from the domains' service functions (no tables of theirs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.actions.schemas import NextBestActions
from app.actions.service import NextBestActionService
from app.alerts import service as alerts
from app.alerts.schemas import AlertSummary
from app.alerts.states import AlertStatus
from app.campaigns import service as campaigns
from app.campaigns.schemas import CampaignOut, CampaignReport, PowerCheck
from app.campaigns.states import CampaignStatus
from app.casework import routing
from app.casework import service as casework
from app.casework.schemas import AssignmentOut, ComplaintBrief, ComplaintOut
from app.casework.states import FINAL_STATUSES, AssignmentStatus, StaffRole
from app.console.service import ConsoleUser, acting_record
from app.contact import service as contact
from app.contact.schemas import ContactOut
from app.contact.service import ContactPolicy
from app.contact.states import ContactChannel
from app.customers import record
from app.customers.features import IndexWeights
from app.customers.record_schemas import CustomerView as Customer360
from app.customers.schemas import EventType, StoredEvent
from app.customers.service import CustomerNotFound, customer_events
from app.errors import NotFound, ServiceError
from app.modelops import backtest as backtests
from app.modelops import service as modelops
from app.modelops.monitoring import latest_run
from app.modelops.schemas import BacktestReport, MonitoringReport
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope, list_scores
from app.scoring.schemas import StoredScore
from app.security.pseudonyms import Pseudonymizer
from app.value.policy import TierPolicy

PAGE_SIZE = 20
# Profile events are partial (fields left out are unchanged): the latest few are read to find
# the customer's branch and relationship manager.
PROFILE_DEPTH = 20


@dataclass(frozen=True, slots=True)
class Paging:
    """Where a table is: its page (from 1), and whether there is another before or after."""

    page: int
    has_previous: bool
    has_next: bool

    @classmethod
    def of(cls, page: int, total: int) -> Paging:
        """The paging of page ``page`` among ``total`` rows."""
        return cls(page=page, has_previous=page > 1, has_next=page * PAGE_SIZE < total)


@dataclass(frozen=True, slots=True)
class Queue:
    """The alerts and complaints a staff member works on."""

    alerts: list[AlertSummary]
    alert_paging: Paging
    complaints: list[ComplaintOut]
    complaint_paging: Paging


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A customer's page: where they belong, their trail, their latest scores, and from the
    other domains their 360 (holdings, tiers), complaints, contacts and next best actions."""

    customer_id: str
    branch: str | None
    relationship_manager: str | None
    events: list[StoredEvent]
    event_paging: Paging
    latest_scores: list[StoredScore]
    record: Customer360 | None  # None: no monthly aggregates or stages kept for it yet
    complaints: list[ComplaintBrief]
    contacts: list[ContactOut]
    channel: ContactChannel
    actions: NextBestActions | None
    actions_missing: str | None  # why there are no next best actions (the service's refusal)


@dataclass(frozen=True, slots=True)
class CustomerSources:
    """What the customer page asks of the domains beyond the session: the 360's settings and
    the next-best-action service the app was built with."""

    index_weights: IndexWeights
    tier_policy: TierPolicy
    next_best_actions: NextBestActionService


@dataclass(frozen=True, slots=True)
class Reader:
    """How to read one tenant's rows: its scope and the customer-id pseudonymiser."""

    pseudonymizer: Pseudonymizer | None

    def scope(self, user: ConsoleUser) -> TenantScope:
        """The rows of the user's tenant only, whatever the API's isolation setting."""
        return TenantScope(user.tenant)

    def stored_ids(self, user: ConsoleUser, customer_id: str) -> list[str]:
        """The forms a customer id is stored under for this tenant."""
        if self.pseudonymizer is None:
            return [customer_id]
        return self.pseudonymizer.lookup_forms(customer_id, tenant=user.tenant)


# Pages beyond the queue and the customer page, and the roles that see them (administrators
# see every page). A role without it gets the same 404 as a page that does not exist.
PAGE_ROLES: dict[str, frozenset[StaffRole]] = {
    "pyramid": frozenset({StaffRole.BRANCH_SUPERVISOR, StaffRole.ADMINISTRATOR}),
    "prospects": frozenset({StaffRole.BRANCH_SUPERVISOR, StaffRole.ADMINISTRATOR}),
    "models": frozenset({StaffRole.MODEL_OWNER, StaffRole.ADMINISTRATOR}),
    "audit": frozenset({StaffRole.ADMINISTRATOR}),
    # Campaigns target the tenant's whole book: those who run the branches' and the bank's.
    "campaigns": frozenset({StaffRole.BRANCH_SUPERVISOR, StaffRole.ADMINISTRATOR}),
}


def can_see(user: ConsoleUser, page: str) -> bool:
    """Whether the user's roles open this page."""
    return bool(user.roles & PAGE_ROLES[page])


def require_page(user: ConsoleUser, page: str) -> None:
    """404 for a page the user's roles do not open (as for a page that does not exist)."""
    if not can_see(user, page):
        raise NotFound("no such page")


def offset(page: int) -> int:
    """The first row of a page."""
    return (page - 1) * PAGE_SIZE


def my_queue(
    session: Session, *, user: ConsoleUser, reader: Reader, alert_page: int, complaint_page: int
) -> Queue:
    """Open alerts, those the user acknowledged, and the complaints the user may see."""
    alert_items: list[AlertSummary] = []
    alert_paging = Paging(page=alert_page, has_previous=False, has_next=False)
    if user.roles & {StaffRole.RELATIONSHIP_MANAGER, StaffRole.BRANCH_SUPERVISOR} or (
        StaffRole.ADMINISTRATOR in user.roles
    ):
        mine = alerts.list_alerts(
            session,
            status=AlertStatus.ACKNOWLEDGED,
            owner=user.principal.client_id,
            limit=PAGE_SIZE,
            offset=offset(alert_page),
            tenant=reader.scope(user),
        )
        opened = alerts.list_alerts(
            session,
            status=AlertStatus.OPEN,
            limit=PAGE_SIZE,
            offset=offset(alert_page),
            tenant=reader.scope(user),
        )
        alert_items = [*mine.items, *opened.items]
        alert_paging = Paging.of(alert_page, max(mine.total, opened.total))
    complaints = casework.list_complaints(
        session,
        act=acting_as(user, session, None),
        status=None,
        mine=False,
        limit=PAGE_SIZE,
        offset=offset(complaint_page),
    )
    return Queue(
        alerts=alert_items,
        alert_paging=alert_paging,
        complaints=complaints.items,
        complaint_paging=Paging.of(complaint_page, complaints.total),
    )


@dataclass(frozen=True, slots=True)
class Routed:
    """Routed alerts the user may see (their branch's and their own), filtered by state."""

    items: list[AssignmentOut]
    paging: Paging
    status: AssignmentStatus | None


def acting_as(user: ConsoleUser, session: Session, request_id: str | None) -> casework.Act:
    """The user as casework's actor: their staff record, acting now."""
    return casework.Act(
        staff=acting_record(session, user=user),
        principal=user.principal.client_id,
        request_id=request_id,
        now=casework.utc_now(),
    )


def routed_alerts(
    session: Session, *, user: ConsoleUser, status: AssignmentStatus | None, page: int
) -> Routed:
    """One page of the routed alerts the user may see, newest first."""
    found = routing.list_assignments(
        session,
        act=acting_as(user, session, None),
        status=status,
        mine=False,
        limit=PAGE_SIZE,
        offset=offset(page),
    )
    return Routed(items=found.items, paging=Paging.of(page, found.total), status=status)


def is_open(complaint: ComplaintOut) -> bool:
    """Whether a complaint's deadline still runs."""
    return complaint.status not in FINAL_STATUSES


def _profile(session: Session, user: ConsoleUser, reader: Reader, customer_id: str) -> Any:
    page = customer_events(
        session,
        customer_id=customer_id,
        event_type=EventType.CUSTOMER_PROFILE,
        limit=PROFILE_DEPTH,
        offset=0,
        tenant=reader.scope(user),
        caller_tenant=user.tenant,
        pseudonymizer=reader.pseudonymizer,
    )
    branch = next((e.payload["branch"] for e in page.items if e.payload.get("branch")), None)
    manager = next(
        (
            e.payload["relationship_manager"]
            for e in page.items
            if e.payload.get("relationship_manager")
        ),
        None,
    )
    return branch, manager


def in_scope(user: ConsoleUser, *, branch: str | None, manager: str | None) -> bool:
    """Cross-branch roles see every customer of the tenant, a supervisor their branch's, a
    relationship manager their own customers."""
    if user.sees_every_branch():
        return True
    if StaffRole.BRANCH_SUPERVISOR in user.roles and branch is not None:
        return branch == user.branch
    return StaffRole.RELATIONSHIP_MANAGER in user.roles and manager == user.staff_id


def customer_view(
    session: Session,
    *,
    user: ConsoleUser,
    reader: Reader,
    sources: CustomerSources,
    customer_id: str,
    page: int,
    channel: ContactChannel,
    now: datetime,
) -> CustomerView:
    """A customer's page; 404 alike for an unknown customer and one outside the user's scope."""
    branch, manager = _profile(session, user, reader, customer_id)
    if not in_scope(user, branch=branch, manager=manager):
        raise NotFound("no such customer")
    events = customer_events(
        session,
        customer_id=customer_id,
        event_type=None,
        limit=PAGE_SIZE,
        offset=offset(page),
        tenant=reader.scope(user),
        caller_tenant=user.tenant,
        pseudonymizer=reader.pseudonymizer,
    )
    rows, _ = list_scores(
        session,
        customer_id=reader.stored_ids(user, customer_id),
        limit=50,
        tenant=reader.scope(user),
    )
    if events.total == 0 and not rows:
        raise NotFound("no such customer")
    latest: dict[str, StoredScore] = {}
    for row in rows:  # newest first: the first of each task is its latest
        latest.setdefault(row.task, StoredScore.model_validate(row, from_attributes=True))
    forms = [customer_id, *reader.stored_ids(user, customer_id)]
    actions, actions_missing = _next_best_actions(sources, user, customer_id, channel)
    return CustomerView(
        customer_id=customer_id,
        branch=branch,
        relationship_manager=manager,
        events=events.items,
        event_paging=Paging.of(page, events.total),
        latest_scores=sorted(latest.values(), key=lambda score: score.task),
        record=_record(session, user, reader, sources, customer_id, now),
        complaints=casework.customer_complaints(
            session, tenant=user.tenant, customer_ids=forms, open_only=False, limit=PAGE_SIZE
        ),
        contacts=contact.customer_contacts(
            session, tenant=user.tenant, customer_ids=forms, limit=PAGE_SIZE
        ),
        channel=channel,
        actions=actions,
        actions_missing=actions_missing,
    )


def _record(
    session: Session,
    user: ConsoleUser,
    reader: Reader,
    sources: CustomerSources,
    customer_id: str,
    now: datetime,
) -> Customer360 | None:
    """The API's customer 360 (its events left to the page's own, paged list)."""
    try:
        return record.customer_view(
            session,
            customer_id=customer_id,
            caller_tenant=user.tenant,
            tenant=reader.scope(user),
            pseudonymizer=reader.pseudonymizer,
            events=0,
            index_weights=sources.index_weights,
            tier_policy=sources.tier_policy,
            now=now,
        )
    except CustomerNotFound:
        return None


def _next_best_actions(
    sources: CustomerSources, user: ConsoleUser, customer_id: str, channel: ContactChannel
) -> tuple[NextBestActions | None, str | None]:
    """The customer's next best actions for the channel, or why the service gave none (no
    trail to assess, a model unavailable): the rest of the page still shows."""
    try:
        found = sources.next_best_actions.next_best_actions(
            customer_id=customer_id, tenant=user.tenant, channel=channel
        )
    except ServiceError as error:
        return None, error.detail
    return found, None


def _reason_list(raw: Any) -> list[Any]:
    """The reasons inside one stored explanation, whichever shape it was stored in: a list of
    explanations (the headline's first, or an offered product's), one explanation, or a list
    of reasons."""
    if isinstance(raw, dict):
        if "explanation" in raw:
            return _reason_list(raw["explanation"])
        return _reason_list(raw.get("reasons", []))
    if isinstance(raw, list) and raw and isinstance(raw[0], dict) and "feature" not in raw[0]:
        return _reason_list(raw[0])
    return raw if isinstance(raw, list) else []


def reasons_of(score: StoredScore) -> list[tuple[str, float]]:
    """A stored score's headline reasons as (feature, contribution)."""
    return [
        (str(item["feature"]), float(item["contribution"]))
        for item in _reason_list(score.reasons)
        if isinstance(item, dict) and "feature" in item and "contribution" in item
    ]


def deadline(complaint: ComplaintOut, now: datetime) -> float:
    """Seconds left before the complaint's deadline (negative: overdue)."""
    return (complaint.due_at - now).total_seconds()


@dataclass(frozen=True, slots=True)
class ModelHealth:
    """A champion's drift, calibration, backtest and fairness, each with why it is missing.

    Drift and backtest are the stored reports (computed by ``cvm monitor``, the monitoring
    endpoint, ``cvm backtest`` and each outcome import), never computed per view."""

    task: Task
    version: str | None
    drift: MonitoringReport | None
    drift_missing: str | None
    drift_computed_at: datetime | None
    backtest: BacktestReport | None
    backtest_missing: str | None
    backtest_computed_at: datetime | None
    # Outcomes were imported after the stored backtest was computed.
    backtest_stale: bool
    calibration: list[dict[str, Any]]
    fairness: dict[str, Any] | None


def model_health(session: Session, *, user: ConsoleUser, task: Task) -> ModelHealth:
    """The champion of ``task`` as its owner watches it: the latest stored drift run on the
    user's tenant's scores (PSI), calibration and fairness from its card, and the stored
    backtest on the tenant's imported outcomes."""
    version = modelops.champions(session).get(task)
    tenant = TenantScope(user.tenant)
    drift = stored_backtest = None
    drift_missing = backtest_missing = None
    calibration: list[dict[str, Any]] = []
    fairness = None
    if version is None:
        drift_missing = backtest_missing = f"no {task.value} champion"
    else:
        manifest = modelops.champion_row(session, task=task, version=version).manifest
        calibration = list(manifest.get("metrics", {}).get("test", {}).get("calibration", []))
        card = manifest.get("card", {}).get("quantitative_analyses", {})
        fairness = card.get("fairness") if card.get("fairness", {}).get("applicable") else None
        drift = latest_run(session, task=task, version=version, tenant=tenant)
        if drift is None:
            drift_missing = "no drift run stored yet"
        stored_backtest = backtests.latest_backtest(
            session, task=task, version=version, tenant=tenant
        )
        if stored_backtest is None:
            backtest_missing = "no backtest stored yet"
    return ModelHealth(
        task=task,
        version=version,
        drift=drift.report if drift else None,
        drift_missing=drift_missing,
        drift_computed_at=drift.computed_at if drift else None,
        backtest=stored_backtest.report if stored_backtest else None,
        backtest_missing=backtest_missing,
        backtest_computed_at=stored_backtest.computed_at if stored_backtest else None,
        backtest_stale=stored_backtest.stale if stored_backtest else False,
        calibration=calibration,
        fairness=fairness,
    )


@dataclass(frozen=True, slots=True)
class CampaignView:
    """A campaign's page: its definition, and the pre-launch check (a draft) or the report
    (launched)."""

    campaign: CampaignOut
    check: PowerCheck | None
    report: CampaignReport | None
    # The report's chart (inline SVG) in the reader's language.
    chart: str | None = None


def campaign_view(
    session: Session,
    *,
    user: ConsoleUser,
    campaign_id: int,
    policy: ContactPolicy,
    now: datetime,
    language: str,
    translate: Callable[[str], str],
) -> CampaignView:
    """A campaign of the user's tenant (404 for another tenant's) with its check, or its
    stored report and chart (recomputed only when responses arrived since)."""
    campaign = campaigns.get_campaign(session, tenant=user.tenant, campaign_id=campaign_id)
    if campaign.status is CampaignStatus.DRAFT:
        check = campaigns.check_campaign(
            session, tenant=user.tenant, campaign_id=campaign_id, policy=policy, now=now
        )
        return CampaignView(campaign=campaign, check=check, report=None)
    found = campaigns.stored_report(
        session,
        tenant=user.tenant,
        campaign_id=campaign_id,
        now=now,
        language=language,
        translate=translate,
    )
    return CampaignView(campaign=campaign, check=None, report=found.report, chart=found.chart)
