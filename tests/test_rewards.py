"""Service plans and rewards (issue 18, item 2): the policy file, the points ledger (idempotent
earns, reversals, pending lock, expiry oldest first), redemptions under concurrency, over HTTP."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import get_settings
from app.db.session import create_db_engine
from app.errors import ServiceError
from app.http.app import create_app
from app.rewards import service
from app.rewards.errors import InsufficientPoints, KeyReused, LimitReached, OutOfStock
from app.rewards.policy import (
    Expiry,
    ExpiryRule,
    InvalidRewardsPolicy,
    RewardsPolicy,
    load_rewards_policy,
    parse_rewards_policy,
)
from app.rewards.schemas import PostingResult
from app.rewards.tables import GiftStock, PointsEntry
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.db_support import (
    migrated_postgres_database,
    migrated_sqlite_database,
)

SHIPPED = Path(__file__).parents[1] / "app" / "resources" / "rewards_policy.json"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def raw(**changes: Any) -> dict[str, Any]:
    """The shipped rewards policy as JSON data, top-level keys replaced."""
    data: dict[str, Any] = json.loads(SHIPPED.read_text())
    data.update(changes)
    return data


def small_policy(**changes: Any) -> RewardsPolicy:
    """A policy with one tier: lock 3 days, expiry after 10 days, cheap gifts."""
    data: dict[str, Any] = {
        "version": "t",
        "lock_days": 3,
        "expiry": {"rule": "after_days", "days": 10},
        "plans": {"mass": {"name": "Everyday", "points_multiplier": 1.5}},
        "gifts": [
            {"gift_id": "pen", "name": "Pen", "points_cost": 40, "tiers": ["mass"], "stock": 1000},
            {
                "gift_id": "mug",
                "name": "Mug",
                "points_cost": 25,
                "tiers": ["mass"],
                "stock": 3,
                "limit_per_customer": 2,
            },
        ],
    }
    data.update(changes)
    return RewardsPolicy.model_validate(data)


# --- the policy file ----------------------------------------------------------------------------


def test_the_shipped_policy_loads_with_a_plan_per_tier() -> None:
    policy = load_rewards_policy(SHIPPED)
    policy.check_tiers(["mass", "emerging_affluent", "affluent", "high_net_worth", "private"])
    assert policy.plans["private"].points_multiplier == 3.0
    assert policy.gift("lounge_pass") is not None and policy.gift("nothing") is None


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"lock_dayz": 3}, "lock_dayz"),
        ({"expiry": {"rule": "after_days"}}, "expiry.days"),
        ({"expiry": {"rule": "fortnightly"}}, "expiry.rule"),
        (
            {
                "gifts": [
                    {"gift_id": "x", "name": "X", "points_cost": 1, "tiers": ["gold"], "stock": 1}
                ]
            },
            "gifts[0].tiers[0]",
        ),
        (
            {
                "gifts": [
                    {"gift_id": "x", "name": "X", "points_cost": 0, "tiers": ["mass"], "stock": 1}
                ]
            },
            "gifts[0].points_cost",
        ),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidRewardsPolicy) as raised:
        parse_rewards_policy(json.dumps(raw(**change)))
    assert raised.value.key == key


def test_a_tier_without_a_plan_stops_the_service(tmp_path: Path, settings_for: Any) -> None:
    data = raw(gifts=[])
    del data["plans"]["affluent"]
    path = tmp_path / "rewards.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidRewardsPolicy, match=r"plans\.affluent"):
        create_app(settings_for(f"sqlite:///{tmp_path / 'x.db'}", rewards_policy_file=path))


def test_expiry_rules_give_the_last_day() -> None:
    earned = date(2026, 2, 10)
    assert Expiry(rule=ExpiryRule.AFTER_DAYS, days=30).last_day(earned) == date(2026, 3, 12)
    assert Expiry(rule=ExpiryRule.MONTH_END).last_day(earned) == date(2026, 2, 28)
    assert Expiry(rule=ExpiryRule.YEAR_END).last_day(earned) == date(2026, 12, 31)
    assert Expiry(rule=ExpiryRule.NEVER).last_day(earned) is None


# --- the ledger on a real database ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_engine() -> Iterator[Engine]:
    """A migrated SQLite database of this module's own."""
    with migrated_sqlite_database() as url:
        engine = create_db_engine(url)
        yield engine
        engine.dispose()


