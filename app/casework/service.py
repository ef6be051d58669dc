"""Complaints: received and owned by the first responder, moved through their states on a
regulator's clock, transferred, escalated, closed, and audited.

The actor of every use case is the staff member the caller's credential acts as (never a
body field); every change appends to the complaint's audit trail in the same transaction,
and the opening and the end of a complaint go into the customer's trail through the
customers domain's intake. Each use case commits once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, String, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.casework import staff as directory
from app.casework.deadlines import PROFILES, DeadlineClock, load_calendars
from app.casework.errors import (
    AssignmentRefused,
    DeadlineRefused,
    NotAllowed,
    TransitionNotAllowed,
)
from app.casework.schemas import (
    CaseEventOut,
    CloseRequest,
    ComplaintBrief,
    ComplaintOut,
    ComplaintPage,
    ComplaintRequest,
    ExtendRequest,
    PauseRequest,
)
from app.casework.states import (
    ACTION_EVENTS,
    CROSS_BRANCH_ROLES,
    FINAL_STATUSES,
    SEVERITY_RANK,
    TRANSITIONS,
    CaseEventKind,
    ComplaintAction,
    ComplaintStatus,
    ExtensionKind,
    StaffRole,
)
from app.casework.tables import AlertAssignment, CaseEvent, Complaint, Staff
from app.config import Settings
from app.customers import schemas as trail
from app.customers.service import record_events
from app.db.session import writing
from app.errors import NotFound
from app.scoring.repository import TenantScope
from app.security.principal import Principal
from app.security.pseudonyms import Pseudonymizer

SYSTEM = "system"
TEAM = "complaints_team"
# Shares of the running time at which the owner is warned, the supervisor warned, and the
# case escalated.
OWNER_WARNING = 0.6
SUPERVISOR_WARNING = 0.8
OVERDUE = 1.0
HANDLING_ROLES = frozenset({StaffRole.COMPLAINTS_TEAM, StaffRole.ADMINISTRATOR})


@dataclass(frozen=True)
class Casework:
    """What the settings decide: the deadline clock and how long closed cases are kept."""

    clock: DeadlineClock
    retention: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Casework:
        """The profile and calendar the settings name."""
        profile = PROFILES[settings.casework_profile]
        calendars = load_calendars(settings.casework_holidays_file)
        if profile.calendar not in calendars:
            raise ValueError(
                f"no holiday calendar {profile.calendar!r} in {settings.casework_holidays_file}"
            )
        return cls(
            clock=DeadlineClock(profile, calendars[profile.calendar]),
            retention=timedelta(days=settings.casework_retention_days),
        )


@dataclass(frozen=True, slots=True)
class Act:
    """Who acts, through which credential, in which request, and when."""

    staff: Staff
    principal: str
    request_id: str | None
    now: datetime


def acting(session: Session, *, principal: Principal, request_id: str, now: datetime) -> Act:
    """The caller as a staff member acting now (403 when the credential is no staff's)."""
    staff = directory.acting_staff(session, principal=principal)
    return Act(staff=staff, principal=principal.client_id, request_id=request_id, now=now)


# --- who may do what -------------------------------------------------------------------------


def _roles(staff: Staff) -> set[StaffRole]:
    return {StaffRole(role) for role in staff.roles}


def _check_visible(staff: Staff, complaint: Complaint) -> None:
    """403 for a case of another branch, unless the staff member is on it or works across
    branches."""
    involved = staff.staff_id in (
        complaint.owner_id,
        complaint.pending_owner_id,
        complaint.received_by,
    )
    if not (involved or staff.branch == complaint.branch or _roles(staff) & CROSS_BRANCH_ROLES):
        raise NotAllowed(
            f"complaint {complaint.id} belongs to branch {complaint.branch!r}, not yours"
        )


def _check_handler(staff: Staff, complaint: Complaint) -> None:
    """403 unless the staff member owns the case or is on the complaints team (or admin)."""
    _check_visible(staff, complaint)
    if staff.staff_id != complaint.owner_id and not _roles(staff) & HANDLING_ROLES:
        raise NotAllowed(
            f"only the owner ({complaint.owner_id}) or the complaints team may do this"
        )


def _check_open(complaint: Complaint, doing: str) -> None:
    if complaint.status in FINAL_STATUSES:
        raise TransitionNotAllowed(
            f"cannot {doing}: the complaint is {complaint.status}",
            extra={"state": complaint.status},
        )


def _has_authority(staff: Staff, complaint: Complaint) -> bool:
    severity = SEVERITY_RANK[trail.Severity(complaint.severity)]
    limit = SEVERITY_RANK[trail.Severity(staff.max_severity)]
    return severity <= limit and complaint.amount_at_stake <= staff.max_amount


def refusal(
    session: Session,
    staff: Staff,
    complaint: Complaint,
    *,
    today: date,
    authority: bool = True,
    absence: bool = True,
) -> str | None:
    """Why this staff member cannot take the case, or None when they can."""
    if staff.staff_id in complaint.implicated:
        return f"{staff.staff_id} is implicated in the complaint"
    if not staff.active:
        return f"{staff.staff_id} is not active"
    if absence and directory.is_absent(session, staff, today):
        return f"{staff.staff_id} is absent"
    if authority and not _has_authority(staff, complaint):
        return f"the complaint is beyond {staff.staff_id}'s authority"
    return None


def _open_load(session: Session, tenant: str | None, staff_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Complaint)
            .where(
                _tenant(tenant),
                Complaint.owner_id == staff_id,
                Complaint.status.not_in([s.value for s in FINAL_STATUSES]),
            )
        )
        or 0
    )


