"""Casework over HTTP: the staff directory, complaints through their lifecycle, and routed
churn alerts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from app.casework import reports, routing, service
from app.casework import staff as directory
from app.casework.errors import NotAllowed
from app.casework.routing import RoutingPolicy
from app.casework.schemas import (
    AbsenceRequest,
    AssignmentOut,
    AssignmentPage,
    CaseworkReport,
    CloseRequest,
    ComplaintOut,
    ComplaintPage,
    ComplaintRequest,
    ComplaintsReturn,
    EscalateRequest,
    ExtendRequest,
    FactsRequest,
    NoteRequest,
    PauseRequest,
    ReassignRequest,
    RejectRequest,
    StaffOut,
    StaffPage,
    StaffRequest,
    TransferRequest,
)
from app.casework.service import Act, Casework, acting, utc_now
from app.casework.states import (
    CROSS_BRANCH_ROLES,
    AssignmentStatus,
    ComplaintAction,
    ComplaintStatus,
    StaffRole,
)
from app.customers.schemas import Code
from app.http.deps import (
    CaseworkReader,
    CaseworkWriter,
    PseudonymizerDep,
    RequestIdDep,
    SessionDep,
    StaffAdmin,
)

staff_router = APIRouter(prefix="/v1/staff", tags=["casework"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such staff member in the caller's tenant", **PROBLEM}
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "The principal already acts as another staff member", **PROBLEM},
    422: {"description": "Invalid body, unknown supervisor or a loop of supervisors", **PROBLEM},
}
StaffIdPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$")
]


@staff_router.get("", response_model=StaffPage)
def list_staff(
    session: SessionDep,
    caller: CaseworkReader,
    branch: Annotated[Code | None, Query(description="Only this branch.")] = None,
    role: Annotated[StaffRole | None, Query(description="Only staff holding this role.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> StaffPage:
    """The caller's tenant's staff, by id, one page at a time."""
    return directory.list_staff(
        session, tenant=caller.tenant, branch=branch, role=role, limit=limit, offset=offset
    )


@staff_router.get("/{staff_id}", response_model=StaffOut, responses=NOT_FOUND)
def get_staff(session: SessionDep, caller: CaseworkReader, staff_id: StaffIdPath) -> StaffOut:
    """One staff member with their absences."""
    return directory.get_staff(session, tenant=caller.tenant, staff_id=staff_id)


@staff_router.put("/{staff_id}", response_model=StaffOut, responses=WRITE_ERRORS)
def put_staff(
    session: SessionDep, caller: StaffAdmin, staff_id: StaffIdPath, body: StaffRequest
) -> StaffOut:
    """Create a staff member, or replace their record (absences are kept)."""
    return directory.put_staff(
        session, tenant=caller.tenant, staff_id=staff_id, request=body, now=datetime.now(UTC)
    )


@staff_router.post(
    "/{staff_id}/absences",
    response_model=StaffOut,
    responses={**NOT_FOUND, 422: {"description": "Invalid period", **PROBLEM}},
)
def add_absence(
    session: SessionDep, caller: StaffAdmin, staff_id: StaffIdPath, body: AbsenceRequest
) -> StaffOut:
    """Record a period away: nothing is assigned or escalated to the person then."""
    return directory.add_absence(
        session, tenant=caller.tenant, staff_id=staff_id, request=body, now=datetime.now(UTC)
    )


# --- complaints -----------------------------------------------------------------------------

complaints_router = APIRouter(prefix="/v1/complaints", tags=["casework"])

ACTOR_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "The credential acts as no staff member, or the staff member may not "
        "do this (another branch's case, a role they lack)",
        **PROBLEM,
    },
}
CASE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ACTOR_ERRORS,
    404: {"description": "No such complaint in the caller's tenant", **PROBLEM},
}
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **CASE_ERRORS,
    409: {
        "description": "Not allowed from the complaint's state (the body names it), a staff "
        "member who cannot take the case, or a deadline past the ceiling",
        **PROBLEM,
    },
    422: {"description": "Invalid body, or unknown staff", **PROBLEM},
}
ComplaintId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def get_casework(request: Request) -> Casework:
    """The deadline profile and retention the app was created with."""
    casework: Casework = request.app.state.casework
    return casework


CaseworkDep = Annotated[Casework, Depends(get_casework)]


def reading_act(session: SessionDep, caller: CaseworkReader, request_id: RequestIdDep) -> Act:
    """The caller as a staff member, for a read (casework:read)."""
    return acting(session, principal=caller, request_id=request_id, now=utc_now())


def writing_act(session: SessionDep, caller: CaseworkWriter, request_id: RequestIdDep) -> Act:
    """The caller as a staff member, for a change (casework:write)."""
    return acting(session, principal=caller, request_id=request_id, now=utc_now())


Reading = Annotated[Act, Depends(reading_act)]
Writing = Annotated[Act, Depends(writing_act)]


@complaints_router.post("", response_model=ComplaintOut, status_code=201, responses=CHANGE_ERRORS)
def receive_complaint(
    session: SessionDep,
    act: Writing,
    casework: CaseworkDep,
    pseudonymizer: PseudonymizerDep,
    body: ComplaintRequest,
) -> ComplaintOut:
    """Receive a complaint: the caller's staff member owns it (escalated at once when it is
    beyond their authority or they are implicated); deadlines set by the profile."""
    return service.receive_complaint(
        session, casework=casework, act=act, request=body, pseudonymizer=pseudonymizer
    )


@complaints_router.get("", response_model=ComplaintPage, responses=ACTOR_ERRORS)
def list_complaints(
    session: SessionDep,
    act: Reading,
    status: Annotated[ComplaintStatus | None, Query(description="Only this state.")] = None,
    mine: Annotated[bool, Query(description="Only complaints the caller owns.")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ComplaintPage:
    """Complaints the caller may see, newest first."""
    return service.list_complaints(
        session, act=act, status=status, mine=mine, limit=limit, offset=offset
    )


@complaints_router.get("/{complaint_id}", response_model=ComplaintOut, responses=CASE_ERRORS)
def get_complaint(session: SessionDep, act: Reading, complaint_id: ComplaintId) -> ComplaintOut:
    """One complaint with its audit trail."""
    return service.get_complaint(session, act=act, complaint_id=complaint_id)


def _step(action: ComplaintAction, summary: str) -> None:
    """Register a lifecycle step that takes an optional note."""

    def step(
        session: SessionDep, act: Writing, complaint_id: ComplaintId, body: NoteRequest
    ) -> ComplaintOut:
        return service.transition(
            session, act=act, complaint_id=complaint_id, action=action, note=body.note
        )

    step.__name__ = f"{action.value}_complaint"
    step.__doc__ = summary
    complaints_router.post(
        f"/{{complaint_id}}/{action.value}", response_model=ComplaintOut, responses=CHANGE_ERRORS
    )(step)


_step(ComplaintAction.ACKNOWLEDGE, "Acknowledge a received complaint (owner or team).")
_step(ComplaintAction.START, "Start work on an acknowledged complaint.")
_step(ComplaintAction.RESPOND, "Record that the response was sent.")


@complaints_router.post(
    "/{complaint_id}/close", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def close_complaint(
    session: SessionDep,
    act: Writing,
    pseudonymizer: PseudonymizerDep,
    complaint_id: ComplaintId,
    body: CloseRequest,
) -> ComplaintOut:
    """Close a responded complaint with its outcome, root cause, product category and redress."""
    return service.transition(
        session,
        act=act,
        complaint_id=complaint_id,
        action=ComplaintAction.CLOSE,
        note=body.note,
        closing=body,
        pseudonymizer=pseudonymizer,
    )


@complaints_router.post(
    "/{complaint_id}/reject", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def reject_complaint(
    session: SessionDep,
    act: Writing,
    pseudonymizer: PseudonymizerDep,
    complaint_id: ComplaintId,
    body: RejectRequest,
) -> ComplaintOut:
    """Reject a received or acknowledged complaint, saying why."""
    return service.transition(
        session,
        act=act,
        complaint_id=complaint_id,
        action=ComplaintAction.REJECT,
        note=body.reason,
        pseudonymizer=pseudonymizer,
    )


@complaints_router.post(
    "/{complaint_id}/transfer", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def transfer_complaint(
    session: SessionDep, act: Writing, complaint_id: ComplaintId, body: TransferRequest
) -> ComplaintOut:
    """Offer the case to another staff member; the owner stays accountable until accepted."""
    return service.request_transfer(
        session, act=act, complaint_id=complaint_id, to=body.to, reason=body.reason
    )


@complaints_router.post(
    "/{complaint_id}/accept", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def accept_complaint(
    session: SessionDep, act: Writing, complaint_id: ComplaintId, body: NoteRequest
) -> ComplaintOut:
    """Accept a transfer offered to the caller: they become the owner."""
    return service.accept_transfer(session, act=act, complaint_id=complaint_id)


@complaints_router.post(
    "/{complaint_id}/pause", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def pause_complaint(
    session: SessionDep, act: Writing, complaint_id: ComplaintId, body: PauseRequest
) -> ComplaintOut:
    """Stop the clock for a whitelisted reason."""
    return service.pause(session, act=act, complaint_id=complaint_id, request=body)


@complaints_router.post(
    "/{complaint_id}/resume", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def resume_complaint(
    session: SessionDep, act: Writing, complaint_id: ComplaintId, body: NoteRequest
) -> ComplaintOut:
    """Start the clock again; deadlines move by the time it was stopped."""
    return service.resume(session, act=act, complaint_id=complaint_id)


@complaints_router.post(
    "/{complaint_id}/facts", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def add_facts(
    session: SessionDep,
    act: Writing,
    casework: CaseworkDep,
    complaint_id: ComplaintId,
    body: FactsRequest,
) -> ComplaintOut:
    """Record new facts: the clock restarts from now."""
    return service.add_facts(
        session, casework=casework, act=act, complaint_id=complaint_id, reason=body.reason
    )


@complaints_router.post(
    "/{complaint_id}/extend", response_model=ComplaintOut, responses=CHANGE_ERRORS
)
def extend_complaint(
    session: SessionDep,
    act: Writing,
    casework: CaseworkDep,
    complaint_id: ComplaintId,
    body: ExtendRequest,
) -> ComplaintOut:
    """Move the deadline: a complex case, or an approved extension (head-office approver)."""
    return service.extend(
        session, casework=casework, act=act, complaint_id=complaint_id, request=body
    )


# --- alert routing ----------------------------------------------------------------------------

routed_alerts_router = APIRouter(prefix="/v1/casework/alerts", tags=["casework"])

ROUTED_ERRORS: dict[int | str, dict[str, Any]] = {
    **ACTOR_ERRORS,
    404: {"description": "No routed alert with this id in the caller's tenant", **PROBLEM},
}
ROUTED_CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ROUTED_ERRORS,
    409: {
        "description": "Not allowed from the assignment's state (the body names it), or a "
        "staff member who cannot take the alert",
        **PROBLEM,
    },
    422: {"description": "Invalid body, or unknown staff", **PROBLEM},
}
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def get_routing(request: Request) -> RoutingPolicy:
    """The routing policy the app was created with."""
    policy: RoutingPolicy = request.app.state.routing
    return policy


RoutingDep = Annotated[RoutingPolicy, Depends(get_routing)]


@routed_alerts_router.get("", response_model=AssignmentPage, responses=ACTOR_ERRORS)
def list_routed_alerts(
    session: SessionDep,
    act: Reading,
    status: Annotated[AssignmentStatus | None, Query(description="Only this state.")] = None,
    mine: Annotated[bool, Query(description="Only alerts assigned to the caller.")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AssignmentPage:
    """Routed churn alerts the caller may see, newest first."""
    return routing.list_assignments(
        session, act=act, status=status, mine=mine, limit=limit, offset=offset
    )


@routed_alerts_router.get("/{alert_id}", response_model=AssignmentOut, responses=ROUTED_ERRORS)
def get_routed_alert(session: SessionDep, act: Reading, alert_id: AlertId) -> AssignmentOut:
    """Who an alert is routed to, and its trail."""
    return routing.get_assignment(session, act=act, alert_id=alert_id)


@routed_alerts_router.post(
    "/{alert_id}/accept", response_model=AssignmentOut, responses=ROUTED_CHANGE_ERRORS
)
def accept_routed_alert(
    session: SessionDep, act: Writing, alert_id: AlertId, body: NoteRequest
) -> AssignmentOut:
    """Accept an alert assigned to the caller: it is acknowledged in their name."""
    return routing.accept(session, act=act, alert_id=alert_id, note=body.note)


@routed_alerts_router.post(
    "/{alert_id}/reassign", response_model=AssignmentOut, responses=ROUTED_CHANGE_ERRORS
)
def reassign_routed_alert(
    session: SessionDep, act: Writing, policy: RoutingDep, alert_id: AlertId, body: ReassignRequest
) -> AssignmentOut:
    """Hand an alert (accepted or not) to another staff member, saying why; they accept it
    again before a new deadline."""
    return routing.reassign(
        session, act=act, alert_id=alert_id, to=body.to, reason=body.reason, policy=policy
    )


@routed_alerts_router.post(
    "/{alert_id}/escalate", response_model=AssignmentOut, responses=ROUTED_CHANGE_ERRORS
)
def escalate_routed_alert(
    session: SessionDep, act: Writing, policy: RoutingDep, alert_id: AlertId, body: EscalateRequest
) -> AssignmentOut:
    """Send a not yet accepted alert to the assignee's supervisor, saying why."""
    return routing.escalate(session, act=act, alert_id=alert_id, reason=body.reason, policy=policy)


