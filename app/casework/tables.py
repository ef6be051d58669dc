"""Stored shapes of casework: the staff directory, complaints and their append-only trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import cast

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.casework.states import (
    AlertReason,
    AssignmentEventKind,
    AssignmentStatus,
    CaseEventKind,
    ComplaintStatus,
    RoutedVia,
    sql_values,
)
from app.customers.schemas import Severity
from app.db.base import Base
from app.scoring.tables import BigIntegerId, JSONDocument, UTCDateTime

# A staff id is unique per tenant; rows without a tenant count as one tenant (a NULL never
# equals another in a unique constraint, so a partial unique index covers those).
UNTAGGED = "tenant IS NULL"


class Staff(Base):
    """A member of staff: roles, branch, supervisor, authority, and the credential they use."""

    __tablename__ = "staff"
    __table_args__ = (
        UniqueConstraint("tenant", "staff_id", name="uq_staff_tenant_staff_id"),
        Index(
            "uq_staff_staff_id_untagged",
            "staff_id",
            unique=True,
            sqlite_where=text(UNTAGGED),
            postgresql_where=text(UNTAGGED),
        ),
        # A credential acts as one staff member at most.
        Index("uq_staff_principal", "principal", unique=True),
        Index("ix_staff_tenant_branch", "tenant", "branch"),
        CheckConstraint(f"max_severity IN ({sql_values(Severity)})", name="max_severity"),
        CheckConstraint("max_amount >= 0", name="max_amount"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    # The bank's own id of the person (e.g. rm-042).
    staff_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    roles: Mapped[list[str]] = mapped_column(JSONDocument)
    branch: Mapped[str] = mapped_column(String(64))
    supervisor_id: Mapped[str | None] = mapped_column(String(64))
    # Who takes the person's customers' alerts while they are away, in order (staff ids).
    backups: Mapped[list[str]] = mapped_column(JSONDocument, server_default=text("'[]'"))
    max_severity: Mapped[str] = mapped_column(String(16))
    max_amount: Mapped[float] = mapped_column(Float)
    # The API client id ('cl_...') or 'jwt:<subject>' this person authenticates as.
    principal: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StaffAbsence(Base):
    """A period (whole days, both included) a staff member is away: not assigned work."""

    __tablename__ = "staff_absence"
    __table_args__ = (
        Index("ix_staff_absence_staff_pk_ends_on", "staff_pk", "ends_on"),
        CheckConstraint("ends_on >= starts_on", name="period"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    staff_pk: Mapped[int] = mapped_column(BigIntegerId, ForeignKey("staff.id", ondelete="CASCADE"))
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


OPEN_COMPLAINT = "status NOT IN ('closed', 'rejected')"


class Complaint(Base):
    """A customer's complaint: its owner (never empty), state, clock and outcome."""

    __tablename__ = "complaint"
    __table_args__ = (
        Index("ix_complaint_tenant_owner_id", "tenant", "owner_id"),
        Index("ix_complaint_tenant_customer_id", "tenant", "customer_id"),
        # The deadline sweep's scan: open complaints only.
        Index(
            "ix_complaint_due_at_open",
            "due_at",
            sqlite_where=text(OPEN_COMPLAINT),
            postgresql_where=text(OPEN_COMPLAINT),
        ),
        Index("ix_complaint_closed_at", "closed_at"),
        CheckConstraint(f"status IN ({sql_values(ComplaintStatus)})", name="status"),
        CheckConstraint(f"severity IN ({sql_values(Severity)})", name="severity"),
        CheckConstraint("amount_at_stake >= 0", name="amount_at_stake"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    # The receiving credential's tenant; never taken from the body.
    tenant: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    amount_at_stake: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text)
    implicated: Mapped[list[str]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16))
    # The receiver's branch, and the receiver (first responder): fixed at creation.
    branch: Mapped[str] = mapped_column(String(64))
    received_by: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(64))
    # 0: the receiver's level; 1: a supervisor; 2: the complaints team.
    escalation_level: Mapped[int] = mapped_column(Integer)
    pending_owner_id: Mapped[str | None] = mapped_column(String(64))
    pending_reason: Mapped[str | None] = mapped_column(Text)
    profile: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    clock_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ceiling_at: Mapped[datetime] = mapped_column(UTCDateTime())
    milestones: Mapped[dict[str, str]] = mapped_column(JSONDocument)
    complex_case: Mapped[bool] = mapped_column(Boolean)
    extensions: Mapped[int] = mapped_column(Integer)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pause_reason: Mapped[str | None] = mapped_column(String(32))
    paused_s: Mapped[float] = mapped_column(Float)
    warned_owner_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    warned_supervisor_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(24))
    root_cause: Mapped[str | None] = mapped_column(String(64))
    product_category: Mapped[str | None] = mapped_column(String(64))
    redress_amount: Mapped[float | None] = mapped_column(Float)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CaseEvent(Base):
    """One entry of a complaint's audit trail: append-only (a trigger refuses updates)."""

    __tablename__ = "case_event"
    __table_args__ = (
        Index("ix_case_event_complaint_id_id", "complaint_id", "id"),
        CheckConstraint(f"kind IN ({sql_values(CaseEventKind)})", name="kind"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    complaint_id: Mapped[int] = mapped_column(BigIntegerId, ForeignKey("complaint.id"))
    tenant: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The staff id acting, or 'system' for the deadline sweep.
    actor: Mapped[str] = mapped_column(String(64))
    # The credential that acted (client id or jwt:subject); None for the sweep.
    principal: Mapped[str | None] = mapped_column(String(64))
    from_value: Mapped[str | None] = mapped_column(String(64))
    to_value: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))