def escalation_target(
    session: Session, complaint: Complaint, *, above: Staff, level: int, today: date
) -> tuple[Staff, int] | None:
    """Who takes the case next: ``above``'s supervisor (from the owner's level), then the
    complaints team member with the fewest open cases; never someone implicated or absent,
    and only someone with the authority for it."""
    if level < 1 and above.supervisor_id is not None:
        supervisor = directory.find_staff(
            session, tenant=complaint.tenant, staff_id=above.supervisor_id
        )
        if supervisor is not None and refusal(session, supervisor, complaint, today=today) is None:
            return supervisor, 1
    if level >= 2:
        return None
    team = session.scalars(
        select(Staff)
        .where(
            _staff_tenant(complaint.tenant),
            cast(Staff.roles, String).like(f'%"{StaffRole.COMPLAINTS_TEAM.value}"%'),
        )
        .order_by(Staff.staff_id)
    )
    eligible = [
        member
        for member in team
        if member.staff_id != above.staff_id
        and refusal(session, member, complaint, today=today) is None
    ]
    if not eligible:
        return None
    chosen = min(eligible, key=lambda m: (_open_load(session, complaint.tenant, m.staff_id),))
    return chosen, 2


# --- storage helpers ------------------------------------------------------------------------


# A table paged newest first by newest_first_page.
CaseRow = TypeVar("CaseRow", Complaint, AlertAssignment)


def _tenant(tenant: str | None) -> ColumnElement[bool]:
    return TenantScope(tenant).condition(Complaint.tenant)


def _staff_tenant(tenant: str | None) -> ColumnElement[bool]:
    return TenantScope(tenant).condition(Staff.tenant)


def _load(session: Session, *, tenant: str | None, complaint_id: int) -> Complaint:
    """The complaint, row-locked for the change; 404 when not the tenant's."""
    complaint = session.scalars(
        select(Complaint).where(Complaint.id == complaint_id, _tenant(tenant)).with_for_update()
    ).one_or_none()
    if complaint is None:
        raise NotFound(f"no complaint {complaint_id}")
    return complaint