# --- reports ----------------------------------------------------------------------------------

reports_router = APIRouter(prefix="/v1/reports", tags=["casework"])


def _report_branch(act: Act, branch: str | None) -> str | None:
    """The branch a report may cover: any for cross-branch roles, else only the caller's."""
    if set(act.staff.roles) & {role.value for role in CROSS_BRANCH_ROLES}:
        return branch
    if branch is not None and branch != act.staff.branch:
        raise NotAllowed(f"you may report on branch {act.staff.branch!r} only, not {branch!r}")
    return act.staff.branch


@reports_router.get(
    "/casework",
    response_model=CaseworkReport,
    responses={
        **ACTOR_ERRORS,
        422: {"description": "A malformed date or branch, or from not before to", **PROBLEM},
    },
)
def casework_report(
    session: SessionDep,
    act: Reading,
    date_from: Annotated[
        date | None, Query(alias="from", description="First day included (UTC).")
    ] = None,
    date_to: Annotated[
        date | None, Query(alias="to", description="First day excluded (UTC).")
    ] = None,
    branch: Annotated[Code | None, Query(description="Only this branch.")] = None,
) -> CaseworkReport:
    """Volumes, deadline hit rate, by branch and owner, root causes, repeat complaints and
    alert retention (staff outside cross-branch roles see their own branch only)."""
    return reports.casework_report(
        session,
        tenant=act.staff.tenant,
        branch=_report_branch(act, branch),
        date_from=date_from,
        date_to=date_to,
    )


