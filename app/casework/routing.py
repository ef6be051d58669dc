"""Alert routing: each churn alert goes to the person who looks after the customer.

The order: the relationship manager on the customer's profile (read through the customers
domain), their backups in order while they are away or full, the branch queue, the central
queue. Queues are round robin by load: the member holding the fewest open alerts below the
capacity takes the next one (ties: who was assigned longest ago, then by id), so K alerts over
n free members give each K/n ± 1. An alert not accepted in time goes to the assignee's
supervisor (``cvm casework tick``). Accepting acknowledges the alert in the alerts domain, so
its owner is the accepting credential. Every change appends to the assignment's trail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import ColumnElement, String, and_, case, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.alerts import service as alerts
from app.alerts.schemas import AcknowledgeRequest
from app.alerts.service import AlertRef
from app.alerts.states import AlertStatus
from app.casework import staff as directory
from app.casework.errors import AssignmentRefused, NotAllowed, TransitionNotAllowed
from app.casework.schemas import AssignmentEventOut, AssignmentOut, AssignmentPage
from app.casework.service import Act, newest_first_page
from app.casework.states import (
    CROSS_BRANCH_ROLES,
    OPEN_ASSIGNMENT_STATUSES,
    AlertReason,
    AssignmentEventKind,
    AssignmentStatus,
    RoutedVia,
    StaffRole,
)
from app.casework.tables import AlertAssignment, AssignmentEvent, Staff
from app.config import Settings
from app.customers.service import service_profile
from app.db.session import writing
from app.errors import NotFound
from app.notifications.service import CASEWORK_DIGEST, CASEWORK_ROUTED, branch_recipient
from app.scoring.repository import TenantScope

SYSTEM = "system"
CENTRAL_QUEUE = "central queue"
# Supervisors followed up the chain when looking for one who is in.
MAX_CHAIN = 16
OPEN_VALUES = [s.value for s in OPEN_ASSIGNMENT_STATUSES]


@dataclass(frozen=True)
class RoutingPolicy:
    """How long an assignee has to accept, how many open alerts one holds, the central queue."""

    accept_within: timedelta = timedelta(hours=24)
    capacity: int = 50
    central_branch: str = "central"
    # E-mail the assignee (and the branch's addresses) of each alert routed or moved to them.
    notify: bool = False
    branch_recipients: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # (tenant, branch) pairs with a webhook of their own: each alert routed or moved to the
    # branch's staff is posted there too (other branches' alerts reach the tenant's webhook).
    webhook_branches: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingPolicy:
        """The policy the settings describe."""
        return cls(
            accept_within=timedelta(hours=settings.casework_alert_accept_hours),
            capacity=settings.casework_alert_capacity,
            central_branch=settings.casework_central_branch,
            notify=settings.email_enabled,
            branch_recipients={
                (tenant, branch): tuple(branch_route.email_recipients)
                for tenant, route in settings.notification_routes.items()
                for branch, branch_route in route.branches.items()
            },
            webhook_branches=frozenset(
                (tenant, branch)
                for tenant, route in settings.notification_routes.items()
                for branch, branch_route in route.branches.items()
                if branch_route.webhook_url is not None
            ),
        )


@dataclass(frozen=True, slots=True)
class QueueMember:
    """A queue member as round robin sees them."""

    staff_id: str
    load: int
    last_assigned_at: datetime | None


def pick_least_loaded(members: Iterable[QueueMember], *, capacity: int) -> str | None:
    """Round robin by load: the member with the fewest open alerts below ``capacity``; ties go
    to who was assigned longest ago (never first), then to the smaller id. None when all are
    full."""
    free = [m for m in members if m.load < capacity]
    if not free:
        return None
    chosen = min(
        free,
        key=lambda m: (
            m.load,
            m.last_assigned_at is not None,
            m.last_assigned_at or datetime.min,
            m.staff_id,
        ),
    )
    return chosen.staff_id


# --- reading the directory and the loads ------------------------------------------------------


def _assignments(tenant: str | None) -> ColumnElement[bool]:
    return TenantScope(tenant).condition(AlertAssignment.tenant)


def _members(
    session: Session, tenant: str | None, staff_ids: Sequence[str]
) -> dict[str, QueueMember]:
    """Open loads and latest assignment times of these staff members."""
    a = AlertAssignment
    rows = session.execute(
        select(
            a.assignee_id,
            func.sum(case((a.status.in_(OPEN_VALUES), 1), else_=0)),
            func.max(a.assigned_at),
        )
        .where(_assignments(tenant), a.assignee_id.in_(staff_ids))
        .group_by(a.assignee_id)
    ).all()
    found = {row[0]: (int(row[1] or 0), row[2]) for row in rows}
    return {sid: QueueMember(sid, *found.get(sid, (0, None))) for sid in staff_ids}


def _in(session: Session, staff: Staff, today: date) -> bool:
    return staff.active and not directory.is_absent(session, staff, today)


def _queue(session: Session, tenant: str | None, branch: str, today: date) -> list[Staff]:
    """The relationship managers of a branch who are in today."""
    found = session.scalars(
        select(Staff)
        .where(
            TenantScope(tenant).condition(Staff.tenant),
            Staff.branch == branch,
            cast(Staff.roles, String).like(f'%"{StaffRole.RELATIONSHIP_MANAGER.value}"%'),
        )
        .order_by(Staff.staff_id)
    )
    return [staff for staff in found if _in(session, staff, today)]


@dataclass
class _Route:
    """Where an alert goes and why the earlier choices were passed by."""

    assignee: str | None
    via: RoutedVia
    passed: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join([*self.passed, f"via {self.via.value}"])


def _direct(
    session: Session,
    staff: Staff | None,
    tenant: str | None,
    policy: RoutingPolicy,
    today: date,
    passed: list[str],
) -> bool:
    """Whether this person can take one more alert now (noting why not)."""
    if staff is None:
        return False
    if not _in(session, staff, today):
        passed.append(f"{staff.staff_id} is away or inactive")
        return False
    load = _members(session, tenant, [staff.staff_id])[staff.staff_id].load
    if load >= policy.capacity:
        passed.append(f"{staff.staff_id} holds {load} open alerts (capacity)")
        return False
    return True


def _from_queue(
    session: Session, tenant: str | None, branch: str, policy: RoutingPolicy, today: date
) -> str | None:
    members = _queue(session, tenant, branch, today)
    loads = _members(session, tenant, [m.staff_id for m in members])
    return pick_least_loaded(loads.values(), capacity=policy.capacity)


def choose(
    session: Session,
    *,
    tenant: str | None,
    manager_id: str | None,
    branch: str | None,
    policy: RoutingPolicy,
    today: date,
) -> tuple[_Route, str]:
    """Who takes a customer's alert, and the branch it belongs to."""
    passed: list[str] = []
    manager = None
    if manager_id is None:
        passed.append("no relationship manager on the customer's profile")
    else:
        manager = directory.find_staff(session, tenant=tenant, staff_id=manager_id)
        if manager is None:
            passed.append(f"relationship manager {manager_id} is not in the directory")
    home = branch or (manager.branch if manager else None) or policy.central_branch
    if _direct(session, manager, tenant, policy, today, passed):
        assert manager is not None
        return _Route(manager.staff_id, RoutedVia.RELATIONSHIP_MANAGER, passed), home
    for backup_id in manager.backups if manager else []:
        backup = directory.find_staff(session, tenant=tenant, staff_id=backup_id)
        if _direct(session, backup, tenant, policy, today, passed):
            return _Route(backup_id, RoutedVia.BACKUP, passed), home
    if home != policy.central_branch:
        chosen = _from_queue(session, tenant, home, policy, today)
        if chosen is not None:
            return _Route(chosen, RoutedVia.BRANCH_QUEUE, passed), home
        passed.append(f"no one free in branch {home}'s queue")
    chosen = _from_queue(session, tenant, policy.central_branch, policy, today)
    if chosen is None:
        passed.append("no one free in the central queue: waiting there")
    return _Route(chosen, RoutedVia.CENTRAL_QUEUE, passed), home


