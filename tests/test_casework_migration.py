"""Migration 0011: casework tables go up, down and up again with rows present, and the
audit trail's append-only trigger comes and goes with them."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"


def _fill(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO staff (tenant, staff_id, name, email, roles, branch, max_severity,"
                " max_amount, active, created_at, updated_at) VALUES ('t', 'rm-1', 'A',"
                " 'a@b.c', '[\"relationship_manager\"]', 'n', 'low', 10, true, :now, :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO staff_absence (staff_pk, starts_on, ends_on, created_at)"
                " SELECT id, '2027-01-01', '2027-01-02', :now FROM staff"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO complaint (tenant, customer_id, channel, category, product,"
                " severity, amount_at_stake, description, implicated, status, branch,"
                " received_by, owner_id, escalation_level, profile, received_at,"
                " clock_started_at, due_at, ceiling_at, milestones, complex_case, extensions,"
                " paused_s, updated_at) VALUES ('t', 'C-1', 'branch', 'fees', 'p', 'low', 1,"
                " 'd', '[]', 'received', 'n', 'rm-1', 'rm-1', 0, 'cn', :now, :now, :now,"
                " :now, '{}', false, 0, 0, :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO case_event (complaint_id, tenant, kind, at, actor)"
                " SELECT id, 't', 'created', :now, 'rm-1' FROM complaint"
            ),
            {"now": NOW},
        )


def test_up_down_up_with_rows(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0011")
    _fill(database)
    with pytest.raises(DBAPIError, match="append-only"), database.begin() as connection:
        connection.execute(text("UPDATE case_event SET actor = 'someone else'"))
    migrate.downgrade(url, "0010")
    tables = set(inspect(database).get_table_names())
    assert tables.isdisjoint({"staff", "staff_absence", "complaint", "case_event"})
    assert "customer_event" in tables
    migrate.upgrade(url, "0011")
    _fill(database)
    with database.connect() as connection:
        counts = [
            connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("staff", "staff_absence", "complaint", "case_event")
        ]
    assert counts == [1, 1, 1, 1]
    with pytest.raises(DBAPIError, match="append-only"), database.begin() as connection:
        connection.execute(text("UPDATE case_event SET actor = 'someone else'"))
