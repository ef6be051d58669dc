"""Stored shapes of churn alerts, their history, and the notification outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.alerts.states import AlertCause, AlertStatus, sql_values
from app.db.base import Base
from app.scoring.tables import BigIntegerId, JSONDocument, UTCDateTime

# An alert is active until it is resolved. The predicate is written once and used verbatim by
# the partial indexes and by every lookup of active alerts, so both SQLite and PostgreSQL
# can answer those lookups from an index.
ACTIVE_ALERT = f"status != '{AlertStatus.RESOLVED.value}'"
# One active alert per customer id, cause and tenant; rows without a tenant count as one tenant. Two
# partial unique indexes say it on both databases (a NULL never equals another in an index).
ACTIVE_UNTAGGED_ALERT = f"{ACTIVE_ALERT} AND tenant IS NULL"
ACTIVE_TAGGED_ALERT = f"{ACTIVE_ALERT} AND tenant IS NOT NULL"


class Alert(Base):
    """An early warning for one customer (churn, or a need the trail shows), from its opening
    to its resolution."""

    __tablename__ = "alert"
    __table_args__ = (
        # Lookups of a customer's active alerts, of any tenant or of one.
        Index(
            "ix_alert_customer_id_active",
            "customer_id",
            sqlite_where=text(ACTIVE_ALERT),
            postgresql_where=text(ACTIVE_ALERT),
        ),
        # One active alert per customer and cause of a tenant, even when two transactions open
        # one at the same time (insert_new_alerts names the index its rows fall under).
        Index(
            "uq_alert_reason_customer_id_active_untagged",
            "reason",
            "customer_id",
            unique=True,
            sqlite_where=text(ACTIVE_UNTAGGED_ALERT),
            postgresql_where=text(ACTIVE_UNTAGGED_ALERT),
        ),
        Index(
            "uq_alert_tenant_reason_customer_id_active",
            "tenant",
            "reason",
            "customer_id",
            unique=True,
            sqlite_where=text(ACTIVE_TAGGED_ALERT),
            postgresql_where=text(ACTIVE_TAGGED_ALERT),
        ),
        Index("ix_alert_status_opened_at", "status", "opened_at"),
        Index("ix_alert_owner", "owner"),
        # The cooldown's lookup: a customer's latest resolution.
        Index("ix_alert_customer_id_resolved_at", "customer_id", "resolved_at"),
        CheckConstraint(f"status IN ({sql_values(AlertStatus)})", name="status"),
        CheckConstraint(f"reason IN ({sql_values(AlertCause)})", name="reason"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    # Churn, or the need rule that opened it (app/customers/needs.py).
    reason: Mapped[str] = mapped_column(
        String(24), server_default=text(f"'{AlertCause.CHURN.value}'")
    )
    status: Mapped[str] = mapped_column(String(16))
    # The churn score's band and probabilities; None on a need alert (no score opened it).
    risk_band: Mapped[str | None] = mapped_column(String(8))
    probability: Mapped[float | None] = mapped_column(Float)
    peak_probability: Mapped[float | None] = mapped_column(Float)
    # A need alert's suggested product (None on a churn alert).
    product: Mapped[str | None] = mapped_column(String(64))
    above_threshold: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[Any]] = mapped_column(JSONDocument)
    actions: Mapped[list[str]] = mapped_column(JSONDocument)
    model_version: Mapped[str | None] = mapped_column(String(32))
    score_count: Mapped[int] = mapped_column(Integer)
    opened_request_id: Mapped[str] = mapped_column(String(64))
    last_request_id: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_scored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    owner: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(16))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    # The tenant of the score that opened it (None: none); reads are limited to it.
    tenant: Mapped[str | None] = mapped_column(String(64))


class AlertEvent(Base):
    """One entry of an alert's history: a score, a threshold crossing or a transition."""

    __tablename__ = "alert_event"
    __table_args__ = (Index("ix_alert_event_alert_id_id", "alert_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigIntegerId, ForeignKey("alert.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    by: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    probability: Mapped[float | None] = mapped_column(Float)
    risk_band: Mapped[str | None] = mapped_column(String(8))
    request_id: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class OutboxMessage(Base):
    """A notification to deliver, written in the transaction that produced it."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        # The dispatcher's poll: pending messages that are due, oldest first.
        Index("ix_outbox_message_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_outbox_message_alert_id", "alert_id"),
    )

    # A UUID made by the writer: the receivers' idempotency key and the e-mail Message-ID.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(String(320))
    alert_id: Mapped[int | None] = mapped_column(
        BigIntegerId, ForeignKey("alert.id", ondelete="CASCADE")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    # The tenant of the alert (None: none): its webhook goes to that tenant's receiver only.
    tenant: Mapped[str | None] = mapped_column(String(64))


class OutboxAttempt(Base):
    """One try at delivering an outbox message, successful or not."""

    __tablename__ = "outbox_attempt"
    __table_args__ = (Index("ix_outbox_attempt_message_id", "message_id"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("outbox_message.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    dispatcher: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(500))


class DigestEntry(Base):
    """A new alert waiting to be listed in a recipient's next e-mail digest."""

    __tablename__ = "digest_entry"
    __table_args__ = (Index("ix_digest_entry_message_id_recipient", "message_id", "recipient"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    recipient: Mapped[str] = mapped_column(String(320))
    alert_id: Mapped[int] = mapped_column(BigIntegerId, ForeignKey("alert.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when a digest message takes the entry; no foreign key, so the claim can come first.
    message_id: Mapped[str | None] = mapped_column(String(36))


# Core tables, for set-based statements on the hot path.
alert_table = cast(Table, Alert.__table__)
alert_event_table = cast(Table, AlertEvent.__table__)
outbox_message_table = cast(Table, OutboxMessage.__table__)
outbox_attempt_table = cast(Table, OutboxAttempt.__table__)
digest_entry_table = cast(Table, DigestEntry.__table__)