# --- the trail and the wire shape --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on an assignment: a staff member through a credential, or the system."""

    staff_id: str = SYSTEM
    principal: str | None = None
    request_id: str | None = None


def _audit(
    session: Session,
    assignment: AlertAssignment,
    kind: AssignmentEventKind,
    actor: Actor,
    *,
    now: datetime,
    from_value: str | None = None,
    to_value: str | None = None,
    reason: str | None = None,
) -> None:
    session.add(
        AssignmentEvent(
            assignment_id=assignment.id,
            tenant=assignment.tenant,
            kind=kind.value,
            at=now,
            actor=actor.staff_id,
            principal=actor.principal,
            from_value=from_value,
            to_value=to_value,
            reason=reason,
            request_id=actor.request_id,
        )
    )


def assignment_histories(
    session: Session, assignment_ids: Sequence[int]
) -> dict[int, list[AssignmentEvent]]:
    """The trails of these assignments, oldest entry first, in one read."""
    found: dict[int, list[AssignmentEvent]] = {key: [] for key in assignment_ids}
    if assignment_ids:
        for event in session.scalars(
            select(AssignmentEvent)
            .where(AssignmentEvent.assignment_id.in_(assignment_ids))
            .order_by(AssignmentEvent.id)
        ):
            found[event.assignment_id].append(event)
    return found


