"""Migration 0029 on a book stored before it: the pyramid's totals, the movement counts and
the prospects are backfilled from the rows present (the same numbers and ranking as the
per-request reads gave), and the revision goes down and up again, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from app.config import PROJECT_ROOT
from app.db import migrate
from app.value.policy import load_policy
from app.value.prospects import load_prospect_plan
from tests.value_support import (
    assert_prospects_as_before,
    assert_pyramid_as_before,
    fill_tiers,
    prospect_scores,
    store_scores,
)

RESOURCES = PROJECT_ROOT / "app" / "resources"
NEW_TABLES = {"tier_total", "tier_movement_month", "prospect", "prospect_segment"}


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in sorted(NEW_TABLES)
        }


def test_backfilled_from_old_rows_then_down_and_up_again(database: Engine) -> None:
    policy = load_policy(RESOURCES / "tier_policy.json")
    plan = load_prospect_plan(RESOURCES / "prospect_plans.json")
    url = database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0024")
    with database.begin() as connection:
        for tenant in ("bank-a", "bank-b", ""):  # "": rows stored without a tenant
            fill_tiers(connection, tenant)
        store_scores(connection, prospect_scores("bank-a"))
        store_scores(connection, prospect_scores(None))
        store_scores(connection, prospect_scores("bank-b")[:4])
    migrate.upgrade(url, "0029")
    backfilled = _counts(database)
    # 5 tiers held and 3 months x reasons per tenant; 11 prospects (P11 is a customer).
    assert backfilled == {
        "prospect": 11 + 11 + 4,
        "prospect_segment": 0,  # counted as they are segmented, by the first read
        "tier_movement_month": 15,
        "tier_total": 15,
    }
    with Session(database) as session:
        for owner in ("bank-a", "bank-b", None):
            assert_pyramid_as_before(session, policy, owner)
        # Segmented at the first read under the plan in force, then ranked as before.
        assert_prospects_as_before(session, plan, "bank-a")
        assert_prospects_as_before(session, plan, None)
        assert_prospects_as_before(session, plan, "bank-b")
    migrate.downgrade(url, "0024")
    assert not NEW_TABLES & set(inspect(database).get_table_names())
    migrate.upgrade(url, "0029")
    assert _counts(database) == backfilled
    with Session(database) as session:
        assert_pyramid_as_before(session, policy, "bank-a")
        assert_prospects_as_before(session, plan, "bank-a")
