"""Stored shapes: one row per scored customer per request."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base

# JSON text on every backend, not PostgreSQL's JSONB: documents are written once and read
# whole, never queried inside, and JSONB's parse on insert was ~9 ms of server CPU per 1,000
# score rows (migration 0005).
JSONDocument = JSON()

# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigIntegerId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on every backend: stored as UTC, read back aware.

    SQLite has no timezone type and would hand back naive values; PostgreSQL's
    ``timestamptz`` already round-trips, so the conversion is a no-op there.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a timezone-aware column; attach a tzinfo")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Score(Base):
    """One model output for one customer, with its reasons and the features it saw."""

    __tablename__ = "score"
    __table_args__ = (
        # History reads: one customer's scores for one task, newest first.
        Index("ix_score_customer_id_task_created_at", "customer_id", "task", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(128))
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    reasons: Mapped[list[Any]] = mapped_column(JSONDocument)
    features: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The calling client's tenant (None: none); reads are limited to it when isolation is on.
    tenant: Mapped[str | None] = mapped_column(String(64))
    # Who asked: "api", "batch" or "event"; the same row shape whatever the source.
    source: Mapped[str] = mapped_column(String(16))
    # The customer's lifecycle stage when scored (prospect, new, existing, lost).
    stage: Mapped[str | None] = mapped_column(String(16))
    # The headline: churn or conversion probability, the predicted tier's, the first offer's.
    probability: Mapped[float | None] = mapped_column(Float)
    # Its label: risk band, priority, tier, first product offered.
    band: Mapped[str | None] = mapped_column(String(64))
    # Whether the alert policy's threshold for the customer's stage was crossed.
    alert: Mapped[bool | None] = mapped_column(Boolean)


# The Core table behind Score, for set-based statements that need no ORM objects.
score_table = cast(Table, Score.__table__)


class ScoreAlertCandidate(Base):
    """A churn score that crossed the alert threshold, waiting for the alert processor.

    The writer inserts it in the transaction of its score, and the processor deletes it in the
    transaction that records it on an alert (a transactional inbox): a committed score is never
    missing from the alerts, and a processed candidate is never processed again.
    """

    __tablename__ = "score_alert_candidate"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    # As stored with the score: pseudonymised when a secret is configured.
    customer_id: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str | None] = mapped_column(String(64))
    stage: Mapped[str | None] = mapped_column(String(16))
    probability: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[list[Any]] = mapped_column(JSONDocument)
    model_version: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


score_alert_candidate_table = cast(Table, ScoreAlertCandidate.__table__)


class RequestStatus(StrEnum):
    """What became of a request that writes: a record exists only once its rows committed."""

    COMMITTED = "committed"


class RequestRecord(Base):
    """One scoring request whose rows are committed, stored in the transaction of its rows.

    A committed request therefore always has its record, and a request without a record
    wrote nothing. ``key_digest`` (the lookup digest of the caller's Idempotency-Key, unique)
    lets a retry after a 5xx find the first try's result instead of writing again.
    """

    __tablename__ = "request_record"
    __table_args__ = (CheckConstraint("status IN ('committed')", name="status"),)

    # Made by the service for every request (time-ordered, unique): unique per tenant too.
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    # The scoring task, or "assessment".
    operation: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    # Tasks whose rows the request wrote (an assessment writes several).
    tasks: Mapped[list[str]] = mapped_column(JSONDocument)
    customers: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    key_digest: Mapped[str | None] = mapped_column(String(64), unique=True)
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # The response as first sent, sealed with the Idempotency-Key's material (it echoes
    # customer ids that pseudonymisation keeps out of the database); None without a key.
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime())


request_record_table = cast(Table, RequestRecord.__table__)


class ShadowScore(Base):
    """A challenger's score of a customer the champion scored in the same request, kept apart
    from ``score``: joined to the champion's rows by ``request_id`` (and customer)."""

    __tablename__ = "shadow_score"
    __table_args__ = (Index("ix_shadow_score_task_created_at", "task", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    # As stored with the champion's score: pseudonymised when a secret is configured.
    customer_id: Mapped[str] = mapped_column(String(128))
    champion_version: Mapped[str] = mapped_column(String(32))
    challenger_version: Mapped[str] = mapped_column(String(32))
    champion_probability: Mapped[float] = mapped_column(Float)
    challenger_probability: Mapped[float] = mapped_column(Float)
    champion_band: Mapped[str | None] = mapped_column(String(64))
    challenger_band: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


shadow_score_table = cast(Table, ShadowScore.__table__)
