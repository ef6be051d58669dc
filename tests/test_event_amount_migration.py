"""Migration 0031: a transaction's amount and direction become typed columns, filled from
the payloads of the events already stored (the other types keep NULL); up, down and up again
with rows present, and the intake fills them after it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from app.customers.service import EVENT, record_events
from app.db import migrate
from app.db.session import create_db_engine
from tests.db_support import temporary_postgres_database, temporary_sqlite_database

REVISION, PREVIOUS = "0031", "0030"
WHEN = datetime(2026, 3, 14, 12, tzinfo=UTC)
INSERT = (
    "INSERT INTO customer_event (tenant, event_id, customer_id, type, occurred_at, received_at,"
    " request_id, payload) VALUES (:tenant, :event_id, 'C-1', :type, :at, :at, 'r-0', :payload)"
)
OLD_ROWS = [
    ("t", "e-credit", "transaction", '{"amount": 30000.5, "direction": "credit", "channel": "x"}'),
    (None, "e-debit", "transaction", '{"amount": 12, "direction": "debit", "channel": "card"}'),
    ("t", "e-session", "digital_session", '{"platform": "web"}'),
    ("t", "e-balance", "balance_snapshot", '{"product": "savings", "balance": 10.0}'),
]
INDEX = "ix_customer_event_tenant_customer_type"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str, Engine]]:
    """A database at the revision before 0031, with old events of several types stored."""
    factory = (
        temporary_sqlite_database if request.param == "sqlite" else temporary_postgres_database
    )
    with factory() as url:
        migrate.upgrade(url, PREVIOUS)
        engine = create_db_engine(url)
        with engine.begin() as connection:
            for tenant, event_id, type_, payload in OLD_ROWS:
                connection.execute(
                    text(INSERT),
                    {
                        "tenant": tenant,
                        "event_id": event_id,
                        "type": type_,
                        "at": WHEN,
                        "payload": payload,
                    },
                )
        yield url, engine
        engine.dispose()


def _typed(engine: Engine) -> dict[str, tuple[float | None, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT event_id, amount, direction FROM customer_event"))
        return {row.event_id: (row.amount, row.direction) for row in rows}


def _columns(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("customer_event")}


def test_up_down_up_fills_the_typed_columns_from_old_rows(database: tuple[str, Engine]) -> None:
    url, engine = database
    migrate.upgrade(url, REVISION)
    assert _typed(engine) == {
        "e-credit": (30_000.5, "credit"),
        "e-debit": (12.0, "debit"),
        "e-session": (None, None),
        "e-balance": (None, None),
    }
    assert INDEX in {index["name"] for index in inspect(engine).get_indexes("customer_event")}

    migrate.downgrade(url, PREVIOUS)
    assert {"amount", "direction"}.isdisjoint(_columns(engine))
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM customer_event")) == len(OLD_ROWS)

    migrate.upgrade(url, REVISION)
    assert _typed(engine)["e-credit"] == (30_000.5, "credit")
    # The intake fills them for what it stores after the migration.
    event = EVENT.validate_python(
        {
            "event_id": "e-new",
            "type": "transaction",
            "customer_id": "C-1",
            "occurred_at": WHEN,
            "amount": "7.25",
            "direction": "debit",
            "channel": "card",
        },
        strict=False,
    )
    with Session(engine) as session:
        record_events(
            session,
            events=[event],
            tenant="t",
            request_id="r-1",
            received_at=WHEN,
            pseudonymizer=None,
        )
    assert _typed(engine)["e-new"] == (7.25, "debit")