def entries_sum(engine: Engine, tenant: str, customer: str) -> int:
    """The sum of a customer's entries, read straight from the table."""
    with Session(engine) as session:
        total = session.scalar(
            select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
                PointsEntry.tenant == tenant, PointsEntry.customer_id == customer
            )
        )
    return int(total or 0)


def entry_count(engine: Engine, tenant: str) -> int:
    """How many entries a tenant's ledger holds."""
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(PointsEntry.tenant == tenant)) or 0


OPERATION = st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 200), st.sampled_from("abcdef")),
    st.tuples(st.just("reverse"), st.integers(0, 12), st.just("")),
    st.tuples(st.just("redeem"), st.sampled_from(["pen", "mug"]), st.sampled_from("uvwxyz")),
    st.tuples(st.just("wait"), st.integers(1, 6), st.just("")),
    st.tuples(st.just("expire"), st.just(0), st.just("")),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(OPERATION, min_size=1, max_size=25))
def test_any_sequence_keeps_balance_the_sum_never_negative_and_keys_idempotent(
    sqlite_engine: Engine, operations: list[tuple[str, Any, str]]
) -> None:
    policy, tenant, customer = small_policy(), f"p-{uuid.uuid4().hex[:8]}", "C1"
    now, used_keys = T0, set[str]()
    asked: dict[str, Any] = {}  # a key's first request: a retry repeats it
    for name, value, key in operations:
        before = entry_count(sqlite_engine, tenant)
        repeated = False
        with Session(sqlite_engine) as session:
            try:
                if name == "earn":
                    repeated = f"e-{key}" in used_keys
                    used_keys.add(f"e-{key}")
                    result = service.earn(
                        session,
                        rewards=policy,
                        tier="mass",
                        tenant=tenant,
                        customer_id=customer,
                        points=asked.setdefault(f"e-{key}", value),
                        idempotency_key=f"e-{key}",
                        description=None,
                        now=now,
                    )
                    assert result.replayed is repeated
                elif name == "reverse":
                    service.reverse(
                        session,
                        tenant=tenant,
                        customer_id=customer,
                        entry_id=value,
                        description=None,
                        now=now,
                    )
                elif name == "redeem":
                    repeated = f"r-{key}" in used_keys
                    result = service.redeem(
                        session,
                        rewards=policy,
                        tier="mass",
                        tenant=tenant,
                        customer_id=customer,
                        gift_id=asked.setdefault(f"r-{key}", value),
                        idempotency_key=f"r-{key}",
                        now=now,
                    )
                    used_keys.add(f"r-{key}")
                    assert result.replayed is repeated
                elif name == "wait":
                    now += timedelta(days=value)
                else:
                    service.expire(session, as_of=now.date(), now=now)
            except ServiceError:
                assert not repeated  # a replay is never refused
        if repeated:
            assert entry_count(sqlite_engine, tenant) == before
        with Session(sqlite_engine) as session:
            page = service.points(
                session,
                tenant=tenant,
                customer_id=customer,
                shown_id=customer,
                limit=500,
                offset=0,
                now=now,
            )
        held = page.balance
        assert held.total == entries_sum(sqlite_engine, tenant, customer)
        assert held.available >= 0 and held.pending >= 0
        assert held.available + held.pending == held.total


def test_pending_points_are_not_redeemable_until_the_lock_ends(sqlite_engine: Engine) -> None:
    policy, tenant = small_policy(), f"l-{uuid.uuid4().hex[:8]}"
    with Session(sqlite_engine) as session:
        earned = service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=100,
            idempotency_key="k",
            description=None,
            now=T0,
        )
    assert earned.entry.points == 150  # the tier's multiplier, 1.5
    assert (earned.balance.available, earned.balance.pending) == (0, 150)
    with Session(sqlite_engine) as session, pytest.raises(InsufficientPoints):
        service.redeem(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            gift_id="pen",
            idempotency_key="r1",
            now=T0 + timedelta(days=2),
        )
    with Session(sqlite_engine) as session:
        redeemed = service.redeem(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            gift_id="pen",
            idempotency_key="r1",
            now=T0 + timedelta(days=3),
        )
    assert redeemed.balance.available == 110 and not redeemed.replayed


