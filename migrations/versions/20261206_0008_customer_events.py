"""the customer's behaviour trail: one row per event, unique per tenant and event id

Events arrive from core banking (``POST /v1/events``, ``cvm ingest``) with the source's own
id; a repeated id of the same tenant is a duplicate and is not stored again. Each row keeps
when the event happened and when it was received, so late and out-of-order events are kept
as they are and aggregated by occurrence.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types and predicates in app/customers/tables.py: a migration must not
# change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
UNTAGGED = "tenant IS NULL"
EVENT_TYPES = (
    "customer_profile",
    "account_opened",
    "account_closed",
    "balance_snapshot",
    "transaction",
    "digital_session",
    "contact",
    "complaint",
    "campaign_response",
)


def upgrade() -> None:
    op.create_table(
        "customer_event",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "type IN ({})".format(", ".join(f"'{t}'" for t in EVENT_TYPES)),
            name=op.f("ck_customer_event_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_event")),
        sa.UniqueConstraint("tenant", "event_id", name="uq_customer_event_tenant_event_id"),
    )
    op.create_index(
        "uq_customer_event_event_id_untagged",
        "customer_event",
        ["event_id"],
        unique=True,
        sqlite_where=sa.text(UNTAGGED),
        postgresql_where=sa.text(UNTAGGED),
    )
    op.create_index(
        "ix_customer_event_customer_id_occurred_at",
        "customer_event",
        ["customer_id", "occurred_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_customer_event_customer_id_occurred_at", table_name="customer_event")
    op.drop_index("uq_customer_event_event_id_untagged", table_name="customer_event")
    op.drop_table("customer_event")
