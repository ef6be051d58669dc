"""Lifecycle stages from the record: the rules at their exact boundaries, transitions kept on
intake (late events included), by churn assessments and by the time sweep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.customers.lifecycle import (
    MODEL_STAGE,
    LifecycleRules,
    LifecycleStage,
    RecordFacts,
    StageCause,
    StageSource,
    add_months,
    evaluate,
    model_stage,
)
from app.customers.service import IntakeRules, check_rows, record_events
from app.customers.stages import Risk, read_stage, refresh_stages, sweep_stages
from app.customers.tables import CustomerStageTransition
from app.scoring.assess import Stage

RULES = LifecycleRules(new_months=3, dormant_days=90)
START = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
INTAKE = IntakeRules(future_tolerance_s=300, max_events=10_000)


# --- the rules, pure --------------------------------------------------------------------------


def test_every_lifecycle_stage_maps_to_one_scoring_stage() -> None:
    assert set(MODEL_STAGE) == set(LifecycleStage)
    assert {model_stage(s) for s in (LifecycleStage.ACTIVE, LifecycleStage.AT_RISK)} == {
        Stage.EXISTING
    }
    assert model_stage(LifecycleStage.DORMANT) is Stage.EXISTING
    assert model_stage(LifecycleStage.PROSPECT) is Stage.PROSPECT
    assert model_stage(LifecycleStage.NEW) is Stage.NEW
    assert model_stage(LifecycleStage.LOST) is Stage.LOST


def test_add_months_keeps_the_day_or_takes_the_months_last() -> None:
    assert add_months(START, 1) == datetime(2026, 2, 28, 9, 0, tzinfo=UTC)
    assert add_months(START, 3) == datetime(2026, 4, 30, 9, 0, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 2) == datetime(2027, 1, 15, tzinfo=UTC)


def test_new_lasts_exactly_n_calendar_months() -> None:
    held = RecordFacts(customer_since=START, open_products=1, last_activity_at=START)
    boundary = datetime(2026, 4, 30, 9, 0, tzinfo=UTC)
    just_before = evaluate(held, RULES, now=boundary - timedelta(seconds=1))
    at = evaluate(held, RULES, now=boundary)
    assert (just_before.stage, just_before.cause) == (LifecycleStage.NEW, StageCause.FIRST_MONTHS)
    assert (at.stage, at.since) == (LifecycleStage.ACTIVE, boundary)
    # The sweep looks again at the boundary, and at the end of the quiet days after that.
    assert just_before.review_at == boundary
    assert at.review_at == START + timedelta(days=90)
    assert evaluate(held, LifecycleRules(new_months=4), now=boundary).stage is LifecycleStage.NEW


def test_dormant_after_exactly_n_days_without_activity() -> None:
    last = START + timedelta(days=200)
    held = RecordFacts(customer_since=START, open_products=2, last_activity_at=last)
    boundary = last + timedelta(days=90)
    assert evaluate(held, RULES, now=boundary - timedelta(seconds=1)).stage is (
        LifecycleStage.ACTIVE
    )
    assert evaluate(held, RULES, now=boundary - timedelta(days=1)).review_at == boundary
    dormant = evaluate(held, RULES, now=boundary)
    assert dormant.review_at is None  # only activity ends dormancy
    assert (dormant.stage, dormant.cause, dormant.since) == (
        LifecycleStage.DORMANT,
        StageCause.NO_ACTIVITY,
        boundary,
    )
    assert evaluate(held, LifecycleRules(dormant_days=91), now=boundary).stage is (
        LifecycleStage.ACTIVE
    )


def test_rule_order_prospect_lost_dormant_at_risk_new_active() -> None:
    now = START + timedelta(days=30)
    assert evaluate(RecordFacts(), RULES, now=now).stage is LifecycleStage.PROSPECT
    closed = RecordFacts(closed_products=2, last_closed_at=START, at_risk=True)
    assert evaluate(closed, RULES, now=now).stage is LifecycleStage.LOST
    risky = RecordFacts(customer_since=START, open_products=1, last_activity_at=now, at_risk=True)
    assert evaluate(risky, RULES, now=now).stage is LifecycleStage.AT_RISK
    quiet = RecordFacts(customer_since=START, open_products=1, at_risk=True)
    assert evaluate(quiet, RULES, now=START + timedelta(days=90)).stage is LifecycleStage.DORMANT


def test_at_risk_follows_the_alert_threshold() -> None:
    assert RULES.at_risk(0.2, "high") and not RULES.at_risk(0.9, "medium")
    assert LifecycleRules(churn_band="medium").at_risk(0.5, "medium")
    by_probability = LifecycleRules(churn_probability=0.6)
    assert by_probability.at_risk(0.6, "low") and not by_probability.at_risk(0.59, "high")


# --- kept with the record ---------------------------------------------------------------------


def _event(customer: str, type_: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{uuid.uuid4().hex[:10]}",
        "customer_id": customer,
        "type": type_,
        "occurred_at": at.isoformat(),
        **fields,
    }


def _take(
    engine: Engine, rows: list[dict[str, Any]], received_at: datetime, tenant: str = "bank-a"
) -> None:
    events, rejected = check_rows(rows, rules=INTAKE, now=datetime.now(UTC))
    assert not rejected
    with Session(engine) as session:
        record_events(
            session,
            events=events,
            tenant=tenant,
            request_id="test",
            received_at=received_at,
            pseudonymizer=None,
            lifecycle=RULES,
        )


def _history(
    engine: Engine, customer: str, tenant: str = "bank-a"
) -> list[tuple[str | None, str, datetime, str]]:
    with engine.connect() as connection:
        _, moves = read_stage(connection, tenant=tenant, customer_ids=[customer])
    return [(m.from_stage, m.to_stage, m.at, m.cause) for m in moves]


def test_intake_keeps_transitions_with_their_dates(engine: Engine) -> None:
    customer = f"lc-{uuid.uuid4().hex[:8]}"
    _take(engine, [_event(customer, "digital_session", START, platform="website")], START)
    since = START.date().isoformat()
    opened_at = START + timedelta(days=1)
    _take(
        engine,
        [
            _event(customer, "customer_profile", opened_at, customer_since=since, age=40),
            _event(customer, "account_opened", opened_at, product="savings"),
        ],
        opened_at,
    )
    # Activity after the first three months: the customer is active from the boundary on.
    later = datetime(2026, 5, 10, tzinfo=UTC)
    _take(
        engine,
        [_event(customer, "transaction", later, amount=5.0, direction="credit", channel="atm")],
        later,
    )
    closed_at = later + timedelta(days=3)
    _take(engine, [_event(customer, "account_closed", closed_at, product="savings")], closed_at)
    assert _history(engine, customer) == [
        (None, "prospect", START, "no_product"),
        ("prospect", "new", opened_at, "first_months"),
        ("new", "active", later, "established"),
        ("active", "lost", closed_at, "all_products_closed"),
    ]
    with engine.connect() as connection:
        row = connection.execute(
            select(CustomerStageTransition.source).where(
                CustomerStageTransition.customer_id == customer
            )
        ).scalars()
        assert set(row) == {StageSource.INTAKE.value}
        current, _ = read_stage(connection, tenant="other", customer_ids=[customer])
    assert current is None  # another tenant sees nothing


def test_late_events_count_where_they_belong_and_the_sweep_makes_dormant(engine: Engine) -> None:
    customer, tenant = "lc-late", f"t-{uuid.uuid4().hex[:8]}"
    last = datetime(2026, 2, 1, tzinfo=UTC)
    opening = [
        _event(customer, "customer_profile", last, customer_since="2025-06-01"),
        _event(customer, "account_opened", last, product="current_account"),
    ]
    _take(engine, opening, last, tenant)
    day_90 = last + timedelta(days=90)
    with engine.begin() as connection:
        early = sweep_stages(
            connection, now=day_90 - timedelta(seconds=1), rules=RULES, tenants=[tenant]
        )
        assert early == []
        swept = sweep_stages(connection, now=day_90, rules=RULES, tenants=[tenant])
        assert [(t.to_stage, t.at) for t in swept] == [(LifecycleStage.DORMANT, day_90)]
    assert _history(engine, customer, tenant)[-1] == ("active", "dormant", day_90, "no_activity")
    # A late transaction from before the quiet spell's last 90 days changes nothing ...
    arrived = day_90 + timedelta(days=2)
    card = {"amount": 1.0, "direction": "debit", "channel": "card"}
    _take(
        engine, [_event(customer, "transaction", last - timedelta(days=5), **card)], arrived, tenant
    )
    assert _history(engine, customer, tenant)[-1][1] == "dormant"
    # ... one from within them (received late) makes the customer active again.
    _take(
        engine,
        [_event(customer, "transaction", last + timedelta(days=10), **card)],
        arrived,
        tenant,
    )
    moves = _history(engine, customer, tenant)
    # The late activity shows the spell was shorter: active again from where dormant began
    # (a history never goes back in time; recorded_at says when it was learnt).
    assert moves[-1] == ("dormant", "active", day_90, "established")
    assert [m[2] for m in moves] == sorted(m[2] for m in moves)
    with engine.begin() as connection:  # nothing changes twice
        assert sweep_stages(connection, now=arrived, rules=RULES, tenants=[tenant]) == []


def test_a_churn_assessment_crossing_the_threshold_makes_at_risk(engine: Engine) -> None:
    customer = f"lc-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 3, 1, tzinfo=UTC)
    _take(
        engine,
        [
            _event(customer, "customer_profile", at, customer_since="2024-01-01"),
            _event(customer, "account_opened", at, product="savings"),
        ],
        at,
    )
    scored = at + timedelta(days=5)
    with engine.begin() as connection:
        refresh_stages(
            connection,
            tenant="bank-a",
            customer_ids=[customer],
            now=scored,
            rules=RULES,
            source=StageSource.ASSESSMENT,
            risks={customer: Risk(True, scored)},
        )
    # Later activity keeps the verdict: still at risk until an assessment says otherwise.
    _take(
        engine,
        [_event(customer, "contact", scored, kind="branch_visit")],
        scored + timedelta(hours=1),
    )
    calm = scored + timedelta(days=1)
    with engine.begin() as connection:
        refresh_stages(
            connection,
            tenant="bank-a",
            customer_ids=[customer],
            now=calm,
            rules=RULES,
            source=StageSource.ASSESSMENT,
            risks={customer: Risk(False, calm)},
        )
    assert [m[1] for m in _history(engine, customer)] == ["active", "at_risk", "active"]
    assert _history(engine, customer)[1][2:] == (scored, "churn_risk")


def test_cvm_customers_sweep_moves_the_new_to_active_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli
    from app.config import get_settings

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    opened = datetime(2026, 7, 15, tzinfo=UTC)
    recent = datetime(2026, 10, 10, tzinfo=UTC)
    card = {"amount": 1.0, "direction": "debit", "channel": "card"}
    events = [
        _event("lc-cli", "customer_profile", opened, customer_since="2026-07-15"),
        _event("lc-cli", "account_opened", opened, product="credit_card"),
    ]
    _take(engine, events, opened, tenant)
    _take(engine, [_event("lc-cli", "transaction", recent, **card)], recent, tenant)
    monkeypatch.setenv("CVM_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        sweep = ["customers", "sweep", "--tenant", tenant, "--at", "2026-10-15T00:00:00"]
        first = CliRunner().invoke(cli, sweep)
        again = CliRunner().invoke(cli, sweep)
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert "1 stage change(s): new -> active: 1" in first.output
    assert "0 stage change(s)" in again.output
    assert _history(engine, "lc-cli", tenant)[-1] == (
        "new",
        "active",
        datetime(2026, 10, 15, tzinfo=UTC),
        "established",
    )
