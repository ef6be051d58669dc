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
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.casework.states import StaffRole, sql_values
from app.customers.schemas import Severity
from app.db.base import Base
from app.scoring.tables import BigIntegerId, JSONDocument, UTCDateTime

# A staff id is unique per tenant; rows without a tenant count as one tenant (a NULL never
# equals another in a unique constraint, so a partial unique index covers those).
UNTAGGED = "tenant IS NULL"
ROLES = sql_values(StaffRole)


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


staff_table = cast(Table, Staff.__table__)
staff_absence_table = cast(Table, StaffAbsence.__table__)
