"""Migration 0017: the console's tables go up, down and up again with rows present."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"
TABLES = ("staff_credential", "console_session")


def _fill(engine: Engine) -> None:
    with engine.begin() as connection:
        for tenant in ("'t'", "NULL"):
            connection.execute(
                text(
                    "INSERT INTO staff_credential (tenant, staff_id, password_hash,"
                    f" failed_attempts, updated_at) VALUES ({tenant}, 'rm-1', 'h', 0, :now)"
                ),
                {"now": NOW},
            )
        connection.execute(
            text(
                "INSERT INTO console_session (token_digest, tenant, staff_id, csrf_token,"
                " created_at, last_seen_at, expires_at) VALUES ('d', 't', 'rm-1', 'c', :now,"
                " :now, :now)"
            ),
            {"now": NOW},
        )


def test_up_down_up_with_rows(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0017")
    _fill(database)
    # One password per staff member, rows without a tenant included.
    with pytest.raises(IntegrityError), database.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO staff_credential (tenant, staff_id, password_hash, failed_attempts,"
                " updated_at) VALUES (NULL, 'rm-1', 'h', 0, :now)"
            ),
            {"now": NOW},
        )
    migrate.downgrade(url, "0016")
    tables = set(inspect(database).get_table_names())
    assert tables.isdisjoint(TABLES) and "staff" in tables
    migrate.upgrade(url, "0017")
    _fill(database)
    with database.connect() as connection:
        counts = [connection.scalar(text(f"SELECT count(*) FROM {t}")) for t in TABLES]
    assert counts == [2, 1]