def test_a_reversal_is_a_new_entry_once_and_never_drives_the_balance_negative(
    sqlite_engine: Engine,
) -> None:
    policy, tenant = small_policy(lock_days=0), f"v-{uuid.uuid4().hex[:8]}"
    with Session(sqlite_engine) as session:
        first = service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=20,
            idempotency_key="a",
            description=None,
            now=T0,
        )
        second = service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=20,
            idempotency_key="b",
            description=None,
            now=T0,
        )
        reversal = service.reverse(
            session,
            tenant=tenant,
            customer_id="C",
            entry_id=first.entry.id,
            description="refund",
            now=T0,
        )
        again = service.reverse(
            session,
            tenant=tenant,
            customer_id="C",
            entry_id=first.entry.id,
            description=None,
            now=T0,
        )
    assert reversal.entry.kind == "reversal" and reversal.entry.refers_to == first.entry.id
    assert reversal.entry.points == -30 and reversal.balance.total == 30
    assert again.replayed and again.entry.id == reversal.entry.id
    with Session(sqlite_engine) as session:
        service.redeem(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            gift_id="mug",
            idempotency_key="m",
            now=T0,
        )
        with pytest.raises(InsufficientPoints):  # 5 points left: the earn of 30 is spent
            service.reverse(
                session,
                tenant=tenant,
                customer_id="C",
                entry_id=second.entry.id,
                description=None,
                now=T0,
            )
    assert entries_sum(sqlite_engine, tenant, "C") == 5


def post_earn(
    engine: Engine,
    policy: RewardsPolicy,
    tenant: str,
    *,
    key: str,
    points: int = 20,
    description: str | None = None,
    at: datetime = T0,
) -> PostingResult:
    """Customer C of the mass tier earns, in a session of its own."""
    with Session(engine) as session:
        return service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=points,
            idempotency_key=key,
            description=description,
            now=at,
        )


def post_redemption(
    engine: Engine, policy: RewardsPolicy, tenant: str, *, gift_id: str, key: str, at: datetime = T0
) -> PostingResult:
    """Customer C of the mass tier redeems a gift, in a session of its own."""
    with Session(engine) as session:
        return service.redeem(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            gift_id=gift_id,
            idempotency_key=key,
            now=at,
        )


def test_a_key_reused_for_another_request_is_a_409_and_writes_nothing(
    sqlite_engine: Engine,
) -> None:
    policy, tenant = small_policy(lock_days=0), f"k-{uuid.uuid4().hex[:8]}"

    def earn(points: int, description: str | None = None) -> PostingResult:
        return post_earn(
            sqlite_engine, policy, tenant, key="k", points=points, description=description
        )

    def redeem(gift_id: str, key: str) -> PostingResult:
        return post_redemption(sqlite_engine, policy, tenant, gift_id=gift_id, key=key)

    first = earn(100)
    assert earn(100).replayed and earn(100).entry.id == first.entry.id
    others: list[Callable[[], PostingResult]] = [
        lambda: earn(101),
        lambda: earn(100, "bonus"),
        lambda: redeem("pen", "k"),
    ]
    for other in others:
        with pytest.raises(KeyReused, match="'k' was used for another request"):
            other()
    kept = redeem("pen", "r")
    assert redeem("pen", "r").replayed
    with pytest.raises(KeyReused):
        redeem("mug", "r")
    assert entry_count(sqlite_engine, tenant) == 2
    assert entries_sum(sqlite_engine, tenant, "C") == first.entry.points + kept.entry.points


