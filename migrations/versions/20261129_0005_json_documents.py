"""JSON documents as json, not jsonb, on PostgreSQL

Scores, alert reasons and actions, and outbox payloads are written once and read whole; nothing
queries inside them. JSONB parses every document into its binary form on insert: for a
1,000-customer call's score rows that was ~9 of the ~24 ms the server spent on the COPY
(bench/README.md, "persist_ceiling.py"). ``json`` checks the syntax and keeps the text as
written, key order included. SQLite stores JSON as text either way: nothing changes there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:00:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOCUMENTS = {
    "score": ("outputs", "reasons", "features"),
    "alert": ("reasons", "actions"),
    "outbox_message": ("payload",),
}


def _retype(to: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in DOCUMENTS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {to} USING {c}::{to}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