@reports_router.get(
    "/complaints-return",
    response_model=ComplaintsReturn,
    responses={
        **ACTOR_ERRORS,
        422: {
            "description": "A malformed half-year or bucket (the body names the field)",
            **PROBLEM,
        },
    },
)
def complaints_return(
    session: SessionDep,
    act: Reading,
    casework: CaseworkDep,
    half: Annotated[
        str,
        Query(
            min_length=6,
            max_length=6,
            pattern=r"^\d{4}H[12]$",
            description="The half-year: 2026H1 (January-June) or 2026H2.",
            examples=["2026H1"],
        ),
    ],
    buckets: Annotated[
        list[str] | None,
        Query(
            max_length=8,
            description="Closed-within marks: 3bd (business days), 15d (days), 8w (weeks).",
        ),
    ] = None,
) -> ComplaintsReturn:
    """The half-yearly complaints return of the caller's tenant, by product (complaints team,
    approvers and administrators)."""
    if not set(act.staff.roles) & {role.value for role in CROSS_BRANCH_ROLES}:
        raise NotAllowed("the complaints return is for the complaints team and head office")
    return reports.complaints_return(
        session,
        tenant=act.staff.tenant,
        half=reports.parse_half(half),
        clock=casework.clock,
        buckets=reports.parse_buckets(buckets or reports.DEFAULT_BUCKETS),
    )