def _audit(
    session: Session,
    complaint: Complaint,
    kind: CaseEventKind,
    act: Act | None,
    *,
    now: datetime,
    from_value: str | None = None,
    to_value: str | None = None,
    reason: str | None = None,
) -> None:
    """Append one entry to the complaint's trail."""
    session.add(
        CaseEvent(
            complaint_id=complaint.id,
            tenant=complaint.tenant,
            kind=kind.value,
            at=now,
            actor=act.staff.staff_id if act else SYSTEM,
            principal=act.principal if act else None,
            from_value=from_value,
            to_value=to_value,
            reason=reason,
            request_id=act.request_id if act else None,
        )
    )


def _to_customer_trail(
    session: Session,
    complaint: Complaint,
    *,
    status: trail.ComplaintStatus,
    act: Act,
    pseudonymizer: Pseudonymizer | None,
) -> None:
    """Record the opening or the end of the complaint in the customer's trail, and commit
    (the intake's one commit carries the complaint's changes too)."""
    event = trail.Complaint(
        type=trail.EventType.COMPLAINT,
        event_id=f"casework-{complaint.id}-{status.value}",
        customer_id=complaint.customer_id,
        occurred_at=act.now,
        complaint_id=f"CW-{complaint.id}",
        status=status,
        severity=trail.Severity(complaint.severity),
        category=complaint.category,
    )
    session.flush()
    record_events(
        session,
        events=[event],
        tenant=complaint.tenant,
        request_id=act.request_id or SYSTEM,
        received_at=act.now,
        pseudonymizer=pseudonymizer,
    )


def case_histories(session: Session, complaint_ids: Sequence[int]) -> dict[int, list[CaseEvent]]:
    """The audit trails of these complaints, oldest entry first, in one read."""
    found: dict[int, list[CaseEvent]] = {complaint_id: [] for complaint_id in complaint_ids}
    if complaint_ids:
        for event in session.scalars(
            select(CaseEvent)
            .where(CaseEvent.complaint_id.in_(complaint_ids))
            .order_by(CaseEvent.id)
        ):
            found[event.complaint_id].append(event)
    return found


def complaint_out(
    session: Session, complaint: Complaint, history: Sequence[CaseEvent] | None = None
) -> ComplaintOut:
    """A stored complaint with its audit trail, oldest entry first (read here unless given,
    as a page's are, read at once by ``case_histories``)."""
    if history is None:
        history = case_histories(session, [complaint.id])[complaint.id]
    return ComplaintOut(
        id=complaint.id,
        customer_id=complaint.customer_id,
        channel=complaint.channel,
        category=complaint.category,
        product=complaint.product,
        severity=complaint.severity,
        amount_at_stake=complaint.amount_at_stake,
        description=complaint.description,
        staff_implicated=complaint.implicated,
        status=complaint.status,
        branch=complaint.branch,
        received_by=complaint.received_by,
        owner=complaint.owner_id,
        escalation_level=complaint.escalation_level,
        pending_transfer_to=complaint.pending_owner_id,
        profile=complaint.profile,
        received_at=complaint.received_at,
        clock_started_at=complaint.clock_started_at,
        due_at=complaint.due_at,
        ceiling_at=complaint.ceiling_at,
        milestones={k: datetime.fromisoformat(v) for k, v in complaint.milestones.items()},
        complex_case=complaint.complex_case,
        extensions=complaint.extensions,
        paused_at=complaint.paused_at,
        pause_reason=complaint.pause_reason,
        outcome=complaint.outcome,
        root_cause=complaint.root_cause,
        product_category=complaint.product_category,
        redress_amount=complaint.redress_amount,
        closed_at=complaint.closed_at,
        updated_at=complaint.updated_at,
        history=[CaseEventOut.model_validate(e) for e in history],
    )