OPEN_ASSIGNMENT = "status IN ('assigned', 'accepted')"
OPEN_UNTAGGED_ASSIGNMENT = f"{OPEN_ASSIGNMENT} AND tenant IS NULL"
OPEN_TAGGED_ASSIGNMENT = f"{OPEN_ASSIGNMENT} AND tenant IS NOT NULL"


class AlertAssignment(Base):
    """Who an alert (of the alerts domain, by id) is routed to, and whether they accepted it."""

    __tablename__ = "alert_assignment"
    __table_args__ = (
        UniqueConstraint("alert_id", name="uq_alert_assignment_alert_id"),
        # At most one open assignment per customer and reason of a tenant (rows without a
        # tenant count as one tenant).
        Index(
            "uq_alert_assignment_customer_reason_open_untagged",
            "customer_id",
            "reason",
            unique=True,
            sqlite_where=text(OPEN_UNTAGGED_ASSIGNMENT),
            postgresql_where=text(OPEN_UNTAGGED_ASSIGNMENT),
        ),
        Index(
            "uq_alert_assignment_tenant_customer_reason_open",
            "tenant",
            "customer_id",
            "reason",
            unique=True,
            sqlite_where=text(OPEN_TAGGED_ASSIGNMENT),
            postgresql_where=text(OPEN_TAGGED_ASSIGNMENT),
        ),
        Index("ix_alert_assignment_tenant_assignee_status", "tenant", "assignee_id", "status"),
        # The acceptance sweep's scan.
        Index("ix_alert_assignment_status_accept_by", "status", "accept_by"),
        CheckConstraint(f"status IN ({sql_values(AssignmentStatus)})", name="status"),
        CheckConstraint(f"reason IN ({sql_values(AlertReason)})", name="reason"),
        CheckConstraint(f"routed_via IN ({sql_values(RoutedVia)})", name="routed_via"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    alert_id: Mapped[int] = mapped_column(BigIntegerId)
    # As the alert stores it (the pseudonym when pseudonymisation is on).
    customer_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    # The customer's branch (profile), else the relationship manager's, else the central one.
    branch: Mapped[str] = mapped_column(String(64))
    # None only while the alert waits in the central queue with no one to take it.
    assignee_id: Mapped[str | None] = mapped_column(String(64))
    routed_via: Mapped[str] = mapped_column(String(24))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accept_by: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    accepted_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AssignmentEvent(Base):
    """One entry of a routed alert's trail: append-only (a trigger refuses updates)."""

    __tablename__ = "assignment_event"
    __table_args__ = (
        Index("ix_assignment_event_assignment_id_id", "assignment_id", "id"),
        CheckConstraint(f"kind IN ({sql_values(AssignmentEventKind)})", name="kind"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(
        BigIntegerId, ForeignKey("alert_assignment.id", ondelete="CASCADE")
    )
    tenant: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The staff id acting, or 'system' for routing and the sweep.
    actor: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str | None] = mapped_column(String(64))
    from_value: Mapped[str | None] = mapped_column(String(64))
    to_value: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))


staff_table = cast(Table, Staff.__table__)
staff_absence_table = cast(Table, StaffAbsence.__table__)
complaint_table = cast(Table, Complaint.__table__)
case_event_table = cast(Table, CaseEvent.__table__)
alert_assignment_table = cast(Table, AlertAssignment.__table__)
assignment_event_table = cast(Table, AssignmentEvent.__table__)
