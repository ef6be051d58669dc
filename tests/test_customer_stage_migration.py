"""Migration 0013: the lifecycle stage tables go up, down and up again with rows present."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"


def _fill(engine: Engine, customer: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO customer_event (tenant, event_id, customer_id, type, occurred_at,"
                " received_at, request_id, payload) VALUES ('t', :c, :c, 'transaction', :now,"
                " :now, 'r', '{}')"
            ),
            {"c": customer, "now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO customer_stage (tenant, customer_id, stage, since, at_risk,"
                " risk_assessed_at, updated_at) VALUES ('t', :c, 'active', :now, false, NULL,"
                " :now)"
            ),
            {"c": customer, "now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO customer_stage_transition (tenant, customer_id, from_stage,"
                " to_stage, at, cause, source, recorded_at) VALUES ('t', :c, 'new', 'active',"
                " :now, 'established', 'sweep', :now)"
            ),
            {"c": customer, "now": NOW},
        )


def test_up_down_up_with_rows(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0013")
    _fill(database, "C-1")
    migrate.downgrade(url, "0012")
    tables = set(inspect(database).get_table_names())
    assert tables.isdisjoint({"customer_stage", "customer_stage_transition"})
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM customer_event")) == 1
    migrate.upgrade(url, "0013")
    _fill(database, "C-2")
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM customer_stage")) == 1
        assert connection.scalar(text("SELECT count(*) FROM customer_stage_transition")) == 1
