"""Every stored status of the casework package, defined once.

```
received --acknowledge--> acknowledged --start--> in_progress
in_progress --respond--> responded --close--> closed
received, acknowledged --reject--> rejected
```
"""

from __future__ import annotations

from enum import StrEnum

from app.alerts.states import AlertCause
from app.customers.schemas import Severity


class StaffRole(StrEnum):
    """What a staff member does; a member may hold several roles."""

    RELATIONSHIP_MANAGER = "relationship_manager"
    BRANCH_SUPERVISOR = "branch_supervisor"
    COMPLAINTS_TEAM = "complaints_team"
    HEAD_OFFICE_APPROVER = "head_office_approver"
    ADMINISTRATOR = "administrator"
    # Answers for the models: sees their monitoring in the console, works no cases.
    MODEL_OWNER = "model_owner"


# Roles that act on every branch's cases; the others only on their own branch's.
CROSS_BRANCH_ROLES = frozenset(
    {StaffRole.COMPLAINTS_TEAM, StaffRole.HEAD_OFFICE_APPROVER, StaffRole.ADMINISTRATOR}
)
SEVERITY_RANK: dict[Severity, int] = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2}


class ComplaintStatus(StrEnum):
    """Where a complaint is in its lifecycle; open until closed or rejected."""

    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    RESPONDED = "responded"
    CLOSED = "closed"
    REJECTED = "rejected"


FINAL_STATUSES = frozenset({ComplaintStatus.CLOSED, ComplaintStatus.REJECTED})


class ComplaintAction(StrEnum):
    """A lifecycle step of a complaint."""

    ACKNOWLEDGE = "acknowledge"
    START = "start"
    RESPOND = "respond"
    CLOSE = "close"
    REJECT = "reject"


# The allowed transitions, in one place: action -> (allowed from, to).
TRANSITIONS: dict[ComplaintAction, tuple[frozenset[ComplaintStatus], ComplaintStatus]] = {
    ComplaintAction.ACKNOWLEDGE: (
        frozenset({ComplaintStatus.RECEIVED}),
        ComplaintStatus.ACKNOWLEDGED,
    ),
    ComplaintAction.START: (frozenset({ComplaintStatus.ACKNOWLEDGED}), ComplaintStatus.IN_PROGRESS),
    ComplaintAction.RESPOND: (frozenset({ComplaintStatus.IN_PROGRESS}), ComplaintStatus.RESPONDED),
    ComplaintAction.CLOSE: (frozenset({ComplaintStatus.RESPONDED}), ComplaintStatus.CLOSED),
    ComplaintAction.REJECT: (
        frozenset({ComplaintStatus.RECEIVED, ComplaintStatus.ACKNOWLEDGED}),
        ComplaintStatus.REJECTED,
    ),
}


class Channel(StrEnum):
    """How the complaint reached the bank."""

    BRANCH = "branch"
    PHONE = "phone"
    EMAIL = "email"
    LETTER = "letter"
    ONLINE = "online"
    MOBILE_APP = "mobile_app"
    REGULATOR = "regulator"


class Outcome(StrEnum):
    """How a closed complaint ended."""

    UPHELD = "upheld"
    PARTIALLY_UPHELD = "partially_upheld"
    NOT_UPHELD = "not_upheld"


class PauseReason(StrEnum):
    """The only reasons a complaint's clock may stop."""

    EXTERNAL_APPRAISAL = "external_appraisal"
    AWAITING_CUSTOMER_INFORMATION = "awaiting_customer_information"
    LITIGATION = "litigation"


class ExtensionKind(StrEnum):
    """How a deadline is moved: a complex case (the profile allows it), or an approved
    extension beyond that (a head-office approver only)."""

    COMPLEX = "complex"
    APPROVED = "approved"


class CaseEventKind(StrEnum):
    """One kind of entry in a complaint's append-only audit trail."""

    CREATED = "created"
    ASSIGNED = "assigned"
    TRANSFER_REQUESTED = "transfer_requested"
    TRANSFERRED = "transferred"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    FACTS_ADDED = "facts_added"
    EXTENDED = "extended"
    RESPONDED = "responded"
    CLOSED = "closed"
    REJECTED = "rejected"
    WARNED_OWNER = "warned_owner"
    WARNED_SUPERVISOR = "warned_supervisor"


ACTION_EVENTS: dict[ComplaintAction, CaseEventKind] = {
    ComplaintAction.ACKNOWLEDGE: CaseEventKind.ACKNOWLEDGED,
    ComplaintAction.START: CaseEventKind.STARTED,
    ComplaintAction.RESPOND: CaseEventKind.RESPONDED,
    ComplaintAction.CLOSE: CaseEventKind.CLOSED,
    ComplaintAction.REJECT: CaseEventKind.REJECTED,
}


# Why an alert asks for a person (the alerts domain's cause): at most one open assignment per
# customer and reason.
AlertReason = AlertCause


class AssignmentStatus(StrEnum):
    """Where a routed alert is: waiting for its assignee to accept it, accepted, or over (the
    alert was resolved)."""

    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    CLOSED = "closed"


OPEN_ASSIGNMENT_STATUSES = frozenset({AssignmentStatus.ASSIGNED, AssignmentStatus.ACCEPTED})


class RoutedVia(StrEnum):
    """How an alert reached its current assignee (or queue)."""

    RELATIONSHIP_MANAGER = "relationship_manager"
    BACKUP = "backup"
    BRANCH_QUEUE = "branch_queue"
    CENTRAL_QUEUE = "central_queue"
    SUPERVISOR = "supervisor"
    REASSIGNED = "reassigned"


class AssignmentEventKind(StrEnum):
    """One kind of entry in a routed alert's append-only trail."""

    ROUTED = "routed"
    ACCEPTED = "accepted"
    REASSIGNED = "reassigned"
    ESCALATED = "escalated"
    TIMED_OUT = "timed_out"
    CLOSED = "closed"


def sql_values(enum: type[StrEnum]) -> str:
    """The members as a SQL list, for CHECK constraints: ``'a', 'b'``."""
    return ", ".join(f"'{member.value}'" for member in enum)