def assignment_out(
    session: Session,
    assignment: AlertAssignment,
    history: Sequence[AssignmentEvent] | None = None,
) -> AssignmentOut:
    """A stored assignment with its trail, oldest entry first (read here unless given, as a
    page's are, read at once by ``assignment_histories``)."""
    if history is None:
        history = assignment_histories(session, [assignment.id])[assignment.id]
    return AssignmentOut(
        alert_id=assignment.alert_id,
        customer_id=assignment.customer_id,
        reason=AlertReason(assignment.reason),
        status=AssignmentStatus(assignment.status),
        branch=assignment.branch,
        assignee=assignment.assignee_id,
        routed_via=RoutedVia(assignment.routed_via),
        assigned_at=assignment.assigned_at,
        accept_by=assignment.accept_by,
        accepted_at=assignment.accepted_at,
        accepted_by=assignment.accepted_by,
        closed_at=assignment.closed_at,
        history=[AssignmentEventOut.model_validate(e) for e in history],
    )


# --- routing new alerts, keeping up with the alerts domain, the acceptance sweep -------------


@dataclass
class RoutingSummary:
    """What one routing pass did."""

    routed: dict[RoutedVia, int] = field(default_factory=dict)
    accepted: int = 0
    closed: int = 0
    escalated: int = 0
    stayed: int = 0

    @property
    def total_routed(self) -> int:
        """Alerts routed in all."""
        return sum(self.routed.values())


def route_alert(
    session: Session,
    *,
    alert: AlertRef,
    policy: RoutingPolicy,
    now: datetime,
    reason: AlertReason = AlertReason.CHURN,
) -> AlertAssignment:
    """Assign one alert (flushed, not committed)."""
    profile = service_profile(session, stored_customer_id=alert.customer_id, tenant=alert.tenant)
    route, branch = choose(
        session,
        tenant=alert.tenant,
        manager_id=profile.relationship_manager,
        branch=profile.branch,
        policy=policy,
        today=now.date(),
    )
    assignment = AlertAssignment(
        tenant=alert.tenant,
        alert_id=alert.id,
        customer_id=alert.customer_id,
        reason=reason.value,
        status=AssignmentStatus.ASSIGNED.value,
        branch=branch,
        assignee_id=route.assignee,
        routed_via=route.via.value,
        assigned_at=now,
        accept_by=now + policy.accept_within,
        updated_at=now,
    )
    session.add(assignment)
    session.flush()
    _audit(
        session,
        assignment,
        AssignmentEventKind.ROUTED,
        Actor(),
        now=now,
        to_value=route.assignee or CENTRAL_QUEUE,
        reason=route.reason,
    )
    _announce(session, assignment, policy, reason=route.reason)
    session.flush()
    return assignment