def test_a_gift_given_back_returns_its_open_lots_points_its_stock_and_its_limit(
    sqlite_engine: Engine,
) -> None:
    policy, tenant = small_policy(lock_days=0), f"g-{uuid.uuid4().hex[:8]}"
    day = timedelta(days=1)

    def mug(key: str, at: datetime) -> PostingResult:
        return post_redemption(sqlite_engine, policy, tenant, gift_id="mug", key=key, at=at)

    def give_back(entry_id: int, at: datetime) -> PostingResult:
        with Session(sqlite_engine) as session:
            return service.reverse(
                session,
                tenant=tenant,
                customer_id="C",
                entry_id=entry_id,
                description="returned",
                now=at,
            )

    post_earn(sqlite_engine, policy, tenant, key="a")  # lot A: 30 points, last day T0 + 10
    post_earn(sqlite_engine, policy, tenant, key="b", at=T0 + 5 * day)  # lot B: last day T0 + 15
    mug("m1", T0 + 6 * day)  # 25 from A
    second = mug("m2", T0 + 6 * day)  # 5 from A, 20 from B
    with pytest.raises(LimitReached):
        mug("m3", T0 + 6 * day)
    with Session(sqlite_engine) as session:  # A closes, spent: nothing of it is left
        service.expire(session, as_of=(T0 + 11 * day).date(), now=T0 + 11 * day)
    returned = give_back(second.entry.id, T0 + 12 * day)
    assert returned.entry.kind == "reversal" and returned.entry.refers_to == second.entry.id
    assert returned.entry.points == 20, "A's 5 points expired with A: only B's 20 come back"
    assert returned.balance.available == 30 and returned.balance.total == 30
    again = give_back(second.entry.id, T0 + 12 * day)
    assert again.replayed and again.entry.id == returned.entry.id
    with Session(sqlite_engine) as session:
        stock = session.get(GiftStock, (service.tenant_key(tenant), "mug"))
        assert stock is not None and stock.remaining == 2  # 3, two taken, one given back
    third = mug("m3", T0 + 12 * day)  # the limit counts gifts kept, not gifts ever redeemed
    assert third.balance.available == 5
    assert entries_sum(sqlite_engine, tenant, "C") == 5
    with Session(sqlite_engine) as session:  # what B has left expires with B, no more
        service.expire(session, as_of=(T0 + 16 * day).date(), now=T0 + 16 * day)
    assert entries_sum(sqlite_engine, tenant, "C") == 0


def test_expiry_takes_the_oldest_points_first_and_is_idempotent(sqlite_engine: Engine) -> None:
    policy, tenant = small_policy(lock_days=0), f"x-{uuid.uuid4().hex[:8]}"
    with Session(sqlite_engine) as session:
        old = service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=40,
            idempotency_key="old",
            description=None,
            now=T0,
        )
        service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=40,
            idempotency_key="new",
            description=None,
            now=T0 + timedelta(days=5),
        )
        # 40 of the 60 + 60 spent: taken from the oldest lot, leaving 20 of it to expire.
        service.redeem(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            gift_id="pen",
            idempotency_key="p",
            now=T0 + timedelta(days=6),
        )
    assert old.entry.expires_on == date(2026, 3, 11)
    with Session(sqlite_engine) as session:
        assert service.expire(session, as_of=date(2026, 3, 11), now=T0).entries == 0  # last day
        run = service.expire(session, as_of=date(2026, 3, 12), now=T0)
        again = service.expire(session, as_of=date(2026, 3, 12), now=T0)
    mine = [(e.customer_id, e.kind) for e in _entries(sqlite_engine, tenant)]
    assert mine.count(("C", "expiry")) == 1
    expiry = next(e for e in _entries(sqlite_engine, tenant) if e.kind == "expiry")
    assert (expiry.points, expiry.refers_to) == (-20, old.entry.id)
    assert run.points >= 20 and again.entries == 0
    assert entries_sum(sqlite_engine, tenant, "C") == 60
    with Session(sqlite_engine) as session:
        service.expire(session, as_of=date(2026, 3, 17), now=T0)
    assert entries_sum(sqlite_engine, tenant, "C") == 0


