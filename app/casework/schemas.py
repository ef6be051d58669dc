"""Wire shapes of casework: staff, absences, complaints and their audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.casework.states import (
    AlertReason,
    AssignmentEventKind,
    AssignmentStatus,
    CaseEventKind,
    Channel,
    ComplaintStatus,
    ExtensionKind,
    Outcome,
    PauseReason,
    RoutedVia,
    StaffRole,
)
from app.customers.schemas import Code, Severity
from app.scoring.request_schemas import CustomerId
from app.security.principal import MAX_CLIENT_ID_LENGTH
from app.security.text import ID_PATTERN, TEXT_PATTERN

MAX_AMOUNT = 1e15

StaffId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$",
        description="The bank's id of a staff member.",
        examples=["rm-042"],
    ),
]
Money = Annotated[
    float,
    Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="An amount of money, >= 0."),
]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        pattern=r"^[^\x00]*\S[^\x00]*$",
        description="Why, in words (kept in the audit trail).",
    ),
]
Note = Annotated[str, Field(max_length=2000, pattern=TEXT_PATTERN)]
PrincipalId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CLIENT_ID_LENGTH,
        pattern=ID_PATTERN,
        description="The credential this person acts through: an API client id ('cl_...') or "
        "'jwt:' and a token's subject.",
        examples=["jwt:anna.berg"],
    ),
]

STAFF_EXAMPLE: dict[str, Any] = {
    "name": "Anna Berg",
    "email": "anna.berg@bank.example",
    "roles": ["relationship_manager"],
    "branch": "north-01",
    "max_severity": "medium",
    "max_amount": 5000.0,
    "principal": "jwt:anna.berg",
}


class StaffRequest(BaseModel):
    """A staff member's record, created or replaced as a whole."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [STAFF_EXAMPLE]})

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    email: str = Field(
        max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
    )
    roles: list[StaffRole] = Field(min_length=1, max_length=len(StaffRole))
    branch: Code
    supervisor: StaffId | None = Field(default=None, description="Who cases escalate to.")
    backups: list[StaffId] = Field(
        default_factory=list,
        max_length=10,
        description="Who takes this person's customers' alerts while they are away, in order.",
    )
    max_severity: Severity = Field(description="Highest severity this person may own.")
    max_amount: Money = Field(description="Largest amount at stake this person may own.")
    principal: PrincipalId | None = None
    active: bool = True

    @field_validator("roles")
    @classmethod
    def _distinct_roles(cls, roles: list[StaffRole]) -> list[StaffRole]:
        if len(set(roles)) != len(roles):
            raise ValueError("each role once")
        return roles

    @field_validator("backups")
    @classmethod
    def _distinct_backups(cls, backups: list[str]) -> list[str]:
        if len(set(backups)) != len(backups):
            raise ValueError("each backup once")
        return backups


class AbsenceRequest(BaseModel):
    """A period away (both days included): no case is assigned or escalated to the person."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"starts_on": "2027-01-04", "ends_on": "2027-01-08", "reason": "leave"}]
        },
    )

    starts_on: date = Field(ge=date(2000, 1, 1), le=date(2999, 12, 31))
    ends_on: date = Field(ge=date(2000, 1, 1), le=date(2999, 12, 31))
    reason: Note | None = None

    @field_validator("ends_on")
    @classmethod
    def _ordered(cls, ends_on: date, info: ValidationInfo) -> date:
        starts_on = info.data.get("starts_on")
        if starts_on is not None and ends_on < starts_on:
            raise ValueError("before starts_on")
        return ends_on


class AbsenceOut(BaseModel):
    """A recorded absence."""

    model_config = ConfigDict(from_attributes=True)

    starts_on: date
    ends_on: date
    reason: str | None


class StaffOut(BaseModel):
    """A staff member as stored, with their absences."""

    staff_id: str
    name: str
    email: str
    roles: list[StaffRole]
    branch: str
    supervisor: str | None
    backups: list[str]
    max_severity: Severity
    max_amount: float
    principal: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    absences: list[AbsenceOut]


class StaffPage(BaseModel):
    """One page of staff, by id."""

    total: int
    limit: int
    offset: int
    items: list[StaffOut]


class ImportResult(BaseModel):
    """What a staff import did."""

    created: int
    updated: int


COMPLAINT_EXAMPLE: dict[str, Any] = {
    "customer_id": "C-000123",
    "channel": "branch",
    "category": "fees",
    "product": "current_account",
    "severity": "medium",
    "amount_at_stake": 120.0,
    "description": "Charged an overdraft fee twice for the same day.",
    "staff_implicated": ["rm-017"],
}


class ComplaintRequest(BaseModel):
    """A complaint as received. The receiver, and so the owner, is the caller's staff member."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [COMPLAINT_EXAMPLE]})

    customer_id: CustomerId
    channel: Channel
    category: Code
    product: Code
    severity: Severity
    amount_at_stake: Money
    description: str = Field(min_length=1, max_length=10_000, pattern=r"^[^\x00]*\S[^\x00]*$")
    staff_implicated: list[StaffId] = Field(
        default_factory=list,
        max_length=50,
        description="Staff the complaint is about: never assigned it, by any route.",
    )


