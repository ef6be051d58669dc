"""The bank's tier policy (issue 18, item 1): validation at load, inclusive cut-offs, the
downgrade after K months below, the gaps, the tier over HTTP and re-tiering the book."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli.main import cli
from app.config import get_settings
from app.customers.features import Feature
from app.http.app import create_app
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from app.value.policy import (
    InvalidPolicy,
    Measure,
    TierPolicy,
    evaluate,
    load_policy,
    parse_policy,
)
from app.value.tables import TierMovement
from tests.conftest import ON_SQLITE_ONLY
from tests.value_support import assert_pyramid_as_before

DEFAULT = Path(__file__).parents[1] / "app" / "resources" / "tier_policy.json"
RB = Measure.RELATIONSHIP_BALANCE


@pytest.fixture(scope="module")
def policy() -> TierPolicy:
    """The policy shipped with CVM: 25k, 100k, 500k, 2M on the relationship balance."""
    return load_policy(DEFAULT)


def raw_policy(**changes: Any) -> dict[str, Any]:
    """The shipped policy as JSON data, top-level keys replaced."""
    data: dict[str, Any] = json.loads(DEFAULT.read_text())
    data.update(changes)
    return data


def month(savings: float = 0.0, **balances: float) -> dict[str, Feature]:
    """One month's features: a savings balance and any other balance features."""
    features: dict[str, Feature] = {
        "current_account_balance": 0.0,
        "savings_balance": savings,
        "term_deposit_balance": 0.0,
        "fund_holdings": 0.0,
        "insurance_holdings": 0.0,
        "pension_holdings": 0.0,
        "mortgage_balance": 0.0,
        "personal_loan_balance": 0.0,
        "business_loan_balance": 0.0,
        "products_held": 2,
        "profit": None,
    }
    features.update(balances)
    return features


# --- validation at load ---------------------------------------------------------------------


def test_the_shipped_policy_loads() -> None:
    policy = load_policy(DEFAULT)
    assert policy.names == ["mass", "emerging_affluent", "affluent", "high_net_worth", "private"]
    assert policy.downgrade_after_months == 3


@pytest.mark.parametrize(
    ("tiers_change", "key", "words"),
    [
        ({2: {"relationship_balance": 100000, "wealth_score": 3}}, "tiers[2].cutoffs.wealth_score",
         "unknown measure"),
        ({2: {"relationship_balance": 25000}}, "tiers[2].cutoffs.relationship_balance", "overlaps"),
        ({3: {"relationship_balance": 90000}}, "tiers[3].cutoffs.relationship_balance", "overlaps"),
        ({0: {"loans": 1}}, "tiers[0].cutoffs", "lowest tier"),
        ({2: {"relationship_balance": 100000, "loans": 5}}, "tiers[3].cutoffs.loans", "missing"),
    ],
)  # fmt: skip
def test_an_invalid_policy_is_refused_naming_the_key(
    tiers_change: dict[int, dict[str, float]], key: str, words: str
) -> None:
    data = raw_policy()
    for index, cutoffs in tiers_change.items():
        data["tiers"][index]["cutoffs"] = cutoffs
    with pytest.raises(InvalidPolicy, match=words) as raised:
        parse_policy(json.dumps(data))
    assert raised.value.key == key
    assert str(raised.value).startswith(f"{key}: ")


def test_unknown_top_level_keys_and_bad_numbers_are_named() -> None:
    with pytest.raises(InvalidPolicy) as raised:
        parse_policy(json.dumps(raw_policy(downgrade_after_month=2)))
    assert raised.value.key == "downgrade_after_month"
    with pytest.raises(InvalidPolicy) as raised:
        parse_policy(json.dumps(raw_policy(downgrade_after_months=0)))
    assert raised.value.key == "downgrade_after_months"


def test_the_service_refuses_to_start_on_an_invalid_policy(
    tmp_path: Path, settings_for: Any
) -> None:
    data = raw_policy()
    data["tiers"][1]["cutoffs"]["wealth_score"] = 1
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", tier_policy_file=path)
    with pytest.raises(InvalidPolicy, match=r"tiers\[1\]\.cutoffs\.wealth_score"):
        create_app(settings)


# --- tiering ---------------------------------------------------------------------------------


