"""Migration 0016: the tier movements table goes up, down and up again with rows present."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"


def _fill(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tier_movement (tenant, customer_id, from_tier, to_tier, reason,"
                " policy_version, month, run_id, moved_at) VALUES ('', 'C-1', NULL, 'mass',"
                " 'initial', '1', '2026-11', 'r', :now), ('', 'C-1', 'mass', 'affluent',"
                " 'upgrade', '1', '2026-12', 'r2', :now)"
            ),
            {"now": NOW},
        )


def _fill_trail(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO customer_month (tenant, customer_id, month, transactions,"
                " digital_logins, website_visits, branch_visits, complaints, campaign_contacts)"
                " VALUES ('', 'C-1', 24322, 1, 0, 0, 0, 0, 0)"
            )
        )


def test_up_down_up_with_rows(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0016")
    _fill_trail(database)
    _fill(database)
    migrate.downgrade(url, "0015")
    tables = set(inspect(database).get_table_names())
    assert "tier_movement" not in tables and "model_version" in tables
    migrate.upgrade(url, "0016")
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM tier_movement")) == 0
        assert connection.scalar(text("SELECT count(*) FROM customer_month")) == 1
    _fill(database)
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM tier_movement")) == 2
