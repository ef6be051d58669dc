"""Stored shapes of the contact policy: do-not-contact flags and the contacts made."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CheckConstraint, Index, String, Table, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.contact.states import ContactChannel, ContactOutcome, ContactPurpose, sql_values
from app.db.base import Base
from app.scoring.tables import BigIntegerId, UTCDateTime

UNTAGGED = "tenant IS NULL"


class DoNotContact(Base):
    """A customer who must not be contacted, on any channel, for any purpose."""

    __tablename__ = "do_not_contact"
    __table_args__ = (
        UniqueConstraint("tenant", "customer_id", name="uq_do_not_contact_tenant_customer_id"),
        Index(
            "uq_do_not_contact_customer_id_untagged",
            "customer_id",
            unique=True,
            sqlite_where=text(UNTAGGED),
            postgresql_where=text(UNTAGGED),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContactRecord(Base):
    """A contact made: when, on which channel, why, and how the customer took it."""

    __tablename__ = "contact_record"
    __table_args__ = (
        Index("ix_contact_record_tenant_customer_id_at", "tenant", "customer_id", "at"),
        CheckConstraint(f"channel IN ({sql_values(ContactChannel)})", name="channel"),
        CheckConstraint(f"purpose IN ({sql_values(ContactPurpose)})", name="purpose"),
        CheckConstraint(
            f"outcome IS NULL OR outcome IN ({sql_values(ContactOutcome)})", name="outcome"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The credential that recorded it.
    recorded_by: Mapped[str] = mapped_column(String(64))


do_not_contact_table = cast(Table, DoNotContact.__table__)
contact_record_table = cast(Table, ContactRecord.__table__)