def test_exactly_at_the_cut_off_qualifies(policy: TierPolicy) -> None:
    assert evaluate(policy, [month(25_000.0)]).tier == "emerging_affluent"
    assert evaluate(policy, [month(24_999.99)]).tier == "mass"
    # Deposits, wealth holdings and insurance value all count towards the balance.
    mixed = month(10_000.0, fund_holdings=60_000.0, insurance_holdings=20_000.0,
                  current_account_balance=5_000.0, term_deposit_balance=5_000.0)  # fmt: skip
    assert evaluate(policy, [mixed]).tier == "affluent"
    # Loans are their own measure, not part of the relationship balance.
    assert evaluate(policy, [month(0.0, mortgage_balance=300_000.0)]).tier == "mass"


def test_the_third_month_below_re_tiers_the_second_does_not(policy: TierPolicy) -> None:
    above, below = month(120_000.0), month(99_999.0)
    two = evaluate(policy, [above, below, below])
    assert (two.tier, two.qualifying_tier, two.months_below) == ("affluent", "emerging_affluent", 2)
    assert two.downgrade_in_months == 1
    assert two.gap_to_stay == pytest.approx({RB: 1.0})
    three = evaluate(policy, [above, below, below, below])
    assert (three.tier, three.months_below, three.gap_to_stay) == ("emerging_affluent", 0, None)
    # A month back at the cut-off resets the count.
    reset = evaluate(policy, [above, below, below, month(100_000.0), below, below])
    assert reset.tier == "affluent" and reset.months_below == 2


def test_an_upgrade_is_immediate_and_a_grace_period_holds_a_new_tier(policy: TierPolicy) -> None:
    assert evaluate(policy, [month(1.0), month(600_000.0)]).tier == "high_net_worth"
    graced = policy.model_copy(update={"grace_months": 6})
    history = [month(120_000.0)] + [month(50_000.0)] * 4
    held = evaluate(graced, history)
    assert held.tier == "affluent" and held.downgrade_in_months == 2
    assert evaluate(graced, [*history, month(50_000.0)]).tier == "affluent"
    assert evaluate(graced, [*history, month(50_000.0), month(50_000.0)]).tier == (
        "emerging_affluent"
    )


def test_every_customer_below_the_top_has_the_exact_gap_to_the_next_tier(
    policy: TierPolicy,
) -> None:
    for balance, tier, upper, gap in [
        (0.0, "mass", "emerging_affluent", 25_000.0),
        (99_000.5, "emerging_affluent", "affluent", 999.5),
        (450_000.0, "affluent", "high_net_worth", 50_000.0),
        (1_999_999.0, "high_net_worth", "private", 1.0),
    ]:
        result = evaluate(policy, [month(balance)])
        assert (result.tier, result.next_tier) == (tier, upper)
        assert result.gap_to_next == pytest.approx({RB: gap})
        assert result.downgrade_in_months is None and result.gap_to_stay is None
    top = evaluate(policy, [month(2_000_000.0)])
    assert (top.tier, top.next_tier, top.gap_to_next) == ("private", None, None)


def test_optional_measures_must_all_be_met(policy: TierPolicy) -> None:
    data = raw_policy()
    for tier in data["tiers"][2:]:
        tier["cutoffs"]["products_held"] = 3
    strict = parse_policy(json.dumps(data))
    assert evaluate(strict, [month(150_000.0)]).tier == "emerging_affluent"
    result = evaluate(strict, [month(150_000.0, products_held=3)])
    assert result.tier == "affluent"
    assert result.gap_to_next == {RB: pytest.approx(350_000.0), Measure.PRODUCTS_HELD: 0.0}


# --- over HTTP and for the book ----------------------------------------------------------------


def events_of(customer_id: str, savings_by_month: list[float]) -> list[dict[str, Any]]:
    """A profile, then one savings balance a month from January 2026."""
    events: list[dict[str, Any]] = [
        {
            "event_id": f"{customer_id}-p",
            "customer_id": customer_id,
            "type": "customer_profile",
            "occurred_at": "2026-01-02T09:00:00Z",
            "age": 40,
        }
    ]
    for index, balance in enumerate(savings_by_month):
        events.append(
            {
                "event_id": f"{customer_id}-b{index}",
                "customer_id": customer_id,
                "type": "balance_snapshot",
                "occurred_at": f"2026-{index + 1:02d}-15T09:00:00Z",
                "product": "savings",
                "balance": balance,
            }
        )
    return events


BOOK = {
    "A": [30_000.0, 30_000.0, 30_000.0, 30_000.0],  # emerging_affluent throughout
    "B": [150_000.0, 90_000.0, 90_000.0, 90_000.0],  # third month below: emerging_affluent
    "C": [150_000.0, 150_000.0, 90_000.0, 90_000.0],  # second month below: still affluent
    "D": [5_000.0, 5_000.0, 5_000.0, 2_500_000.0],  # private
}