def customer_complaints(
    session: Session,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    open_only: bool = True,
    limit: int = 20,
) -> list[ComplaintBrief]:
    """A customer's complaints (any of its id forms) in the tenant, newest first; open ones
    only unless told otherwise."""
    conditions = [_tenant(tenant), Complaint.customer_id.in_(customer_ids)]
    if open_only:
        conditions.append(Complaint.status.not_in([s.value for s in FINAL_STATUSES]))
    found = session.scalars(
        select(Complaint).where(*conditions).order_by(Complaint.id.desc()).limit(limit)
    )
    return [
        ComplaintBrief(
            id=c.id,
            status=ComplaintStatus(c.status),
            severity=trail.Severity(c.severity),
            category=c.category,
            product=c.product,
            owner=c.owner_id,
            received_at=c.received_at,
            due_at=c.due_at,
        )
        for c in found
    ]


# --- use cases ------------------------------------------------------------------------------


def receive_complaint(
    session: Session,
    *,
    casework: Casework,
    act: Act,
    request: ComplaintRequest,
    pseudonymizer: Pseudonymizer | None,
) -> ComplaintOut:
    """Store a complaint owned by its receiver (or, beyond the receiver's authority or when
    the receiver is implicated, by whom it escalates to), with its deadlines."""
    now, receiver, clock = act.now, act.staff, casework.clock
    complaint = Complaint(
        tenant=receiver.tenant,
        customer_id=request.customer_id,
        channel=request.channel.value,
        category=request.category,
        product=request.product,
        severity=request.severity.value,
        amount_at_stake=request.amount_at_stake,
        description=request.description,
        implicated=list(dict.fromkeys(request.staff_implicated)),
        status=ComplaintStatus.RECEIVED.value,
        branch=receiver.branch,
        received_by=receiver.staff_id,
        owner_id=receiver.staff_id,
        escalation_level=0,
        profile=clock.profile.name,
        received_at=now,
        clock_started_at=now,
        due_at=clock.due(now, complex_case=False, extensions=0),
        ceiling_at=clock.ceiling(now),
        milestones={k: v.isoformat() for k, v in clock.milestones(now).items()},
        complex_case=False,
        extensions=0,
        paused_s=0.0,
        updated_at=now,
    )
    session.add(complaint)
    session.flush()
    _audit(session, complaint, CaseEventKind.CREATED, act, now=now, to_value=receiver.staff_id)
    why = refusal(session, receiver, complaint, today=now.date(), absence=False)
    if why is not None:
        target = escalation_target(session, complaint, above=receiver, level=0, today=now.date())
        if target is not None:
            _escalate(session, complaint, target, act, now=now, reason=why)
        elif receiver.staff_id in complaint.implicated:
            session.rollback()
            raise AssignmentRefused(
                f"{why}, and no supervisor or complaints team member can take it"
            )
    _to_customer_trail(
        session,
        complaint,
        status=trail.ComplaintStatus.OPENED,
        act=act,
        pseudonymizer=pseudonymizer,
    )
    return complaint_out(session, complaint)


def _escalate(
    session: Session,
    complaint: Complaint,
    target: tuple[Staff, int],
    act: Act | None,
    *,
    now: datetime,
    reason: str,
) -> None:
    staff, level = target
    _audit(
        session,
        complaint,
        CaseEventKind.ESCALATED,
        act,
        now=now,
        from_value=complaint.owner_id,
        to_value=staff.staff_id,
        reason=reason,
    )
    complaint.owner_id = staff.staff_id
    complaint.escalation_level = level
    complaint.updated_at = now


def has_open_complaint(session: Session, *, tenant: str | None, customer_id: str) -> bool:
    """Whether the customer has a complaint not yet closed or rejected (contact policy)."""
    found = session.scalar(
        select(func.count())
        .select_from(Complaint)
        .where(
            _tenant(tenant),
            Complaint.customer_id == customer_id,
            Complaint.status.not_in([s.value for s in FINAL_STATUSES]),
        )
    )
    return bool(found)


