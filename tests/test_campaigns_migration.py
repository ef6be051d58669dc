"""Migration 0026: the campaign tables go up, down and up again, and their constraints hold."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, inspect, text

from app.db import migrate

NOW = "2026-12-06 10:00:00+00:00"
TABLES = {"campaign", "campaign_member"}
CAMPAIGN = (
    "INSERT INTO campaign (tenant, code, name, action, channel, purpose, target, starts_at,"
    " period, control_rate, volume_cap, cost_per_contact, baseline_rate, minimum_lift, status,"
    " created_by, created_at) VALUES ('', :code, 'n', 'a', 'email', 'marketing', '{}', :now,"
    " '2026-12', :rate, :cap, 0, 0.05, 0.01, 'draft', 'c', :now)"
)


def _fill(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(CAMPAIGN), {"code": "K1", "now": NOW, "rate": 0.02, "cap": 10})
        campaign_id = connection.scalar(text("SELECT id FROM campaign WHERE code = 'K1'"))
        connection.execute(
            text(
                "INSERT INTO campaign_member (campaign_id, customer_id, arm, rank)"
                " VALUES (:id, 'C-1', 'treatment', 1)"
            ),
            {"id": campaign_id},
        )


def test_up_down_up_with_rows_and_the_constraints_hold(database: Engine) -> None:
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0026")
    _fill(database)
    migrate.downgrade(url, "0023")
    tables = set(inspect(database).get_table_names())
    assert not TABLES & tables and "shadow_score" in tables
    migrate.upgrade(url, "0026")
    _fill(database)
    for bad, values in (
        (CAMPAIGN, {"code": "K1", "now": NOW, "rate": 0.02, "cap": 1}),  # the code is taken
        (CAMPAIGN, {"code": "K2", "now": NOW, "rate": 1.0, "cap": 1}),  # rate must be < 1
        (CAMPAIGN, {"code": "K3", "now": NOW, "rate": 0.02, "cap": -1}),  # a negative cap
        (
            "INSERT INTO campaign_member (campaign_id, customer_id, arm, rank)"
            " SELECT id, 'C-1', 'control', 2 FROM campaign",  # a customer twice
            {},
        ),
        (
            "INSERT INTO campaign_member (campaign_id, customer_id, arm, rank)"
            " SELECT id, 'C-2', 'maybe', 2 FROM campaign",
            {},
        ),
    ):
        with pytest.raises(sqlalchemy.exc.IntegrityError), database.begin() as connection:
            connection.execute(text(bad), values)
    with database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM campaign_member")) == 1