def _announce(
    session: Session, assignment: AlertAssignment, policy: RoutingPolicy, *, reason: str
) -> None:
    """E-mail the new assignee and the branch's addresses, and post to the branch's webhook
    when it has one (one message each; the ids derive from the alert, the recipient and the
    time, so a retried transaction queues nothing new)."""
    recipients: list[str] = []
    if policy.notify and assignment.assignee_id is not None:
        staff = directory.find_staff(
            session, tenant=assignment.tenant, staff_id=assignment.assignee_id
        )
        if staff is not None:
            recipients.append(staff.email)
    if assignment.tenant is not None:
        recipients.extend(policy.branch_recipients.get((assignment.tenant, assignment.branch), ()))
    payload = {
        "alert_id": assignment.alert_id,
        "customer_id": assignment.customer_id,
        "branch": assignment.branch,
        "assignee": assignment.assignee_id,
        "accept_by": assignment.accept_by.isoformat(timespec="minutes"),
        "reason": reason,
    }
    stamp = assignment.assigned_at.isoformat()
    channels = [("email", r) for r in dict.fromkeys(recipients) if policy.notify]
    if (assignment.tenant, assignment.branch) in policy.webhook_branches:
        channels.append(("webhook", branch_recipient(assignment.branch)))
    for channel, recipient in channels:
        alerts.queue_email(
            session,
            message_id=str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"cvm:routed:{assignment.id}:{recipient}:{stamp}")
            ),
            recipient=recipient,
            kind=CASEWORK_ROUTED,
            payload=payload,
            tenant=assignment.tenant,
            now=assignment.assigned_at,
            channel=channel,
        )


def route_new_alerts(
    session: Session,
    *,
    policy: RoutingPolicy,
    now: datetime,
    tenant: TenantScope | None = None,
    page: int = 500,
) -> RoutingSummary:
    """Close or accept assignments whose alert moved on, then route every open alert without
    one (of one tenant, or all). Safe to run concurrently: a second router's insert of the
    same alert is skipped."""
    writing(session)  # it reads the open alerts before it assigns them
    summary = RoutingSummary()
    _follow_alerts(session, now=now, summary=summary, tenant=tenant)
    after = 0
    while batch := alerts.open_alert_refs(session, after_id=after, limit=page, tenant=tenant):
        after = batch[-1].id
        known = set(
            session.scalars(
                select(AlertAssignment.alert_id).where(
                    AlertAssignment.alert_id.in_([a.id for a in batch])
                )
            )
        )
        for alert in batch:
            if alert.id in known:
                continue
            try:
                with session.begin_nested():
                    assignment = route_alert(
                        session,
                        alert=alert,
                        policy=policy,
                        now=now,
                        reason=AlertReason(alert.reason),
                    )
            except IntegrityError:
                continue  # another router took it, or an open one exists for the customer
            via = RoutedVia(assignment.routed_via)
            summary.routed[via] = summary.routed.get(via, 0) + 1
    session.commit()
    return summary


def _follow_alerts(
    session: Session, *, now: datetime, summary: RoutingSummary, tenant: TenantScope | None
) -> None:
    """Open assignments whose alert was resolved are closed; acknowledged through the alerts
    API, accepted by that credential."""
    query = select(AlertAssignment).where(AlertAssignment.status.in_(OPEN_VALUES))
    if tenant is not None:
        query = query.where(tenant.condition(AlertAssignment.tenant))
    open_ones = session.scalars(query).all()
    refs = alerts.alert_refs(session, alert_ids=[a.alert_id for a in open_ones])
    for assignment in open_ones:
        ref = refs.get(assignment.alert_id)
        if ref is None or ref.status == AlertStatus.RESOLVED:
            assignment.status = AssignmentStatus.CLOSED.value
            assignment.closed_at = assignment.updated_at = now
            _audit(
                session,
                assignment,
                AssignmentEventKind.CLOSED,
                Actor(),
                now=now,
                reason="the alert was resolved",
            )
            summary.closed += 1
        elif ref.status == AlertStatus.ACKNOWLEDGED and assignment.status != "accepted":
            assignment.status = AssignmentStatus.ACCEPTED.value
            assignment.accepted_at = assignment.updated_at = now
            assignment.accepted_by = (ref.owner or "")[:64] or None
            _audit(
                session,
                assignment,
                AssignmentEventKind.ACCEPTED,
                Actor(),
                now=now,
                to_value=assignment.accepted_by,
                reason="acknowledged through the alerts API",
            )
            summary.accepted += 1
    session.flush()