def customers_with_open_complaint(session: Session, *, tenant: str | None) -> set[str]:
    """Every customer of the tenant with a complaint not yet closed or rejected (the contact
    policy over a whole campaign audience)."""
    return set(
        session.scalars(
            select(Complaint.customer_id)
            .where(_tenant(tenant), Complaint.status.not_in([s.value for s in FINAL_STATUSES]))
            .distinct()
        )
    )


def get_complaint(session: Session, *, act: Act, complaint_id: int) -> ComplaintOut:
    """One complaint with its trail (404: not the tenant's; 403: another branch's)."""
    complaint = session.scalars(
        select(Complaint).where(Complaint.id == complaint_id, _tenant(act.staff.tenant))
    ).one_or_none()
    if complaint is None:
        raise NotFound(f"no complaint {complaint_id}")
    _check_visible(act.staff, complaint)
    return complaint_out(session, complaint)


def list_complaints(
    session: Session,
    *,
    act: Act,
    status: ComplaintStatus | None,
    mine: bool,
    limit: int,
    offset: int,
) -> ComplaintPage:
    """The complaints the caller may see (their branch's and their own; every branch's for
    the complaints team, approvers and administrators), newest first."""
    staff = act.staff
    conditions = [_tenant(staff.tenant)]
    if mine:
        conditions.append(Complaint.owner_id == staff.staff_id)
    elif not _roles(staff) & CROSS_BRANCH_ROLES:
        conditions.append(
            or_(
                Complaint.branch == staff.branch,
                Complaint.owner_id == staff.staff_id,
                Complaint.pending_owner_id == staff.staff_id,
            )
        )
    if status is not None:
        conditions.append(Complaint.status == status.value)
    total, found = newest_first_page(
        session, Complaint, conditions=conditions, limit=limit, offset=offset
    )
    histories = case_histories(session, [c.id for c in found])
    return ComplaintPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[complaint_out(session, c, histories[c.id]) for c in found],
    )


def transition(
    session: Session,
    *,
    act: Act,
    complaint_id: int,
    action: ComplaintAction,
    note: str | None = None,
    closing: CloseRequest | None = None,
    pseudonymizer: Pseudonymizer | None = None,
) -> ComplaintOut:
    """Move the complaint one step (409 naming its state when the step is not allowed from
    it); closing records the outcome, rejecting the reason, both in the customer's trail."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    _check_handler(act.staff, complaint)
    allowed_from, to = TRANSITIONS[action]
    current = ComplaintStatus(complaint.status)
    if current not in allowed_from:
        session.rollback()
        raise TransitionNotAllowed(
            f"cannot {action.value} a complaint that is {current.value}; allowed from "
            + ", ".join(sorted(s.value for s in allowed_from)),
            extra={"state": current.value},
        )
    now = act.now
    if closing is not None:
        complaint.outcome = closing.outcome.value
        complaint.root_cause = closing.root_cause
        complaint.product_category = closing.product_category
        complaint.redress_amount = closing.redress_amount
    complaint.status = to.value
    complaint.updated_at = now
    if to in FINAL_STATUSES:
        complaint.closed_at = now
    _audit(
        session,
        complaint,
        ACTION_EVENTS[action],
        act,
        now=now,
        from_value=current.value,
        to_value=to.value,
        reason=note,
    )
    if to in FINAL_STATUSES:
        _to_customer_trail(
            session,
            complaint,
            status=trail.ComplaintStatus.RESOLVED,
            act=act,
            pseudonymizer=pseudonymizer,
        )
    else:
        session.commit()
    return complaint_out(session, complaint)


def request_transfer(
    session: Session, *, act: Act, complaint_id: int, to: str, reason: str
) -> ComplaintOut:
    """Offer the case to another staff member (422: unknown; 409: cannot take it); the owner
    stays accountable until they accept."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    _check_open(complaint, "transfer")
    staff = act.staff
    supervises = StaffRole.BRANCH_SUPERVISOR in _roles(staff) and staff.branch == complaint.branch
    if not supervises:
        _check_handler(staff, complaint)
    target = directory.require_staff(session, tenant=staff.tenant, staff_id=to, field="to")
    if target.staff_id == complaint.owner_id:
        raise AssignmentRefused(f"{to} already owns the complaint")
    why = refusal(session, target, complaint, today=act.now.date())
    if why is not None:
        raise AssignmentRefused(f"cannot transfer to {to}: {why}")
    complaint.pending_owner_id = target.staff_id
    complaint.pending_reason = reason
    complaint.updated_at = act.now
    _audit(
        session,
        complaint,
        CaseEventKind.TRANSFER_REQUESTED,
        act,
        now=act.now,
        from_value=complaint.owner_id,
        to_value=target.staff_id,
        reason=reason,
    )
    session.commit()
    return complaint_out(session, complaint)


