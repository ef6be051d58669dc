"""a transaction's amount and direction as typed columns of ``customer_event``, indexed with
the tenant, customer, type and time

The needs warning's idle-inflow rule (app/customers/needs.py) sums the debits a customer
made after each large credit; reading them from the JSON payload cost more than the rest of
an intake call. ``amount`` and ``direction`` keep what the payload of a ``transaction`` says
(None for the other types); the index (tenant, customer_id, type, direction, occurred_at,
amount) lets the database add the debits up without reading the rows. The stored
transactions are filled from their payloads here, in one UPDATE. Down drops both.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07 01:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | Sequence[str] | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_customer_event_tenant_customer_type"
COLUMNS = ("tenant", "customer_id", "type", "direction", "occurred_at", "amount")


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not a batch copy: the table is the largest of the database.
    op.add_column("customer_event", sa.Column("amount", sa.Float(precision=53), nullable=True))
    op.add_column("customer_event", sa.Column("direction", sa.String(length=8), nullable=True))
    event = sa.table(
        "customer_event",
        sa.column("type", sa.String()),
        sa.column("payload", sa.JSON()),
        sa.column("amount", sa.Float(precision=53)),
        sa.column("direction", sa.String()),
    )
    op.execute(
        event.update()
        .where(event.c.type == "transaction")
        .values(
            amount=event.c.payload["amount"].as_float(),
            direction=event.c.payload["direction"].as_string(),
        )
    )
    op.create_index(INDEX, "customer_event", list(COLUMNS), unique=False)


def downgrade() -> None:
    # SQLite >= 3.35 drops an unindexed column in place: the index goes first.
    op.drop_index(INDEX, table_name="customer_event")
    op.drop_column("customer_event", "direction")
    op.drop_column("customer_event", "amount")