def sweep_acceptance(session: Session, *, policy: RoutingPolicy, now: datetime) -> RoutingSummary:
    """Alerts not accepted in time go to the assignee's supervisor (the first one up the chain
    who is in); without one, to the central queue; failing that they stay, and the clock
    restarts. Each timeout fires once per period."""
    writing(session)  # it reads the routed alerts before it escalates them
    summary = RoutingSummary()
    due = session.scalars(
        select(AlertAssignment)
        .where(
            AlertAssignment.status == AssignmentStatus.ASSIGNED.value,
            AlertAssignment.accept_by <= now,
        )
        .order_by(AlertAssignment.id)
        .with_for_update(skip_locked=True)
    ).all()
    for assignment in due:
        hours = policy.accept_within.total_seconds() / 3600
        target = _supervisor_of(session, assignment, now.date())
        via = RoutedVia.SUPERVISOR
        if target is None:
            target = _from_queue(
                session, assignment.tenant, policy.central_branch, policy, now.date()
            )
            via = RoutedVia.CENTRAL_QUEUE
        if target is None or target == assignment.assignee_id:
            assignment.accept_by = now + policy.accept_within
            _audit(
                session,
                assignment,
                AssignmentEventKind.TIMED_OUT,
                Actor(),
                now=now,
                from_value=assignment.assignee_id,
                to_value=assignment.assignee_id,
                reason=f"not accepted within {hours:g} h; no supervisor or queue member is in",
            )
            summary.stayed += 1
            continue
        _move(
            session,
            assignment,
            target,
            via,
            AssignmentEventKind.ESCALATED,
            Actor(),
            now=now,
            reason=f"not accepted within {hours:g} h",
            policy=policy,
        )
        summary.escalated += 1
    session.commit()
    return summary


def _supervisor_of(session: Session, assignment: AlertAssignment, today: date) -> str | None:
    """The first supervisor up the assignee's chain who is in."""
    if assignment.assignee_id is None:
        return None
    current = directory.find_staff(
        session, tenant=assignment.tenant, staff_id=assignment.assignee_id
    )
    for _ in range(MAX_CHAIN):
        if current is None or current.supervisor_id is None:
            return None
        current = directory.find_staff(
            session, tenant=assignment.tenant, staff_id=current.supervisor_id
        )
        if current is not None and _in(session, current, today):
            return current.staff_id
    return None


def _move(
    session: Session,
    assignment: AlertAssignment,
    to: str,
    via: RoutedVia,
    kind: AssignmentEventKind,
    actor: Actor,
    *,
    now: datetime,
    reason: str,
    policy: RoutingPolicy,
) -> None:
    _audit(
        session,
        assignment,
        kind,
        actor,
        now=now,
        from_value=assignment.assignee_id or CENTRAL_QUEUE,
        to_value=to,
        reason=reason,
    )
    assignment.assignee_id = to
    assignment.routed_via = via.value
    assignment.assigned_at = now
    assignment.accept_by = now + policy.accept_within
    assignment.updated_at = now
    _announce(session, assignment, policy, reason=reason)


# --- by hand: accept, reassign, escalate ------------------------------------------------------


def _actor(act: Act) -> Actor:
    return Actor(act.staff.staff_id, act.principal, act.request_id)


def _roles(act: Act) -> set[StaffRole]:
    return {StaffRole(role) for role in act.staff.roles}


def _visible(act: Act) -> ColumnElement[bool]:
    conditions = [_assignments(act.staff.tenant)]
    if not _roles(act) & CROSS_BRANCH_ROLES:
        conditions.append(
            or_(
                AlertAssignment.branch == act.staff.branch,
                AlertAssignment.assignee_id == act.staff.staff_id,
            )
        )
    return and_(*conditions)


