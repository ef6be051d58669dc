"""request_record: one row per committed scoring request, written with its rows; the tenant
of each outbox message

A request that timed out (504) still committed, and its retry with the same Idempotency-Key
wrote again. Each request's record is now inserted in the transaction of its score rows; the
unique lookup digest of its Idempotency-Key makes a retry find the first result instead of
writing twice, and ``GET /v1/requests/{id}`` reads what a request wrote.

Notifications are routed per tenant: an outbox message keeps its alert's tenant, so that its
webhook goes to that tenant's receiver only (messages queued before stay untagged).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the type in app/scoring/tables.py: a migration must not change when it does.
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "request_record",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("key_digest", sa.String(length=64), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("committed_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("status IN ('committed')", name=op.f("ck_request_record_status")),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_request_record")),
        sa.UniqueConstraint("key_digest", name=op.f("uq_request_record_key_digest")),
    )
    op.add_column("outbox_message", sa.Column("tenant", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35), not a batch copy of the table: dropping the old
    # table would cascade to its delivery attempts. Held messages stay held (never claimed).
    op.drop_column("outbox_message", "tenant")
    op.drop_table("request_record")
