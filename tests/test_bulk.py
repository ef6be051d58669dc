"""app/db/bulk.py on both databases: many rows upserted in one statement come back as they
were sent (times to the microsecond, NULLs, booleans), a naive time is refused as the column
type refuses it, and ``one_of`` finds exactly the ids asked for, none when asked for none."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import StatementError

from app.customers.tables import customer_stage_table
from app.db.bulk import insert_rows, one_of

T0 = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
STAGE = customer_stage_table.c


def _row(tenant: str, n: int, **changes: Any) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "customer_id": f"B-{n:04d}",
        "stage": "new",
        "since": T0 + timedelta(seconds=n),
        "at_risk": n % 2 == 0,
        "risk_assessed_at": None if n % 3 else T0,
        "review_at": T0 + timedelta(days=30, microseconds=n),
        "updated_at": T0,
        **changes,
    }


def _replace(insert: Any) -> Any:
    return insert.on_conflict_do_update(
        index_elements=[STAGE.tenant, STAGE.customer_id],
        set_={"stage": insert.excluded.stage, "updated_at": insert.excluded.updated_at},
    )


def _stored(engine: Engine, tenant: str) -> list[dict[str, Any]]:
    columns = [STAGE[name] for name in _row(tenant, 0)]
    with engine.connect() as connection:
        rows = connection.execute(
            select(*columns).where(STAGE.tenant == tenant).order_by(STAGE.customer_id)
        )
        return [dict(row._mapping) for row in rows]


def test_rows_upserted_in_one_statement_come_back_as_sent(engine: Engine) -> None:
    tenant = f"bulk-{uuid.uuid4().hex[:8]}"
    rows = [_row(tenant, n) for n in range(300)]
    with engine.begin() as connection:
        insert_rows(connection, customer_stage_table, rows, on_conflict=_replace)
        insert_rows(connection, customer_stage_table, [], on_conflict=_replace)
    assert _stored(engine, tenant) == rows
    later = T0 + timedelta(hours=1)
    changed = [_row(tenant, n, stage="active", updated_at=later) for n in (5, 299)]
    with engine.begin() as connection:
        insert_rows(connection, customer_stage_table, changed, on_conflict=_replace)
    stored = _stored(engine, tenant)
    assert [row["customer_id"] for row in stored if row["stage"] == "active"] == [
        "B-0005",
        "B-0299",
    ]
    assert stored[5] == {**rows[5], "stage": "active", "updated_at": later}


def test_a_naive_time_is_refused(engine: Engine) -> None:
    tenant = f"bulk-{uuid.uuid4().hex[:8]}"
    naive = _row(tenant, 1, since=T0.replace(tzinfo=None))
    with pytest.raises((ValueError, StatementError)), engine.begin() as connection:
        insert_rows(connection, customer_stage_table, [_row(tenant, 0), naive])
    assert _stored(engine, tenant) == []


def test_one_of_finds_exactly_the_ids_asked_for(engine: Engine) -> None:
    tenant = f"bulk-{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        insert_rows(connection, customer_stage_table, [_row(tenant, n) for n in range(50)])

    def found(ids: list[str]) -> list[str]:
        with engine.connect() as connection:
            return list(
                connection.scalars(
                    select(STAGE.customer_id)
                    .where(STAGE.tenant == tenant, one_of(connection, STAGE.customer_id, ids))
                    .order_by(STAGE.customer_id)
                )
            )

    asked = [f"B-{n:04d}" for n in range(0, 60, 7)]
    assert found(asked) == [customer for customer in asked if customer < "B-0050"]
    assert found([]) == []
    # A longer id is not cut to the column's length (128) and so matches nothing.
    with engine.begin() as connection:
        insert_rows(connection, customer_stage_table, [_row(tenant, 0, customer_id="Z" * 128)])
    assert found(["Z" * 129]) == []
    assert found(["Z" * 128]) == ["Z" * 128]
