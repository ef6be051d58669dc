"""Migration 0019: the points ledger and gift stock tables go up, down and up again."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, inspect, text

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"
TABLES = {"points_account", "points_entry", "gift_stock"}


def _fill(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO points_entry (tenant, customer_id, kind, points, idempotency_key,"
                " created_at) VALUES ('', 'C-1', 'earn', 10, 'k', :now)"
            ),
            {"now": NOW},
        )
        connection.execute(text("INSERT INTO gift_stock VALUES ('', 'pen', 3)"))


def test_up_down_up_with_rows_and_the_constraints_hold(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0019")
    _fill(database)
    migrate.downgrade(url, "0017")
    tables = set(inspect(database).get_table_names())
    assert not TABLES & tables and "tier_movement" in tables
    migrate.upgrade(url, "0019")
    _fill(database)
    for bad in (
        # A second posting under the same key.
        "INSERT INTO points_entry (tenant, customer_id, kind, points, idempotency_key,"
        " created_at) VALUES ('', 'C-1', 'earn', 5, 'k', :now)",
        # A redemption that adds points.
        "INSERT INTO points_entry (tenant, customer_id, kind, points, idempotency_key,"
        " created_at) VALUES ('', 'C-1', 'redemption', 5, 'r', :now)",
        "UPDATE gift_stock SET remaining = -1",
    ):
        with pytest.raises(sqlalchemy.exc.IntegrityError), database.begin() as connection:
            connection.execute(text(bad), {"now": NOW})
    with database.connect() as connection:
        assert connection.scalar(text("SELECT sum(points) FROM points_entry")) == 10


def test_0028_lets_a_reversal_credit_a_gift_return_and_refuses_to_go_down_over_one(
    database: Engine,
) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0028")
    _fill(database)
    credit = (
        "INSERT INTO points_entry (tenant, customer_id, kind, points, idempotency_key,"
        " refers_to, created_at) VALUES ('', 'C-1', 'reversal', 7, 'reversal:1', 1, :now)"
    )
    with database.begin() as connection:
        connection.execute(text(credit), {"now": NOW})
    for bad in (  # the rest of the sign rule still holds
        "INSERT INTO points_entry (tenant, customer_id, kind, points, idempotency_key,"
        " created_at) VALUES ('', 'C-1', 'redemption', 5, 'r', :now)",
        "INSERT INTO points_entry (tenant, customer_id, kind, points, idempotency_key,"
        " created_at) VALUES ('', 'C-1', 'earn', -5, 'e', :now)",
    ):
        with pytest.raises(sqlalchemy.exc.IntegrityError), database.begin() as connection:
            connection.execute(text(bad), {"now": NOW})
    with pytest.raises(RuntimeError, match="gift returns"):
        migrate.downgrade(url, "0023")
    with database.begin() as connection:
        connection.execute(text("DELETE FROM points_entry WHERE kind = 'reversal'"))
    migrate.downgrade(url, "0023")
    columns = {c["name"] for c in inspect(database).get_columns("points_entry")}
    assert "request_digest" not in columns
    with pytest.raises(sqlalchemy.exc.IntegrityError), database.begin() as connection:
        connection.execute(text(credit), {"now": NOW})
    migrate.upgrade(url, "0028")
    with database.begin() as connection:
        connection.execute(text(credit), {"now": NOW})
        connection.execute(text("UPDATE points_entry SET request_digest = 'd'"))