class NoteRequest(BaseModel):
    """A step of the lifecycle, with an optional note for the audit trail."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "called the customer"}]}
    )

    note: Note | None = None


class RejectRequest(BaseModel):
    """Reject a complaint (not a complaint, or out of scope), saying why."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "duplicate of case 41"}]}
    )

    reason: Reason


class CloseRequest(BaseModel):
    """Close a responded complaint: what came of it and why it happened."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "outcome": "upheld",
                    "root_cause": "duplicate_fee_posting",
                    "product_category": "current_accounts",
                    "redress_amount": 35.0,
                    "note": "fee refunded",
                }
            ]
        },
    )

    outcome: Outcome
    root_cause: Code
    product_category: Code
    redress_amount: Money
    note: Note | None = None


class TransferRequest(BaseModel):
    """Offer the case to another staff member; the current owner stays accountable until
    the target accepts."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"to": "rm-042", "reason": "customer's own manager"}]},
    )

    to: StaffId
    reason: Reason


class PauseRequest(BaseModel):
    """Stop the clock, for a whitelisted reason only, with the customer told."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"reason": "external_appraisal", "note": "valuation ordered; customer notified"}
            ]
        },
    )

    reason: PauseReason
    note: Note | None = None


class FactsRequest(BaseModel):
    """New facts from the customer: the clock starts again from now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "customer sent statements for March"}]},
    )

    reason: Reason


class ExtendRequest(BaseModel):
    """Move the deadline: a complex case (the owner), or an approved extension beyond the
    profile's limit (a head-office approver), never past the profile's ceiling."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"kind": "complex", "reason": "three accounts and a third party"}]
        },
    )

    kind: ExtensionKind
    reason: Reason


class CaseEventOut(BaseModel):
    """One entry of the audit trail."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: CaseEventKind
    at: datetime
    actor: str = Field(description="The staff id that acted, or 'system' (the deadline sweep).")
    principal: str | None = Field(description="The credential that acted.")
    from_value: str | None
    to_value: str | None
    reason: str | None


class ComplaintBrief(BaseModel):
    """A complaint as a customer's record lists it: what, how grave, where it stands."""

    id: int
    status: ComplaintStatus
    severity: Severity
    category: str
    product: str
    owner: str
    received_at: datetime
    due_at: datetime


class ComplaintOut(BaseModel):
    """A complaint: owner, state, deadlines, outcome, and its audit trail."""

    id: int
    customer_id: str
    channel: Channel
    category: str
    product: str
    severity: Severity
    amount_at_stake: float
    description: str
    staff_implicated: list[str]
    status: ComplaintStatus
    branch: str
    received_by: str = Field(description="The first responder: the staff member who received it.")
    owner: str = Field(description="Who is accountable now; never empty.")
    escalation_level: int = Field(description="0: owner's level, 1: supervisor, 2: team.")
    pending_transfer_to: str | None
    profile: str
    received_at: datetime
    clock_started_at: datetime
    due_at: datetime
    ceiling_at: datetime
    milestones: dict[str, datetime]
    complex_case: bool
    extensions: int
    paused_at: datetime | None
    pause_reason: PauseReason | None
    outcome: Outcome | None
    root_cause: str | None
    product_category: str | None
    redress_amount: float | None
    closed_at: datetime | None
    updated_at: datetime
    history: list[CaseEventOut]


class ComplaintPage(BaseModel):
    """One page of complaints, newest first."""

    total: int
    limit: int
    offset: int
    items: list[ComplaintOut]


# --- alert routing ------------------------------------------------------------------------------


class AssignmentEventOut(BaseModel):
    """One entry of a routed alert's trail."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: AssignmentEventKind
    at: datetime
    actor: str = Field(description="The staff id that acted, or 'system' (routing, the sweep).")
    principal: str | None = Field(description="The credential that acted.")
    from_value: str | None
    to_value: str | None
    reason: str | None


class AssignmentOut(BaseModel):
    """Who a churn alert is routed to, whether they accepted it, and its trail."""

    alert_id: int
    customer_id: str
    reason: AlertReason
    status: AssignmentStatus
    branch: str
    assignee: str | None = Field(description="None while it waits in the central queue.")
    routed_via: RoutedVia
    assigned_at: datetime
    accept_by: datetime = Field(description="Not accepted by then: the supervisor gets it.")
    accepted_at: datetime | None
    accepted_by: str | None
    closed_at: datetime | None
    history: list[AssignmentEventOut]


class AssignmentPage(BaseModel):
    """One page of routed alerts, newest first."""

    total: int
    limit: int
    offset: int
    items: list[AssignmentOut]


class ReassignRequest(BaseModel):
    """Hand an alert to someone else, and why."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"to": "rm-042", "reason": "knows the customer"}]},
    )

    to: StaffId
    reason: Reason


