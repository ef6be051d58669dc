"""Migration 0009: the running aggregates come and go with events present, and an upgrade
after a downgrade aggregates what the intake writes again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from app.customers.features import derive_features, month_index
from app.customers.repository import read_months
from app.customers.service import EVENT, record_events
from app.db import migrate
from app.db.session import create_db_engine
from tests.db_support import temporary_postgres_database, temporary_sqlite_database

WHEN = datetime(2026, 3, 14, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str, Engine]]:
    """A database at revision 0008, with one event stored."""
    factory = (
        temporary_sqlite_database if request.param == "sqlite" else temporary_postgres_database
    )
    with factory() as url:
        migrate.upgrade(url, "0008")
        engine = create_db_engine(url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO customer_event (tenant, event_id, customer_id, type, "
                    "occurred_at, received_at, request_id, payload) VALUES (NULL, 'e-0', 'C-1', "
                    "'transaction', :at, :at, 'r-0', :payload)"
                ),
                {"at": WHEN, "payload": '{"amount": 5.0, "direction": "debit", "channel": "card"}'},
            )
        yield url, engine
        engine.dispose()


def _ingest(engine: Engine, event_id: str) -> None:
    event = EVENT.validate_python(
        {
            "event_id": event_id,
            "type": "transaction",
            "customer_id": "C-1",
            "occurred_at": WHEN,
            "amount": 5.0,
            "direction": "debit",
            "channel": "card",
        },
        strict=False,
    )
    with Session(engine) as session:
        record_events(
            session,
            events=[event],
            tenant=None,
            request_id="r-1",
            received_at=WHEN,
            pseudonymizer=None,
        )


def _transactions(engine: Engine) -> int:
    month = month_index(WHEN)
    with Session(engine) as session:
        counts, latest = read_months(session, tenant=None, customer_ids=["C-1"], until=month)
    value = derive_features(month, counts, latest)["transactions"]
    assert isinstance(value, int)
    return value


def test_up_down_up_with_events_present(database: tuple[str, Engine]) -> None:
    url, engine = database
    migrate.upgrade(url)
    _ingest(engine, "e-1")
    assert _transactions(engine) == 1  # the event stored before 0009 is not aggregated by it
    migrate.downgrade(url, "0008")
    tables = set(inspect(engine).get_table_names())
    assert not tables & {"customer_month", "customer_month_latest", "rescore_pending"}
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM customer_event")) == 2
    migrate.upgrade(url)
    _ingest(engine, "e-2")
    _ingest(engine, "e-1")  # a duplicate: not counted
    assert _transactions(engine) == 1