def _load(session: Session, act: Act, alert_id: int) -> AlertAssignment:
    """The assignment of this alert, row-locked; 404 when not the tenant's or not routed;
    403 for another branch's."""
    assignment = session.scalars(
        select(AlertAssignment)
        .where(AlertAssignment.alert_id == alert_id, _assignments(act.staff.tenant))
        .with_for_update()
    ).one_or_none()
    if assignment is None:
        raise NotFound(f"no routed alert {alert_id}")
    mine = act.staff.staff_id == assignment.assignee_id
    if not (mine or act.staff.branch == assignment.branch or _roles(act) & CROSS_BRANCH_ROLES):
        raise NotAllowed(f"alert {alert_id} belongs to branch {assignment.branch!r}, not yours")
    return assignment


def _check_assigned(assignment: AlertAssignment, doing: str) -> None:
    if assignment.status != AssignmentStatus.ASSIGNED.value:
        raise TransitionNotAllowed(
            f"cannot {doing}: the alert is {assignment.status}, not assigned",
            extra={"state": assignment.status},
        )


def get_assignment(session: Session, *, act: Act, alert_id: int) -> AssignmentOut:
    """One routed alert with its trail."""
    return assignment_out(session, _load(session, act, alert_id))


def list_assignments(
    session: Session,
    *,
    act: Act,
    status: AssignmentStatus | None,
    mine: bool,
    limit: int,
    offset: int,
) -> AssignmentPage:
    """Routed alerts the caller may see (their branch's and their own; every branch's for
    cross-branch roles), newest first."""
    conditions = [_visible(act)]
    if mine:
        conditions.append(AlertAssignment.assignee_id == act.staff.staff_id)
    if status is not None:
        conditions.append(AlertAssignment.status == status.value)
    total, found = newest_first_page(
        session, AlertAssignment, conditions=conditions, limit=limit, offset=offset
    )
    histories = assignment_histories(session, [a.id for a in found])
    return AssignmentPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[assignment_out(session, a, histories[a.id]) for a in found],
    )


def accept(session: Session, *, act: Act, alert_id: int, note: str | None) -> AssignmentOut:
    """The assignee (or, from the central queue, any relationship manager) accepts: the alert
    is acknowledged in their credential's name, in the same transaction."""
    assignment = _load(session, act, alert_id)
    _check_assigned(assignment, "accept")
    me = act.staff.staff_id
    if assignment.assignee_id is None:
        if StaffRole.RELATIONSHIP_MANAGER not in _roles(act):
            raise NotAllowed("only a relationship manager takes an alert from the central queue")
    elif assignment.assignee_id != me:
        raise NotAllowed(f"alert {alert_id} is assigned to {assignment.assignee_id}, not you")
    _audit(
        session,
        assignment,
        AssignmentEventKind.ACCEPTED,
        _actor(act),
        now=act.now,
        from_value=assignment.assignee_id or CENTRAL_QUEUE,
        to_value=me,
        reason=note,
    )
    assignment.status = AssignmentStatus.ACCEPTED.value
    assignment.assignee_id = assignment.accepted_by = me
    assignment.accepted_at = assignment.updated_at = act.now
    session.flush()
    if alerts.alert_refs(session, alert_ids=[alert_id])[alert_id].status != AlertStatus.OPEN:
        # Accepted again after a reassignment: the alert was acknowledged the first time.
        session.commit()
        return assignment_out(session, assignment)
    alerts.acknowledge_alert(  # commits both
        session,
        alert_id=alert_id,
        request=AcknowledgeRequest(note=note),
        actor=act.principal,
        request_id=act.request_id,
        now=act.now,
        tenant=TenantScope(assignment.tenant),
    )
    return assignment_out(session, assignment)


def _may_move(act: Act, assignment: AlertAssignment) -> None:
    """The assignee, a branch supervisor of the alert's branch, or a cross-branch role."""
    supervises = (
        StaffRole.BRANCH_SUPERVISOR in _roles(act) and act.staff.branch == assignment.branch
    )
    if not (
        act.staff.staff_id == assignment.assignee_id
        or supervises
        or _roles(act) & CROSS_BRANCH_ROLES
    ):
        raise NotAllowed("only the assignee, the branch's supervisor or head office may do this")