@pytest.mark.parametrize(
    ("expiry", "last_day"),
    [
        ({"rule": "month_end"}, date(2026, 3, 31)),
        ({"rule": "year_end"}, date(2026, 12, 31)),
        ({"rule": "never"}, None),
    ],
)
def test_each_expiry_rule_expires_the_day_after_the_last_day(
    sqlite_engine: Engine, expiry: dict[str, Any], last_day: date | None
) -> None:
    policy, tenant = small_policy(lock_days=0, expiry=expiry), f"r-{uuid.uuid4().hex[:8]}"
    with Session(sqlite_engine) as session:
        earned = service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=10,
            idempotency_key="k",
            description=None,
            now=T0,
        )
    assert earned.entry.expires_on == last_day
    last = last_day or date(2099, 12, 31)
    expected = [15, 15 if last_day is None else 0]
    for as_of, left in zip([last, last + timedelta(days=1)], expected, strict=True):
        with Session(sqlite_engine) as session:
            service.expire(session, as_of=as_of, now=T0)
        assert entries_sum(sqlite_engine, tenant, "C") == left


def _entries(engine: Engine, tenant: str) -> list[PointsEntry]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(PointsEntry).where(PointsEntry.tenant == tenant).order_by(PointsEntry.id)
            )
        )


def test_the_limit_per_customer_and_the_stock_are_409s(sqlite_engine: Engine) -> None:
    policy, tenant = small_policy(lock_days=0), f"s-{uuid.uuid4().hex[:8]}"
    with Session(sqlite_engine) as session:
        for customer in ("A", "B"):
            service.earn(
                session,
                rewards=policy,
                tier="mass",
                tenant=tenant,
                customer_id=customer,
                points=1000,
                idempotency_key="k",
                description=None,
                now=T0,
            )
        for key in ("1", "2"):
            service.redeem(
                session,
                rewards=policy,
                tier="mass",
                tenant=tenant,
                customer_id="A",
                gift_id="mug",
                idempotency_key=key,
                now=T0,
            )
        with pytest.raises(LimitReached):
            service.redeem(
                session,
                rewards=policy,
                tier="mass",
                tenant=tenant,
                customer_id="A",
                gift_id="mug",
                idempotency_key="3",
                now=T0,
            )
        service.redeem(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="B",
            gift_id="mug",
            idempotency_key="1",
            now=T0,
        )
        with pytest.raises(OutOfStock):  # stock 3
            service.redeem(
                session,
                rewards=policy,
                tier="mass",
                tenant=tenant,
                customer_id="B",
                gift_id="mug",
                idempotency_key="2",
                now=T0,
            )
    assert entries_sum(sqlite_engine, tenant, "B") == 1500 - 25


# --- concurrency on PostgreSQL ---------------------------------------------------------------


@pytest.mark.postgres
def test_stock_10_and_100_concurrent_redemptions_exactly_10_succeed() -> None:
    policy = small_policy(
        lock_days=0,
        gifts=[
            {
                "gift_id": "watch",
                "name": "Watch",
                "points_cost": 100,
                "tiers": ["mass"],
                "stock": 10,
            }
        ],
    )
    tenant, customers = "race", [f"C{i}" for i in range(20)]
    with migrated_postgres_database() as url:
        engine = create_db_engine(url)
        try:
            with Session(engine) as session:
                for customer in customers:
                    service.earn(
                        session,
                        rewards=policy,
                        tier="mass",
                        tenant=tenant,
                        customer_id=customer,
                        points=1000,
                        idempotency_key="k",
                        description=None,
                        now=T0,
                    )
            start, outcomes = threading.Barrier(100), list[str]()
            lock = threading.Lock()

            def attempt(index: int) -> None:
                start.wait()
                with Session(engine) as session:
                    try:
                        service.redeem(
                            session,
                            rewards=policy,
                            tier="mass",
                            tenant=tenant,
                            customer_id=customers[index % 20],
                            gift_id="watch",
                            idempotency_key=f"r{index}",
                            now=T0,
                        )
                        outcome = "ok"
                    except ServiceError as error:
                        outcome = error.code
                with lock:
                    outcomes.append(outcome)

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(100)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with Session(engine) as session:
                stock = session.scalar(select(GiftStock.remaining))
                redeemed = session.scalar(
                    select(func.count()).where(PointsEntry.kind == "redemption")
                )
                balances = [
                    service.points(
                        session, tenant=tenant, customer_id=c, shown_id=c, limit=1, offset=0, now=T0
                    ).balance.available
                    for c in customers
                ]
        finally:
            engine.dispose()
    assert outcomes.count("ok") == 10 and outcomes.count("out_of_stock") == 90
    assert (stock, redeemed) == (0, 10)
    assert sum(balances) == 20 * 1500 - 10 * 100 and min(balances) >= 0