def accept_transfer(session: Session, *, act: Act, complaint_id: int) -> ComplaintOut:
    """The offered staff member takes the case (403 for anyone else; 409 with no offer)."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    _check_open(complaint, "accept a transfer")
    if complaint.pending_owner_id is None:
        raise TransitionNotAllowed(
            "no transfer is waiting for acceptance", extra={"state": complaint.status}
        )
    if act.staff.staff_id != complaint.pending_owner_id:
        raise NotAllowed(f"the transfer is offered to {complaint.pending_owner_id}, not you")
    why = refusal(session, act.staff, complaint, today=act.now.date())
    if why is not None:
        raise AssignmentRefused(f"cannot accept: {why}")
    _audit(
        session,
        complaint,
        CaseEventKind.TRANSFERRED,
        act,
        now=act.now,
        from_value=complaint.owner_id,
        to_value=act.staff.staff_id,
        reason=complaint.pending_reason,
    )
    complaint.owner_id = act.staff.staff_id
    complaint.pending_owner_id = None
    complaint.pending_reason = None
    complaint.updated_at = act.now
    session.commit()
    return complaint_out(session, complaint)


def pause(session: Session, *, act: Act, complaint_id: int, request: PauseRequest) -> ComplaintOut:
    """Stop the clock for a whitelisted reason (409 when closed or already paused)."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    _check_handler(act.staff, complaint)
    _check_open(complaint, "pause")
    if complaint.paused_at is not None:
        raise TransitionNotAllowed(
            f"the clock is already paused ({complaint.pause_reason})",
            extra={"state": complaint.status},
        )
    complaint.paused_at = act.now
    complaint.pause_reason = request.reason.value
    complaint.updated_at = act.now
    reason = request.reason.value + (f": {request.note}" if request.note else "")
    _audit(session, complaint, CaseEventKind.PAUSED, act, now=act.now, reason=reason)
    session.commit()
    return complaint_out(session, complaint)


def resume(session: Session, *, act: Act, complaint_id: int) -> ComplaintOut:
    """Start the clock again: every deadline moves by the time it was stopped."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    _check_handler(act.staff, complaint)
    _check_open(complaint, "resume")
    if complaint.paused_at is None:
        raise TransitionNotAllowed("the clock is not paused", extra={"state": complaint.status})
    stopped = max(act.now - complaint.paused_at, timedelta(0))
    complaint.due_at += stopped
    complaint.ceiling_at += stopped
    complaint.paused_s += stopped.total_seconds()
    _audit(
        session,
        complaint,
        CaseEventKind.RESUMED,
        act,
        now=act.now,
        from_value=complaint.pause_reason,
        reason=f"paused {stopped.total_seconds():.0f} s",
    )
    complaint.paused_at = None
    complaint.pause_reason = None
    complaint.updated_at = act.now
    session.commit()
    return complaint_out(session, complaint)


def add_facts(
    session: Session, *, casework: Casework, act: Act, complaint_id: int, reason: str
) -> ComplaintOut:
    """New facts: the clock restarts from now (a pause ends), and its warnings may fire again."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    _check_handler(act.staff, complaint)
    _check_open(complaint, "add facts")
    clock, now = casework.clock, act.now
    before = complaint.due_at
    complaint.clock_started_at = now
    complaint.paused_at = None
    complaint.pause_reason = None
    complaint.paused_s = 0.0
    complaint.due_at = clock.due(
        now, complex_case=complaint.complex_case, extensions=complaint.extensions
    )
    complaint.ceiling_at = clock.ceiling(now)
    complaint.warned_owner_at = None
    complaint.warned_supervisor_at = None
    complaint.overdue_at = None
    complaint.updated_at = now
    _audit(
        session,
        complaint,
        CaseEventKind.FACTS_ADDED,
        act,
        now=now,
        from_value=before.isoformat(timespec="seconds"),
        to_value=complaint.due_at.isoformat(timespec="seconds"),
        reason=reason,
    )
    session.commit()
    return complaint_out(session, complaint)