@pytest.fixture
def tenant_client(client: TestClient, engine: Engine) -> Iterator[tuple[TestClient, str]]:
    """The app with a key of a tenant of its own, which holds the book above."""
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    _, key = create_client(engine, name=tenant, scopes=sorted(ALL_SCOPES), tenant=tenant)
    events = [e for name, balances in BOOK.items() for e in events_of(name, balances)]
    answer = client.post("/v1/events", json={"events": events}, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    client.headers["X-API-Key"] = key
    yield client, tenant


def apply(database_url: str, *arguments: str) -> list[list[str]]:
    """Run ``cvm tiers apply`` on the database; the table's rows."""
    runner = CliRunner()
    get_settings.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CVM_DATABASE_URL", database_url)
            result = runner.invoke(cli, ["tiers", "apply", *arguments])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["from", "to", "customers"]
    return [line.split() for line in lines[1:]]


def test_the_tier_of_a_customer_and_re_tiering_the_book(
    tenant_client: tuple[TestClient, str],
    database_url: str,
    engine: Engine,
    tmp_path: Path,
    policy: TierPolicy,
) -> None:
    client, tenant = tenant_client
    b = client.get("/v1/customers/B/tier").json()
    assert (b["tier"], b["month"], b["recorded_tier"]) == ("emerging_affluent", "2026-04", None)
    assert b["next_tier"] == "affluent" and b["gap_to_next"] == {"relationship_balance": 10_000.0}
    c = client.get("/v1/customers/C/tier").json()
    assert (c["tier"], c["months_below"], c["downgrade_in_months"]) == ("affluent", 2, 1)
    assert c["gap_to_stay"] == {"relationship_balance": 10_000.0}
    d = client.get("/v1/customers/D/tier").json()
    assert (d["tier"], d["next_tier"], d["gap_to_next"]) == ("private", None, None)
    assert client.get("/v1/customers/nobody/tier").status_code == 404

    first = ["--tenant", tenant]
    assert apply(database_url, *first, "--dry-run") == [
        ["-", "emerging_affluent", "2"], ["-", "affluent", "1"], ["-", "private", "1"]
    ]  # fmt: skip
    with Session(engine) as session:
        assert (
            session.scalars(select(TierMovement).where(TierMovement.tenant == tenant)).all() == []
        )
    apply(database_url, *first)
    with Session(engine) as session:  # the run stored the pyramid's totals
        assert_pyramid_as_before(session, policy, tenant)
    assert apply(database_url, *first, "--dry-run") == []  # applied: nothing left to move
    assert client.get("/v1/customers/C/tier").json()["recorded_tier"] == "affluent"

    # A policy change: affluent from 80,000. B goes up, C is then no longer below its tier.
    changed = raw_policy(version="2027-01")
    changed["tiers"][2]["cutoffs"]["relationship_balance"] = 80_000
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(changed))
    assert apply(database_url, *first, "--policy", str(path), "--dry-run") == [
        ["emerging_affluent", "affluent", "1"]
    ]
    apply(database_url, *first, "--policy", str(path))
    with Session(engine) as session:
        assert_pyramid_as_before(session, policy, tenant)
        rows = session.scalars(
            select(TierMovement).where(TierMovement.tenant == tenant).order_by(TierMovement.id)
        ).all()
    assert [(r.customer_id, r.from_tier, r.to_tier, r.reason) for r in rows[-1:]] == [
        ("B", "emerging_affluent", "affluent", "upgrade")
    ]
    assert {r.reason for r in rows[:-1]} == {"initial"} and len(rows) == 5
    assert rows[-1].policy_version == "2027-01" and rows[-1].month == "2026-04"


@ON_SQLITE_ONLY
def test_an_invalid_policy_file_changes_nothing(
    tenant_client: tuple[TestClient, str], database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A book whose every customer would move: a refused policy stores no movement."""
    client, tenant = tenant_client
    data = raw_policy()
    data["tiers"][3]["cutoffs"]["relationship_balance"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    get_settings.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CVM_DATABASE_URL", database_url)
            result = CliRunner().invoke(
                cli, ["tiers", "apply", "--tenant", tenant, "--policy", str(path)]
            )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "tiers[3].cutoffs.relationship_balance" in result.output
    with Session(engine) as session:
        assert (
            session.scalars(select(TierMovement).where(TierMovement.tenant == tenant)).all() == []
        )
    assert client.get("/v1/customers/C/tier").json()["recorded_tier"] is None
    assert apply(database_url, "--tenant", tenant, "--dry-run") == [
        ["-", "emerging_affluent", "2"], ["-", "affluent", "1"], ["-", "private", "1"]
    ]  # fmt: skip
