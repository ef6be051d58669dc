"""the audit trail kept in the database: one row per audit line (when audit_store is on)

``audit_record`` holds what the ``cvm.audit`` line says: when, the tenant, the client and how
it authenticated, the method and route template, the status and outcome, the request id, and
what the handler added (pseudonymised ids, never bodies or raw paths). Read by the console's
audit log page, newest first, by tenant and by client.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06 22:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | Sequence[str] | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of app/security/tables.py's AuditRecord.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_record",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("auth", sa.String(length=16), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_record")),
    )
    op.create_index("ix_audit_record_tenant_id", "audit_record", ["tenant", "id"])
    op.create_index(
        "ix_audit_record_tenant_client_id", "audit_record", ["tenant", "client", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_record_tenant_client_id", table_name="audit_record")
    op.drop_index("ix_audit_record_tenant_id", table_name="audit_record")
    op.drop_table("audit_record")