def extend(
    session: Session, *, casework: Casework, act: Act, complaint_id: int, request: ExtendRequest
) -> ComplaintOut:
    """Move the deadline: a complex case (owner or team), an approved extension (a
    head-office approver only, else 403); never beyond the profile's limit or ceiling (409)."""
    complaint = _load(session, tenant=act.staff.tenant, complaint_id=complaint_id)
    profile = casework.clock.profile
    if request.kind is ExtensionKind.APPROVED:
        _check_visible(act.staff, complaint)
        if StaffRole.HEAD_OFFICE_APPROVER not in _roles(act.staff):
            raise NotAllowed("an extension beyond the profile's limit needs a head-office approver")
    else:
        _check_handler(act.staff, complaint)
    _check_open(complaint, "extend")
    complex_case, extensions = complaint.complex_case, complaint.extensions
    if request.kind is ExtensionKind.COMPLEX:
        if profile.complex is None or complex_case:
            raise DeadlineRefused(
                f"the {profile.name} profile allows no (further) complex-case period"
            )
        complex_case = True
    else:
        if profile.extension is None or extensions >= profile.max_extensions:
            raise DeadlineRefused(
                f"the {profile.name} profile allows {profile.max_extensions} extension(s); "
                f"{extensions} used, the ceiling is {complaint.ceiling_at.isoformat()}"
            )
        extensions += 1
    shift = timedelta(seconds=complaint.paused_s)
    due = (
        casework.clock.due(
            complaint.clock_started_at, complex_case=complex_case, extensions=extensions
        )
        + shift
    )
    if due > complaint.ceiling_at:
        raise DeadlineRefused(
            f"{due.isoformat()} would be past the ceiling {complaint.ceiling_at.isoformat()}"
        )
    before = complaint.due_at
    complaint.due_at = due
    complaint.complex_case = complex_case
    complaint.extensions = extensions
    complaint.updated_at = act.now
    _audit(
        session,
        complaint,
        CaseEventKind.EXTENDED,
        act,
        now=act.now,
        from_value=before.isoformat(timespec="seconds"),
        to_value=due.isoformat(timespec="seconds"),
        reason=f"{request.kind.value}: {request.reason}",
    )
    session.commit()
    return complaint_out(session, complaint)


# --- the deadline sweep and retention -------------------------------------------------------


@dataclass
class SweepSummary:
    """What one sweep fired."""

    checked: int = 0
    owner_warnings: list[int] = field(default_factory=list)
    supervisor_warnings: list[int] = field(default_factory=list)
    escalations: list[int] = field(default_factory=list)


