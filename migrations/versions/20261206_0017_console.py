"""the operator console: staff passwords and login sessions

``staff_credential`` holds one argon2id hash per staff member (tenant, staff id), the count of
wrong passwords in a row and the lockout they led to, and the language chosen. A
``console_session`` row per logged-in browser keeps the cookie's SHA-256 (never the cookie),
its CSRF token and when it expires.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 13:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/console/tables.py: a migration must not change when the models do.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
UNTAGGED = "tenant IS NULL"


def upgrade() -> None:
    op.create_table(
        "staff_credential",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", TIMESTAMP, nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_credential")),
        sa.UniqueConstraint("tenant", "staff_id", name="uq_staff_credential_tenant_staff_id"),
    )
    op.create_index(
        "uq_staff_credential_staff_id_untagged",
        "staff_credential",
        ["staff_id"],
        unique=True,
        sqlite_where=sa.text(UNTAGGED),
        postgresql_where=sa.text(UNTAGGED),
    )
    op.create_table(
        "console_session",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_session")),
        sa.UniqueConstraint("token_digest", name=op.f("uq_console_session_token_digest")),
    )
    op.create_index("ix_console_session_expires_at", "console_session", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_session_expires_at", table_name="console_session")
    op.drop_table("console_session")
    op.drop_index("uq_staff_credential_staff_id_untagged", table_name="staff_credential")
    op.drop_table("staff_credential")