@pytest.mark.postgres
def test_concurrent_redemptions_by_one_customer_never_overdraw_it() -> None:
    policy = small_policy(lock_days=0)  # pen: 40 points, stock 1000
    with migrated_postgres_database() as url:
        engine = create_db_engine(url)
        try:
            with Session(engine) as session:  # 1.5 x 100 = 150 points: three pens
                service.earn(
                    session,
                    rewards=policy,
                    tier="mass",
                    tenant="t",
                    customer_id="C",
                    points=100,
                    idempotency_key="k",
                    description=None,
                    now=T0,
                )
            start, outcomes = threading.Barrier(30), list[str]()

            def attempt(index: int) -> None:
                start.wait()
                with Session(engine) as session:
                    try:
                        service.redeem(
                            session,
                            rewards=policy,
                            tier="mass",
                            tenant="t",
                            customer_id="C",
                            gift_id="pen",
                            idempotency_key=f"r{index % 10}",
                            now=T0,
                        )
                        outcomes.append("ok")
                    except ServiceError as error:
                        outcomes.append(error.code)

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(30)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with Session(engine) as session:
                page = service.points(
                    session, tenant="t", customer_id="C", shown_id="C", limit=50, offset=0, now=T0
                )
        finally:
            engine.dispose()
    # Ten keys, each sent three times: three redemptions are posted, every other answer is
    # either the replay of one of them or a refusal for the balance.
    assert [e.kind for e in page.entries].count("redemption") == 3
    assert page.balance.total == 30 and page.balance.available == 30
    assert set(outcomes) <= {"ok", "insufficient_points"} and len(outcomes) == 30


# --- over HTTP -------------------------------------------------------------------------------


def events_of(customer_id: str, savings: float) -> list[dict[str, Any]]:
    """A profile and one savings balance in January 2026."""
    return [
        {
            "event_id": f"{customer_id}-p",
            "customer_id": customer_id,
            "type": "customer_profile",
            "occurred_at": "2026-01-02T09:00:00Z",
            "age": 40,
        },
        {
            "event_id": f"{customer_id}-b",
            "customer_id": customer_id,
            "type": "balance_snapshot",
            "occurred_at": "2026-01-15T09:00:00Z",
            "product": "savings",
            "balance": savings,
        },
    ]


@pytest.fixture
def bank(
    database_url: str, settings_for: Any, registry: ModelRegistry, tmp_path: Path
) -> Iterator[tuple[TestClient, str, dict[str, str]]]:
    """An app with no points lock; a tenant's key holding a mass and an affluent customer."""
    path = tmp_path / "rewards.json"
    path.write_text(json.dumps(raw(lock_days=0)))
    app = create_app(
        settings_for(database_url, auth_enabled=True, rewards_policy_file=path), registry
    )
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    _, key = create_client(app.state.engine, name=tenant, scopes=sorted(ALL_SCOPES), tenant=tenant)
    headers = {"X-API-Key": key}
    with TestClient(app) as client:
        events = events_of("MASS", 5_000.0) + events_of("RICH", 150_000.0)
        answer = client.post("/v1/events", json={"events": events}, headers=headers)
        assert answer.status_code == 200, answer.text
        yield client, tenant, headers