def _claim(session: Session, complaint_id: int, marker: str, now: datetime) -> bool:
    """Set a once-only marker; False when another sweep already set it."""
    column = getattr(Complaint, marker)
    done = session.execute(
        update(Complaint)
        .where(Complaint.id == complaint_id, column.is_(None))
        .values({marker: now})
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def sweep_deadlines(session: Session, *, now: datetime) -> SweepSummary:
    """Warn the owner at 60% of the running time, the supervisor at 80%, escalate at 100%:
    each once per clock (markers set by a conditional update, so concurrent sweeps agree)."""
    writing(session)  # it reads the running complaints before it marks them
    summary = SweepSummary()
    pending = session.scalars(
        select(Complaint)
        .where(
            Complaint.status.not_in([s.value for s in FINAL_STATUSES]),
            Complaint.paused_at.is_(None),
            Complaint.overdue_at.is_(None),
        )
        .order_by(Complaint.id)
    ).all()
    for complaint in pending:
        summary.checked += 1
        share = _share(complaint, now)
        if share >= OWNER_WARNING and _claim(session, complaint.id, "warned_owner_at", now):
            _audit(
                session,
                complaint,
                CaseEventKind.WARNED_OWNER,
                None,
                now=now,
                to_value=complaint.owner_id,
                reason=f"{share:.0%} of the time used",
            )
            summary.owner_warnings.append(complaint.id)
        if share >= SUPERVISOR_WARNING and _claim(
            session, complaint.id, "warned_supervisor_at", now
        ):
            owner = directory.find_staff(
                session, tenant=complaint.tenant, staff_id=complaint.owner_id
            )
            to = owner.supervisor_id if owner and owner.supervisor_id else TEAM
            _audit(
                session,
                complaint,
                CaseEventKind.WARNED_SUPERVISOR,
                None,
                now=now,
                to_value=to,
                reason=f"{share:.0%} of the time used",
            )
            summary.supervisor_warnings.append(complaint.id)
        if share >= OVERDUE and _claim(session, complaint.id, "overdue_at", now):
            _escalate_overdue(session, complaint, now)
            summary.escalations.append(complaint.id)
    session.commit()
    return summary


def _share(complaint: Complaint, now: datetime) -> float:
    total = (complaint.due_at - complaint.clock_started_at).total_seconds() - complaint.paused_s
    used = (now - complaint.clock_started_at).total_seconds() - complaint.paused_s
    return used / total if total > 0 else 1.0


def _escalate_overdue(session: Session, complaint: Complaint, now: datetime) -> None:
    """The deadline passed: the case goes one level up (supervisor, then the team)."""
    owner = directory.find_staff(session, tenant=complaint.tenant, staff_id=complaint.owner_id)
    target = (
        escalation_target(
            session, complaint, above=owner, level=complaint.escalation_level, today=now.date()
        )
        if owner is not None
        else None
    )
    if target is None:
        _audit(
            session,
            complaint,
            CaseEventKind.ESCALATED,
            None,
            now=now,
            from_value=complaint.owner_id,
            to_value=complaint.owner_id,
            reason="deadline passed; no one above can take the case, the owner keeps it",
        )
        return
    _escalate(session, complaint, target, None, now=now, reason="deadline passed")


def purge_expired(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete complaints closed or rejected longer than ``retention`` ago, with their trail
    (the only delete there is); how many complaints went."""
    writing(session)  # it reads the expired ids before it deletes them
    expired = select(Complaint.id).where(
        Complaint.closed_at.is_not(None), Complaint.closed_at < now - retention
    )
    ids: Sequence[int] = session.scalars(expired).all()
    if ids:
        session.execute(delete(CaseEvent).where(CaseEvent.complaint_id.in_(ids)))
        session.execute(delete(Complaint).where(Complaint.id.in_(ids)))
    session.commit()
    return len(ids)


def utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def newest_first_page(
    session: Session,
    table: type[CaseRow],
    *,
    conditions: list[ColumnElement[bool]],
    limit: int,
    offset: int,
) -> tuple[int, list[CaseRow]]:
    """One page of a case table's rows matching ``conditions``, newest first, and the total."""
    total = session.scalar(select(func.count()).select_from(table).where(*conditions))
    found = session.scalars(
        select(table).where(*conditions).order_by(table.id.desc()).limit(limit).offset(offset)
    )
    return total or 0, list(found)