def reassign(
    session: Session,
    *,
    act: Act,
    alert_id: int,
    to: str,
    reason: str,
    policy: RoutingPolicy,
) -> AssignmentOut:
    """Hand an open alert to someone else, saying why (422: unknown staff; 409: away,
    inactive or already theirs). A person's decision: capacity does not bind it. An accepted
    alert goes back to waiting: the new assignee must accept it, before a new deadline."""
    assignment = _load(session, act, alert_id)
    if assignment.status != AssignmentStatus.ACCEPTED.value:
        _check_assigned(assignment, "reassign")
    _may_move(act, assignment)
    target = directory.require_staff(session, tenant=act.staff.tenant, staff_id=to, field="to")
    if target.staff_id == assignment.assignee_id:
        raise AssignmentRefused(f"{to} already has the alert")
    if not _in(session, target, act.now.date()):
        raise AssignmentRefused(f"cannot reassign to {to}: away or inactive")
    _move(
        session,
        assignment,
        target.staff_id,
        RoutedVia.REASSIGNED,
        AssignmentEventKind.REASSIGNED,
        _actor(act),
        now=act.now,
        reason=reason,
        policy=policy,
    )
    # Taken from someone who had accepted it: the new assignee accepts again, on a new clock.
    assignment.status = AssignmentStatus.ASSIGNED.value
    assignment.accepted_at = assignment.accepted_by = None
    session.commit()
    return assignment_out(session, assignment)


def escalate(
    session: Session, *, act: Act, alert_id: int, reason: str, policy: RoutingPolicy
) -> AssignmentOut:
    """Send a not yet accepted alert to the assignee's supervisor (the first one up who is
    in); 409 when there is none."""
    assignment = _load(session, act, alert_id)
    _check_assigned(assignment, "escalate")
    _may_move(act, assignment)
    target = _supervisor_of(session, assignment, act.now.date())
    if target is None:
        raise AssignmentRefused("no supervisor above the assignee is in to take the alert")
    _move(
        session,
        assignment,
        target,
        RoutedVia.SUPERVISOR,
        AssignmentEventKind.ESCALATED,
        _actor(act),
        now=act.now,
        reason=reason,
        policy=policy,
    )
    session.commit()
    return assignment_out(session, assignment)


# --- the daily digest ---------------------------------------------------------------------------


def compose_digests(session: Session, *, now: datetime) -> int:
    """Queue one e-mail per staff member holding open alerts, listing them: once per person
    and day (the message id is derived from the tenant, the person and the day, so a second
    run that day queues nothing). How many were queued."""
    writing(session)  # it reads the open alerts before it queues the digests
    day = now.date().isoformat()
    a = AlertAssignment
    holders = session.execute(
        select(a.tenant, a.assignee_id)
        .where(a.status.in_(OPEN_VALUES), a.assignee_id.is_not(None))
        .group_by(a.tenant, a.assignee_id)
        .order_by(a.tenant, a.assignee_id)
    ).all()
    queued = 0
    for tenant, staff_id in holders:
        staff = (
            directory.find_staff(session, tenant=tenant, staff_id=staff_id) if staff_id else None
        )
        if staff is None or not staff.active:
            continue
        items = session.scalars(
            select(a)
            .where(_assignments(tenant), a.assignee_id == staff_id, a.status.in_(OPEN_VALUES))
            .order_by(a.accept_by, a.id)
        ).all()
        payload = {
            "name": staff.name,
            "day": day,
            "alerts": [
                {
                    "alert_id": item.alert_id,
                    "customer_id": item.customer_id,
                    "status": item.status,
                    "accept_by": item.accept_by.isoformat(timespec="minutes"),
                }
                for item in items
            ],
        }
        message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cvm:digest:{tenant}:{staff_id}:{day}"))
        queued += alerts.queue_email(
            session,
            message_id=message_id,
            recipient=staff.email,
            kind=CASEWORK_DIGEST,
            payload=payload,
            tenant=tenant,
            now=now,
        )
    session.commit()
    return queued