def test_points_and_redemptions_over_http(
    bank: tuple[TestClient, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, tenant, headers = bank
    lines: list[dict[str, Any]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            lines.append({"event": event, **fields})

    monkeypatch.setattr(client.app.state.guard, "audit", Recorder())  # type: ignore[attr-defined]
    plan = client.get("/v1/customers/RICH/service-plan", headers=headers).json()
    assert (plan["tier"], plan["points_multiplier"]) == ("affluent", 1.5)
    assert {g["gift_id"] for g in plan["gifts"]} == {"cinema_voucher", "lounge_pass"}

    body = {"kind": "earn", "points": 2000, "idempotency_key": "txn-1"}
    earned = client.post("/v1/customers/RICH/points", json=body, headers=headers)
    assert earned.status_code == 201, earned.text
    assert earned.json()["entry"]["points"] == 3000
    repeated = client.post("/v1/customers/RICH/points", json=body, headers=headers)
    assert repeated.status_code == 200 and repeated.json()["replayed"] is True
    assert repeated.json()["entry"]["id"] == earned.json()["entry"]["id"]

    redeem = {"gift_id": "lounge_pass", "idempotency_key": "r-1"}
    answer = client.post("/v1/customers/RICH/redemptions", json=redeem, headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["balance"] == {"available": 1000, "pending": 0, "total": 1000}
    short = client.post(
        "/v1/customers/RICH/redemptions",
        json={"gift_id": "lounge_pass", "idempotency_key": "r-2"},
        headers=headers,
    )
    assert short.status_code == 409 and short.json()["code"] == "insufficient_points"
    assert short.json()["reason"] == "balance"

    client.post("/v1/customers/MASS/points", json={**body, "idempotency_key": "m"}, headers=headers)
    hidden = client.post("/v1/customers/MASS/redemptions", json=redeem, headers=headers)
    assert hidden.status_code == 403 and hidden.json()["code"] == "gift_not_visible"
    unknown = client.post(
        "/v1/customers/MASS/redemptions",
        json={"gift_id": "yacht", "idempotency_key": "y"},
        headers=headers,
    )
    assert unknown.status_code == 404
    bad = client.post("/v1/customers/MASS/redemptions", json={"gift_id": "pen"}, headers=headers)
    assert bad.status_code == 422 and "idempotency_key" in bad.text

    page = client.get("/v1/customers/RICH/points", params={"limit": 1}, headers=headers).json()
    assert page["total_entries"] == 2 and [e["kind"] for e in page["entries"]] == ["redemption"]
    assert page["balance"]["total"] == 1000

    audited = [line for line in lines if line.get("gift") == "lounge_pass"]
    assert [line["status"] for line in audited] == [201, 409, 403]
    assert audited[0]["customer"] == "RICH" and audited[0]["tenant"] == tenant
    assert audited[0]["points"] == -2000


def test_rewards_are_tenant_isolated_and_need_their_scopes(
    bank: tuple[TestClient, str, dict[str, str]],
) -> None:
    client, _, headers = bank
    body = {"kind": "earn", "points": 10, "idempotency_key": "t"}
    assert client.post("/v1/customers/RICH/points", json=body, headers=headers).status_code == 201
    engine = client.app.state.engine  # type: ignore[attr-defined]
    _, other = create_client(engine, name="o", scopes=sorted(ALL_SCOPES), tenant="other-bank")
    elsewhere = {"X-API-Key": other}
    assert client.post("/v1/customers/RICH/points", json=body, headers=elsewhere).status_code == 404
    seen = client.get("/v1/customers/RICH/points", headers=elsewhere).json()
    assert seen["total_entries"] == 0 and seen["balance"]["total"] == 0
    _, reader = create_client(engine, name="r", scopes=["customers:read"], tenant="other-bank")
    refused = client.post("/v1/customers/RICH/points", json=body, headers={"X-API-Key": reader})
    assert refused.status_code == 403
    assert client.get("/v1/customers/RICH/points").status_code == 401


def test_the_nightly_expiry_command(sqlite_engine: Engine) -> None:
    url = str(sqlite_engine.url)
    policy, tenant = small_policy(lock_days=0), f"n-{uuid.uuid4().hex[:8]}"
    with Session(sqlite_engine) as session:
        service.earn(
            session,
            rewards=policy,
            tier="mass",
            tenant=tenant,
            customer_id="C",
            points=10,
            idempotency_key="k",
            description=None,
            now=T0,
        )
    outputs = []
    for _ in range(2):
        get_settings.cache_clear()
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("CVM_DATABASE_URL", url)
                result = CliRunner().invoke(cli, ["rewards", "expire", "--as-of", "2026-03-12"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout.splitlines()[1].split())
    assert outputs[0][0] == "2026-03-12" and int(outputs[0][2]) >= 1
    assert outputs[1][1:] == ["0", "0", "0"]
    assert entries_sum(sqlite_engine, tenant, "C") == 0
