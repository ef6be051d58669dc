"""Shared by the value summary tests: a small book written as rows, and frozen copies of the
aggregates the pyramid and the prospects read per request before revision 0029, to compare
the stored summaries with."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, case, func, insert, literal, select
from sqlalchemy.orm import Session

from app.customers.tables import CustomerMonthLatest
from app.scoring.repository import ScoreRow
from app.scoring.tables import Score
from app.value.policy import RELATIONSHIP_PRODUCTS, TierPolicy
from app.value.prospects import Band, ProspectPlan
from app.value.schemas import Pyramid
from app.value.service import prospects, pyramid
from app.value.tables import TierMovement

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def fill_tiers(connection: Connection, tenant: str) -> None:
    """Tiers of record (some moved twice, one in a retired tier) and latest balances (several
    products, older months and occurrences that must not count, customers without any)."""
    movements = [
        ("A", None, "mass", "initial", "2026-09"),
        ("A", "mass", "affluent", "upgrade", "2026-10"),
        ("A", "affluent", "emerging_affluent", "downgrade", "2026-11"),
        ("B", None, "affluent", "initial", "2026-09"),
        ("C", None, "private", "initial", "2026-10"),
        ("D", None, "gold", "initial", "2026-10"),  # a tier the policy no longer has
        ("E", None, "mass", "initial", "2026-11"),  # no balance at all
        ("F", None, "mass", "initial", "2026-11"),
    ]
    connection.execute(
        insert(TierMovement),
        [
            {
                "tenant": tenant,
                "customer_id": customer,
                "from_tier": before,
                "to_tier": after,
                "reason": reason,
                "policy_version": "1",
                "month": month,
                "run_id": f"run-{month}",
                "moved_at": T0,
            }
            for customer, before, after, reason, month in movements
        ],
    )
    balances = [
        ("A", 24321, "savings", 0, 5_000.0),  # an older month: replaced by 24322
        ("A", 24322, "savings", 0, 12_500.5),
        ("A", 24322, "brokerage", 0, 30_000.25),
        ("B", 24322, "savings", 0, 150_000.0),
        ("B", 24321, "term_deposit", 0, 2_000.0),  # this product's latest month is earlier
        ("B", 24322, "mortgage", 0, 90_000.0),  # a loan: not relationship balance
        ("C", 24322, "pension", 0, 1_000_000.0),
        ("D", 24322, "current_account", 0, 777.77),
        ("F", 24322, "insurance", 0, None),  # unknown: counts as 0
    ]
    connection.execute(
        insert(CustomerMonthLatest),
        [
            {
                "tenant": tenant,
                "customer_id": customer,
                "month": month,
                "kind": "balance",
                "key": key,
                "occurred_at": T0 + timedelta(hours=hour),
                "number": amount,
            }
            for customer, month, key, hour, amount in balances
        ],
    )


def _score(tenant: str | None, customer: str, minutes: int, **outputs: Any) -> ScoreRow:
    income = outputs.pop("income", None)
    stage = outputs.pop("stage", "prospect")
    return ScoreRow(
        request_id=f"r-{customer}-{minutes}",
        task="prospect",
        customer_id=customer,
        model_name="prospect",
        model_version="1",
        outputs=outputs,
        reasons=[],
        features={} if income is None else {"income": income},
        created_at=T0 + timedelta(minutes=minutes),
        tenant=tenant,
        source="api",
        stage=stage,
        probability=outputs.get("conversion_probability"),
        band=None,
        alert=False,
    )


def prospect_scores(tenant: str | None) -> list[ScoreRow]:
    """Prospect scores of a tenant: ties on expected value, unknown expected value and
    conversion, no income, cut-offs exactly, a prospect scored again (the latest counts) and
    a score at another stage (never a prospect of the page)."""

    def p(value: float, conversion: float | None) -> dict[str, Any]:
        found: dict[str, Any] = {"value_if_converted": value}
        if conversion is not None:
            found["conversion_probability"] = conversion
            found["expected_value"] = value * conversion
        return found

    return [
        _score(tenant, "P01", 1, **p(200.0, 0.5), income=150_000.0),
        _score(tenant, "P02", 2, **p(100.0, 0.5), income=40_000.0),  # cut-offs exactly
        _score(tenant, "P03", 3, **p(50.0, 0.2), income=10_000.0),
        _score(tenant, "P04", 4, **p(500.0, 0.2)),  # no income: the lowest band
        _score(tenant, "P05", 5, **p(10.0, None), income=200_000.0),  # expected unknown
        _score(tenant, "P06", 6, value_if_converted=160.0, expected_value=32.0),  # no conversion
        _score(
            tenant,
            "P07",
            7,
            value_if_converted=160.0,
            expected_value=32.0,
            conversion_probability=0.2,
            income=99_999.0,
        ),
        _score(tenant, "P08", 8, **p(20.0, None)),
        _score(tenant, "P09", 9, **p(149.99, 0.9), income=100_000.0),
        _score(tenant, "P10", 10, **p(30.0, 0.1), income=50_000.0),
        _score(tenant, "P10", 11, **p(300.0, 0.4), income=50_000.0),  # scored again: this one
        _score(tenant, "P11", 12, **p(1_000.0, 0.9), income=500_000.0, stage="new"),  # a customer
        _score(tenant, "P12", 13, **p(80.0, 0.5), income=45_000.0),
        _score(tenant, "P12", 14, **p(70.0, 0.5), income=45_000.0, stage="new"),  # P12 stays
    ]


def store_scores(connection: Connection, rows: list[ScoreRow]) -> None:
    """The score rows as bare rows of ``score`` (what an older release stored)."""
    connection.execute(insert(Score), [dict(row) for row in rows])


# --- the aggregates as they were read per request before revision 0029 -------------------------


def old_pyramid(
    session: Session, tenant: str
) -> tuple[dict[str, tuple[int, float]], dict[str, Counter[str]]]:
    """Per tier (customers, relationship balance) and per month the movements by reason."""
    latest = (
        select(func.max(TierMovement.id).label("id"))
        .where(TierMovement.tenant == tenant)
        .group_by(TierMovement.customer_id)
        .subquery()
    )
    recorded = (
        select(TierMovement.customer_id, TierMovement.to_tier.label("tier"))
        .join(latest, TierMovement.id == latest.c.id)
        .subquery()
    )
    ranked = (
        select(
            CustomerMonthLatest.customer_id,
            CustomerMonthLatest.number,
            func.row_number()
            .over(
                partition_by=(CustomerMonthLatest.customer_id, CustomerMonthLatest.key),
                order_by=(
                    CustomerMonthLatest.month.desc(),
                    CustomerMonthLatest.occurred_at.desc(),
                    CustomerMonthLatest.id.desc(),
                ),
            )
            .label("newest"),
        )
        .where(
            CustomerMonthLatest.tenant == tenant,
            CustomerMonthLatest.kind == "balance",
            CustomerMonthLatest.key.in_(RELATIONSHIP_PRODUCTS),
        )
        .subquery()
    )
    balances = (
        select(ranked.c.customer_id, func.sum(func.coalesce(ranked.c.number, 0.0)).label("b"))
        .where(ranked.c.newest == 1)
        .group_by(ranked.c.customer_id)
        .subquery()
    )
    tiers = {
        tier: (int(count), float(balance or 0.0))
        for tier, count, balance in session.execute(
            select(recorded.c.tier, func.count(), func.sum(balances.c.b))
            .select_from(
                recorded.outerjoin(balances, balances.c.customer_id == recorded.c.customer_id)
            )
            .group_by(recorded.c.tier)
        )
    }
    months: dict[str, Counter[str]] = {}
    for month, reason, count in session.execute(
        select(TierMovement.month, TierMovement.reason, func.count())
        .where(TierMovement.tenant == tenant)
        .group_by(TierMovement.month, TierMovement.reason)
    ):
        months.setdefault(month, Counter())[reason] = int(count)
    return tiers, months


def as_before(found: Pyramid) -> tuple[dict[str, tuple[int, float]], dict[str, Counter[str]]]:
    """A pyramid in the shape of ``old_pyramid`` (tiers held only; movement counts by reason)."""
    tiers = {t.tier: (t.customers, t.relationship_balance) for t in found.tiers if t.customers}
    months = {
        m.month: +Counter(
            initial=m.initial,
            upgrade=m.upgrades,
            downgrade=m.downgrades,
            retired_tier=m.retired_tier,
        )
        for m in found.movements
    }
    return tiers, months


def assert_pyramid_as_before(session: Session, policy: TierPolicy, tenant: str | None) -> None:
    """The stored pyramid of ``tenant`` is what the per-request aggregate gives."""
    found = pyramid(session, policy=policy, tenant=tenant)
    assert as_before(found) == old_pyramid(session, "" if tenant is None else tenant)
    assert [t.tier for t in found.tiers][: len(policy.names)] == list(reversed(policy.names))


def _band_of(bands: list[Band], amount: Any) -> Any:
    above = [(amount >= band.at_least, band.name) for band in reversed(bands[1:]) if band.at_least]
    if not above:
        return literal(bands[0].name, String)
    return case(*above, else_=literal(bands[0].name, String))


def old_prospects(
    session: Session, plan: ProspectPlan, tenant: str | None, segment: str | None
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """The ranked (customer id, segment) of a tenant's prospects (one segment or all) and the
    size of each segment, from the latest prospect-stage scores' JSON documents."""
    condition = Score.tenant.is_(None) if tenant is None else Score.tenant == tenant
    latest_ids = (
        select(func.max(Score.id).label("id"))
        .where(Score.task == "prospect", condition, Score.stage == "prospect")
        .group_by(Score.customer_id)
        .subquery()
    )
    latest = (
        select(Score.customer_id, Score.outputs, Score.features)
        .join(latest_ids, Score.id == latest_ids.c.id)
        .subquery()
    )
    value = latest.c.outputs["value_if_converted"].as_float()
    income = latest.c.features["income"].as_float()
    expected = latest.c.outputs["expected_value"].as_float()
    conversion = latest.c.outputs["conversion_probability"].as_float()
    value_band = _band_of(plan.value_bands, value).label("value_band")
    power = _band_of(plan.buying_power_bands, income).label("power")
    sizes: Counter[str] = Counter()
    for band, power_band, count in session.execute(
        select(value_band, power, func.count()).group_by(value_band, power)
    ):
        sizes[f"{band}.{power_band}"] = int(count)
    chosen = select(latest.c.customer_id, value, income)
    if segment is not None:
        wanted_value, _, wanted_power = segment.partition(".")
        chosen = chosen.where(value_band == wanted_value, power == wanted_power)
    rows = session.execute(
        chosen.order_by(
            expected.is_(None),
            expected.desc(),
            func.coalesce(conversion, 0.0).desc(),
            latest.c.customer_id,
        )
    )
    return [
        (customer, plan.segment_of(value=amount, income=known)) for customer, amount, known in rows
    ], sizes


def ranked(
    session: Session, plan: ProspectPlan, tenant: str | None, segment: str | None
) -> list[str]:
    page = prospects(session, plan=plan, tenant=tenant, segment=segment, limit=500, offset=0)
    return [f"{p.customer_id} {p.segment}" for p in page.items]


def assert_prospects_as_before(session: Session, plan: ProspectPlan, tenant: str | None) -> None:
    """Every segment's ranking and size, and the whole ranking, as the JSON read gave them."""
    everyone, sizes = old_prospects(session, plan, tenant, None)
    assert ranked(session, plan, tenant, None) == [f"{c} {s}" for c, s in everyone]
    page = prospects(session, plan=plan, tenant=tenant, segment=None, limit=500, offset=0)
    assert page.total == len(everyone)
    assert {s.segment: s.prospects for s in page.segments} == {n: sizes[n] for n in plan.segments}
    for name in plan.segments:
        before, _ = old_prospects(session, plan, tenant, name)
        assert ranked(session, plan, tenant, name) == [f"{c} {s}" for c, s in before]