class EscalateRequest(BaseModel):
    """Send an alert to the assignee's supervisor, and why."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "the customer asks for a manager"}]},
    )

    reason: Reason


# --- reports ---------------------------------------------------------------------------------


class CaseCounts(BaseModel):
    """Complaints of one group in a report's window."""

    key: str = Field(description="The group: a branch, a staff id, a root cause...")
    received: int
    closed: int
    closed_on_time: int
    deadline_hit_rate: float | None = Field(
        description="closed_on_time / closed (closed or rejected by the due date), 4 places; "
        "null when nothing closed."
    )


class RetentionCounts(BaseModel):
    """Routed churn alerts of one group resolved in the window, and how many were retained."""

    key: str
    resolved: int
    retained: int
    retention_rate: float | None = Field(description="retained / resolved, 4 places.")


class RootCause(BaseModel):
    """A root cause recorded when closing, and how often."""

    root_cause: str
    complaints: int


class RepeatComplaints(BaseModel):
    """Customers who complained more than once in the window."""

    customers: int
    complaints: int


class CaseworkReport(BaseModel):
    """Casework volumes and service levels of one tenant over a window."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant": "bank-a",
                    "date_from": "2026-01-01",
                    "date_to": "2026-07-01",
                    "branch": None,
                    "received": 12,
                    "closed": 9,
                    "open": 3,
                    "closed_on_time": 8,
                    "deadline_hit_rate": 0.8889,
                    "by_status": {"closed": 8, "rejected": 1, "received": 3},
                    "by_branch": [],
                    "by_owner": [],
                    "top_root_causes": [{"root_cause": "duplicate_fee", "complaints": 4}],
                    "repeat_complaints": {"customers": 2, "complaints": 5},
                    "retention_by_reason": [],
                    "retention_by_branch": [],
                    "retention_by_assignee": [],
                }
            ]
        }
    )

    tenant: str | None
    date_from: date | None = Field(description="First day included (UTC); null: no bound.")
    date_to: date | None = Field(description="First day excluded (UTC); null: no bound.")
    branch: str | None
    received: int = Field(description="Complaints received in the window.")
    closed: int = Field(description="Complaints closed or rejected in the window.")
    open: int = Field(description="Of those received in the window, not yet closed or rejected.")
    closed_on_time: int
    deadline_hit_rate: float | None
    by_status: dict[str, int] = Field(description="Complaints received in the window by state.")
    by_branch: list[CaseCounts]
    by_owner: list[CaseCounts] = Field(description="By the current owner (staff id).")
    top_root_causes: list[RootCause]
    repeat_complaints: RepeatComplaints
    retention_by_reason: list[RetentionCounts]
    retention_by_branch: list[RetentionCounts]
    retention_by_assignee: list[RetentionCounts]


class ReturnLine(BaseModel):
    """One product's line (or the total) of a half-yearly complaints return."""

    product: str
    received: int = Field(description="Received in the half-year.")
    closed: int = Field(description="Closed or rejected in the half-year.")
    closed_within: dict[str, int] = Field(
        description="Of those closed, how many within each bucket of their receipt "
        "(cumulative), by bucket label."
    )
    upheld: int = Field(description="Closed upheld or partially upheld.")
    upheld_share: float | None = Field(description="upheld / closed, 4 places.")
    redress_total: float = Field(description="Redress of complaints closed in the half-year.")
    outstanding: int = Field(
        description="Received before the half-year's end and still open at its end."
    )


class ComplaintsReturn(BaseModel):
    """A regulator-style half-yearly complaints return, computed from case data alone."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant": "bank-a",
                    "half": "2026H1",
                    "starts_on": "2026-01-01",
                    "ends_before": "2026-07-01",
                    "buckets": ["3bd", "8w"],
                    "total": {
                        "product": "all",
                        "received": 10,
                        "closed": 8,
                        "closed_within": {"3bd": 2, "8w": 7},
                        "upheld": 3,
                        "upheld_share": 0.375,
                        "redress_total": 420.0,
                        "outstanding": 2,
                    },
                    "by_product": [],
                }
            ]
        }
    )

    tenant: str | None
    half: str
    starts_on: date
    ends_before: date
    buckets: list[str]
    total: ReturnLine
    by_product: list[ReturnLine]
