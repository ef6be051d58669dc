"""The value pyramid's stored totals and the stored prospects give the numbers and the ranking
the per-request aggregates gave before them (frozen in tests/value_support.py), on SQLite and
PostgreSQL, tenant by tenant."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.config import PROJECT_ROOT
from app.scoring.repository import insert_scores
from app.value.policy import TierPolicy, load_policy
from app.value.prospects import ProspectPlan, load_prospect_plan, parse_prospect_plan
from app.value.service import prospects, pyramid, segment_prospects, store_pyramid
from app.value.tables import Prospect
from tests.value_support import (
    T0,
    assert_prospects_as_before,
    assert_pyramid_as_before,
    fill_tiers,
    prospect_scores,
    ranked,
)

RESOURCES = PROJECT_ROOT / "app" / "resources"


@pytest.fixture(scope="module")
def policy() -> TierPolicy:
    return load_policy(RESOURCES / "tier_policy.json")


@pytest.fixture(scope="module")
def plan() -> ProspectPlan:
    return load_prospect_plan(RESOURCES / "prospect_plans.json")


def test_the_stored_pyramid_is_the_aggregate_it_replaces(
    engine: Engine, policy: TierPolicy
) -> None:
    tenant, other = f"bank-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        fill_tiers(connection, tenant)
        fill_tiers(connection, other)
    with Session(engine) as session:
        empty = pyramid(session, policy=policy, tenant=tenant)
        assert [t.customers for t in empty.tiers] == [0] * 5 and empty.movements == []
        store_pyramid(session, tenant=tenant, now=T0)
        session.commit()
        assert_pyramid_as_before(session, policy, tenant)
        found = pyramid(session, policy=policy, tenant=tenant)
        tiers = {t.tier: t for t in found.tiers}
        assert tiers["emerging_affluent"].relationship_balance == 42_500.75
        assert tiers["mass"].customers == 2 and tiers["gold"].customers == 1  # retired, last
        assert [m.month for m in found.movements] == ["2026-09", "2026-10", "2026-11"]
        assert pyramid(session, policy=policy, tenant=other).movements == []  # not stored yet
        # The book moves on: a new balance and a movement; the next run replaces the totals.
        session.execute(
            text(
                "UPDATE customer_month_latest SET number = 1.5 WHERE tenant = :t"
                " AND customer_id = 'B' AND key = 'savings'"
            ),
            {"t": tenant},
        )
        session.execute(
            text(
                "INSERT INTO tier_movement (tenant, customer_id, from_tier, to_tier, reason,"
                " policy_version, month, run_id, moved_at) VALUES (:t, 'E', 'mass', 'private',"
                " 'upgrade', '1', '2026-12', 'r', :now)"
            ),
            {"t": tenant, "now": T0},
        )
        store_pyramid(session, tenant=tenant, now=T0)
        session.commit()
        assert_pyramid_as_before(session, policy, tenant)
        assert pyramid(session, policy=policy, tenant=tenant).movements[-1].month == "2026-12"


def test_prospects_stored_when_scored_rank_as_before(engine: Engine, plan: ProspectPlan) -> None:
    tenant, other = f"bank-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    rows = prospect_scores(tenant)
    with engine.begin() as connection:
        insert_scores(connection, rows=rows[:10])  # through the path every score takes
        insert_scores(connection, rows=rows[10:])  # P10 scored again, P12 at another stage
        insert_scores(connection, rows=prospect_scores(other)[:3])
    with Session(engine) as session:
        assert_prospects_as_before(session, plan, tenant)
        stored = {
            p.customer_id: p
            for p in session.scalars(select(Prospect).where(Prospect.tenant == tenant))
        }
        assert "P11" not in stored and stored["P10"].expected_value == pytest.approx(120.0)
        assert stored["P12"].value_if_converted == 80.0  # the prospect-stage score
        assert stored["P05"].expected_known is False and stored["P06"].conversion_rank == 0.0
        assert {p.segmented_by for p in stored.values()} == {plan.bands_digest}
        assert segment_prospects(session, plan=plan, tenant=tenant) == 0  # nothing new
        # Pages are slices of the ranking.
        page = prospects(session, plan=plan, tenant=tenant, segment=None, limit=3, offset=2)
        assert [p.customer_id for p in page.items] == [
            r.split()[0] for r in ranked(session, plan, tenant, None)[2:5]
        ]
        assert (
            prospects(session, plan=plan, tenant=other, segment=None, limit=50, offset=0).total == 3
        )
    # An older score arriving after a newer one changes nothing; a newer one moves the prospect.
    older = prospect_scores(tenant)[0]
    older["created_at"], older["outputs"] = T0, {}
    newer = prospect_scores(tenant)[0]
    newer["created_at"], newer["features"] = T0.replace(year=2027), {"income": 1.0}
    with engine.begin() as connection:
        insert_scores(connection, rows=[older])
        insert_scores(connection, rows=[newer])
    with Session(engine) as session:
        assert_prospects_as_before(session, plan, tenant)
        moved = session.get(Prospect, (tenant, "P01"))
        assert moved is not None and moved.income == 1.0 and moved.segment == "premium.modest"
        # New bands: every stored prospect is segmented again, as the JSON read would.
        data = plan.model_dump(mode="json")
        data["value_bands"][1]["at_least"] = 20
        data["version"] = "changed"
        changed = parse_prospect_plan(json.dumps(data))
        assert changed.bands_digest != plan.bands_digest
        assert_prospects_as_before(session, changed, tenant)
        assert segment_prospects(session, plan=changed, tenant=tenant) == 0
