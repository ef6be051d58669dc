"""Stored shape of the behaviour trail: one row per event, kept as received."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.customers.schemas import EventType
from app.db.base import Base
from app.scoring.tables import BigIntegerId, JSONDocument, UTCDateTime

# An event id is unique per tenant; rows without a tenant count as one tenant. The unique
# constraint covers tagged rows; a partial unique index the untagged ones (a NULL never
# equals another in a unique constraint).
UNTAGGED = "tenant IS NULL"
EVENT_TYPES_CHECK = "type IN ({})".format(", ".join(f"'{t.value}'" for t in EventType))


CAMPAIGN_RESPONSES = "type = 'campaign_response'"


class CustomerEvent(Base):
    """One event of a customer's trail: its type, when it happened and when it arrived."""

    __tablename__ = "customer_event"
    __table_args__ = (
        UniqueConstraint("tenant", "event_id", name="uq_customer_event_tenant_event_id"),
        Index(
            "uq_customer_event_event_id_untagged",
            "event_id",
            unique=True,
            sqlite_where=text(UNTAGGED),
            postgresql_where=text(UNTAGGED),
        ),
        # A customer's trail in time order (reads, and the features built from it).
        Index("ix_customer_event_customer_id_occurred_at", "customer_id", "occurred_at"),
        # A tenant's campaign responses in time order: a campaign report's responses and the
        # mark its stored copy is checked against, without reading the rest of the trail.
        Index(
            "ix_customer_event_campaign_response",
            "tenant",
            "occurred_at",
            "id",
            sqlite_where=text(CAMPAIGN_RESPONSES),
            postgresql_where=text(CAMPAIGN_RESPONSES),
        ),
        # A customer's events of one type (and direction) in time order, with the amount: the
        # needs rules sum the debits after an inflow from this index alone.
        Index(
            "ix_customer_event_tenant_customer_type",
            "tenant",
            "customer_id",
            "type",
            "direction",
            "occurred_at",
            "amount",
        ),
        CheckConstraint(EVENT_TYPES_CHECK, name="type"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    # The calling client's tenant (None: none); never taken from the request body.
    tenant: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    # The pseudonym when a secret is configured, else the bank's id.
    customer_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The API request's id, or ingest:<run>:<chunk> for a file.
    request_id: Mapped[str] = mapped_column(String(64))
    # The fields of the event's type (the common ones are columns).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # A transaction's amount and direction, also in the payload, as typed columns for the
    # reads that filter or sum them (None for the other types).
    amount: Mapped[float | None] = mapped_column(Float(precision=53))
    direction: Mapped[str | None] = mapped_column(String(8))


customer_event_table = cast(Table, CustomerEvent.__table__)


# The running aggregates of the trail, kept in the intake's transaction (app/customers/
# features.py defines what each event adds). Their key holds the tenant as '' when untagged:
# a NULL never conflicts in a unique key, and the upserts need one.
UNTAGGED_KEY = ""


class CustomerMonth(Base):
    """One customer's counters in one calendar month (UTC)."""

    __tablename__ = "customer_month"
    __table_args__ = (
        UniqueConstraint("tenant", "customer_id", "month", name="uq_customer_month_key"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    # year * 12 + month - 1
    month: Mapped[int] = mapped_column(Integer)
    transactions: Mapped[int] = mapped_column(Integer)
    digital_logins: Mapped[int] = mapped_column(Integer)
    website_visits: Mapped[int] = mapped_column(Integer)
    branch_visits: Mapped[int] = mapped_column(Integer)
    complaints: Mapped[int] = mapped_column(Integer)
    campaign_contacts: Mapped[int] = mapped_column(Integer)
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CustomerMonthLatest(Base):
    """The latest value of one thing (a profile field, a product's state or balance, a
    complaint's status) in one customer-month, with when it occurred."""

    __tablename__ = "customer_month_latest"
    __table_args__ = (
        UniqueConstraint(
            "tenant", "customer_id", "month", "kind", "key", name="uq_customer_month_latest_key"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    month: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    number: Mapped[float | None] = mapped_column(Float(precision=53))
    text: Mapped[str | None] = mapped_column(String(64))


customer_month_table = cast(Table, CustomerMonth.__table__)
customer_month_latest_table = cast(Table, CustomerMonthLatest.__table__)


class RescorePending(Base):
    """A customer to re-assess after a material event, written with the event; removed once
    its assessment is stored."""

    __tablename__ = "rescore_pending"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))  # '' when untagged, as the aggregates
    customer_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


rescore_pending_table = cast(Table, RescorePending.__table__)


class CustomerStage(Base):
    """A customer's current lifecycle stage (app/customers/lifecycle.py), with what the stage
    rules keep beyond the aggregates: whether the latest churn assessment was at risk."""

    __tablename__ = "customer_stage"
    __table_args__ = (
        UniqueConstraint("tenant", "customer_id", name="uq_customer_stage_key"),
        Index("ix_customer_stage_review_at", "review_at"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))  # '' when untagged, as the aggregates
    customer_id: Mapped[str] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    at_risk: Mapped[bool] = mapped_column(Boolean)
    risk_assessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When time alone would change the stage (new to active, quiet to dormant); None: never.
    review_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerStageTransition(Base):
    """One change of a customer's lifecycle stage: from, to, when it took effect, the rule
    behind it and what noticed it (intake, assessment, sweep)."""

    __tablename__ = "customer_stage_transition"
    __table_args__ = (Index("ix_customer_stage_transition_key", "tenant", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    cause: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


customer_stage_table = cast(Table, CustomerStage.__table__)
customer_stage_transition_table = cast(Table, CustomerStageTransition.__table__)
