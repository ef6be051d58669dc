"""points return and request digest: a reversal may refer to a redemption (the gift given
back) and credit its points, so the sign rule allows a reversal of either sign; each posting
keeps a digest of the request made under its idempotency key

Revision ID: 0028
Revises: 0023
Create Date: 2026-12-06 22:10:00 UTC
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | Sequence[str] | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app/rewards/tables.py's rule, before and after.
SIGN_BEFORE = "(kind = 'earn') = (points > 0)"
SIGN_AFTER = "CASE kind WHEN 'earn' THEN points > 0 WHEN 'reversal' THEN 1 = 1 ELSE points <= 0 END"


def _sign(rule: str) -> None:
    with op.batch_alter_table("points_entry") as batch:
        batch.drop_constraint(op.f("ck_points_entry_sign"), type_="check")
        batch.create_check_constraint("sign", rule)


def upgrade() -> None:
    _sign(SIGN_AFTER)
    with op.batch_alter_table("points_entry") as batch:
        batch.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # A credited reversal cannot be expressed before this revision: refuse rather than lose it.
    bind = op.get_bind()
    credited = bind.exec_driver_sql(
        "SELECT count(*) FROM points_entry WHERE kind = 'reversal' AND points >= 0"
    ).scalar()
    if credited:
        raise RuntimeError(
            f"{credited} gift returns are in the ledger; they cannot be kept below revision 0028"
        )
    with op.batch_alter_table("points_entry") as batch:
        batch.drop_column("request_digest")
    _sign(SIGN_BEFORE)
