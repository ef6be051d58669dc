"""Migration 0014: alert routing goes up, down and up again with rows present; staff keep
their records (and get an empty list of backups); the trail's trigger comes and goes."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"
REVISION, PREVIOUS = "0014", "0013"
TABLES = {"alert_assignment", "assignment_event", "do_not_contact", "contact_record"}


def _staff(engine: Engine, staff_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO staff (tenant, staff_id, name, email, roles, branch, max_severity,"
                " max_amount, active, created_at, updated_at) VALUES ('t', :id, 'A',"
                " 'a@b.c', '[\"relationship_manager\"]', 'n', 'low', 10, true, :now, :now)"
            ),
            {"id": staff_id, "now": NOW},
        )


def _assignment(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO alert_assignment (tenant, alert_id, customer_id, reason, status,"
                " branch, assignee_id, routed_via, assigned_at, accept_by, updated_at) VALUES"
                " ('t', 1, 'C-1', 'churn', 'assigned', 'n', 'rm-1', 'relationship_manager',"
                " :now, :now, :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO assignment_event (assignment_id, tenant, kind, at, actor)"
                " SELECT id, 't', 'routed', :now, 'system' FROM alert_assignment"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO do_not_contact (tenant, customer_id, reason, recorded_by,"
                " created_at) VALUES ('t', 'C-1', 'asked', 'cl_x', :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO contact_record (tenant, customer_id, channel, purpose, outcome, at,"
                " recorded_by) VALUES ('t', 'C-1', 'email', 'retention', 'negative', :now,"
                " 'cl_x')"
            ),
            {"now": NOW},
        )


def test_up_down_up_with_rows(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, PREVIOUS)
    _staff(database, "rm-1")  # a record from before backups existed
    migrate.upgrade(url, REVISION)
    with database.connect() as connection:
        assert connection.scalar(text("SELECT backups FROM staff")) in ("[]", [])
    _assignment(database)
    with pytest.raises(DBAPIError, match="append-only"), database.begin() as connection:
        connection.execute(text("UPDATE assignment_event SET actor = 'someone else'"))
    with pytest.raises(DBAPIError), database.begin() as connection:  # one open per customer
        connection.execute(
            text(
                "INSERT INTO alert_assignment (tenant, alert_id, customer_id, reason, status,"
                " branch, routed_via, assigned_at, accept_by, updated_at) VALUES ('t', 2,"
                " 'C-1', 'churn', 'assigned', 'n', 'central_queue', :now, :now, :now)"
            ),
            {"now": NOW},
        )
    migrate.downgrade(url, PREVIOUS)
    inspector = inspect(database)
    assert TABLES.isdisjoint(inspector.get_table_names())
    assert "backups" not in {c["name"] for c in inspector.get_columns("staff")}
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM staff")) == 1
    migrate.upgrade(url, REVISION)
    _assignment(database)
    with database.connect() as connection:
        counts = [
            connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("staff", *sorted(TABLES))
        ]
    assert counts == [1, 1, 1, 1, 1]
