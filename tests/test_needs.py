"""The needs warning: each rule at its exact threshold, need alerts opened once by intake
(repeated events, a second salary, the cooldown), beside a churn alert of the same customer,
rules switched on and off by the setting, bad rules refused by name, and need alerts routed
and owned as churn alerts are."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.alerts.schemas import AcknowledgeRequest, ResolveRequest
from app.alerts.service import acknowledge_alert, resolve_alert
from app.alerts.states import AlertCause, Outcome
from app.alerts.tables import Alert
from app.casework.routing import RoutingPolicy, route_new_alerts
from app.config import NeedsRulesSetting, Settings
from app.customers.features import TrailEvent
from app.customers.needs import (
    DEFAULT_NEEDS,
    NO_NEEDS,
    DepositMaturing,
    FirstSalary,
    IdleInflow,
    NeedRules,
    deposit_maturing,
    first_salary,
    idle_inflow,
)
from app.customers.repository import idle_candidates
from app.customers.service import IntakeRules, check_rows, record_events
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.scoring.repository import TenantScope
from tests.casework_support import new_key, put_staff

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
IDLE = IdleInflow(amount=20_000.0, idle=timedelta(days=30), product="investment_fund")
MATURING = DepositMaturing(window_days=30, product="term_deposit")
SALARY = FirstSalary(category="salary", product="credit_card")
INTAKE = IntakeRules(future_tolerance_s=300, max_events=10_000)


def _tx(
    event_id: str, at: datetime, amount: float, direction: str, **extra: Any
) -> tuple[str, TrailEvent]:
    payload = {"amount": amount, "direction": direction, "channel": "transfer", **extra}
    return event_id, TrailEvent("C-1", "transaction", at, payload)


def _opened(event_id: str, at: datetime, matures: date, **extra: Any) -> tuple[str, TrailEvent]:
    payload = {"product": "term_deposit", "maturity_date": matures.isoformat(), **extra}
    return event_id, TrailEvent("C-1", "account_opened", at, payload)


# --- the rules, pure --------------------------------------------------------------------------


def test_an_inflow_is_idle_exactly_at_the_amount_and_the_days() -> None:
    at_threshold = [_tx("in", T0, 20_000.0, "credit")]
    as_of = T0 + timedelta(days=30)
    need = idle_inflow(at_threshold, spent={}, as_of=as_of, rule=IDLE)
    assert need is not None
    assert (need.cause, need.product, need.event_id) == (
        AlertCause.IDLE_INFLOW,
        "investment_fund",
        "in",
    )
    assert "20,000 EUR" in need.text and "30 days" in need.text
    # A second short of the idle days, a cent short of the amount: no need.
    assert (
        idle_inflow(at_threshold, spent={}, as_of=as_of - timedelta(seconds=1), rule=IDLE) is None
    )
    below = [_tx("in", T0, 19_999.99, "credit")]
    assert idle_inflow(below, spent={}, as_of=as_of, rule=IDLE) is None
    # Spent since (what the debits after it add up to) leaving less than the amount: not
    # idle; past the lookback (twice the idle days) it is not looked at.
    bigger = [_tx("in", T0, 25_000.0, "credit")]
    assert idle_inflow(bigger, spent={"in": 5_000.0}, as_of=as_of, rule=IDLE) is not None
    assert idle_inflow(bigger, spent={"in": 5_000.01}, as_of=as_of, rule=IDLE) is None
    assert idle_inflow(bigger, spent={}, as_of=T0 + timedelta(days=60), rule=IDLE) is not None
    assert (
        idle_inflow(bigger, spent={}, as_of=T0 + timedelta(days=60, seconds=1), rule=IDLE) is None
    )


def test_a_deposit_matures_within_the_window_exactly() -> None:
    as_of = T0
    inside = [_opened("td", T0 - timedelta(days=365), as_of.date() + timedelta(days=30))]
    need = deposit_maturing(inside, as_of=as_of, rule=MATURING)
    assert need is not None and (need.cause, need.product) == (
        AlertCause.DEPOSIT_MATURING,
        "term_deposit",
    )
    assert "in 30 days" in need.text
    beyond = [_opened("td", T0 - timedelta(days=365), as_of.date() + timedelta(days=31))]
    assert deposit_maturing(beyond, as_of=as_of, rule=MATURING) is None
    today = [_opened("td", T0 - timedelta(days=365), as_of.date())]
    assert deposit_maturing(today, as_of=as_of, rule=MATURING) is not None
    matured = [_opened("td", T0 - timedelta(days=365), as_of.date() - timedelta(days=1))]
    assert deposit_maturing(matured, as_of=as_of, rule=MATURING) is None
    # Closed since its opening (by account, else by product): nothing to renew.
    closing = TrailEvent("C-1", "account_closed", T0 - timedelta(days=1), {"product": "x"})
    own = [_opened("td", T0 - timedelta(days=365), as_of.date(), account_id="A-1")]
    assert deposit_maturing([*own, ("c", closing)], as_of=as_of, rule=MATURING) is not None
    closed = TrailEvent(
        "C-1", "account_closed", T0 - timedelta(days=1), {"product": "x", "account_id": "A-1"}
    )
    assert deposit_maturing([*own, ("c", closed)], as_of=as_of, rule=MATURING) is None


def test_only_the_first_salary_is_a_need() -> None:
    first = _tx("s1", T0, 2_400.0, "credit", category="salary")
    second = _tx("s2", T0 + timedelta(days=30), 2_400.0, "credit", category="salary")
    need = first_salary([first], new_ids={"s1"}, rule=SALARY)
    assert need is not None and (need.cause, need.product) == (
        AlertCause.FIRST_SALARY,
        "credit_card",
    )
    assert first_salary([first, second], new_ids={"s2"}, rule=SALARY) is None
    # Another category, a debit, or the first salary seen before: no need.
    other = _tx("b", T0, 2_400.0, "credit", category="bonus")
    assert first_salary([other], new_ids={"b"}, rule=SALARY) is None
    debit = _tx("d", T0, 2_400.0, "debit", category="salary")
    assert first_salary([debit], new_ids={"d"}, rule=SALARY) is None
    assert first_salary([first], new_ids=set(), rule=SALARY) is None


# --- the setting ------------------------------------------------------------------------------


def test_rules_are_switched_by_the_setting() -> None:
    assert DEFAULT_NEEDS.any and DEFAULT_NEEDS.cooldown == timedelta(days=30)
    assert not NO_NEEDS.any
    rules = NeedRules.from_settings(
        Settings(
            needs_rules={
                "idle_inflow": {"amount_eur": 50_000, "idle_days": 14, "product": "brokerage"},
                "first_salary": {"enabled": False},
                "cooldown_days": 7,
            }
        )
    )
    assert rules.idle_inflow == IdleInflow(50_000.0, timedelta(days=14), "brokerage")
    assert rules.first_salary is None
    assert rules.deposit_maturing == MATURING
    assert rules.cooldown == timedelta(days=7)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"idle_inflow": {"amount_eur": 0}}, "needs_rules.idle_inflow.amount_eur"),
        ({"idle_inflow": {"idle_days": 0}}, "needs_rules.idle_inflow.idle_days"),
        ({"deposit_maturing": {"window_days": -1}}, "needs_rules.deposit_maturing.window_days"),
        ({"first_salary": {"product": ""}}, "needs_rules.first_salary.product"),
        ({"first_salary": {"categroy": "salary"}}, "needs_rules.first_salary.categroy"),
        ({"big_spender": {}}, "needs_rules.big_spender"),
        ({"cooldown_days": -1}, "needs_rules.cooldown_days"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_key(value: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(needs_rules=value)
    assert key in str(refused.value)


def test_the_defaults_are_documented_values() -> None:
    defaults = NeedsRulesSetting()
    assert (defaults.idle_inflow.amount_eur, defaults.idle_inflow.idle_days) == (20_000.0, 30)
    assert defaults.deposit_maturing.window_days == 30


# --- intake opens need alerts -----------------------------------------------------------------


def _event(customer: str, type_: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{uuid.uuid4().hex[:10]}",
        "customer_id": customer,
        "type": type_,
        "occurred_at": at.isoformat(),
        **fields,
    }


def _salary(customer: str, at: datetime, amount: float = 2_400.0) -> dict[str, Any]:
    return _event(
        customer,
        "transaction",
        at,
        amount=amount,
        direction="credit",
        channel="transfer",
        category="salary",
    )


def _take(
    engine: Engine,
    rows: list[dict[str, Any]],
    *,
    tenant: str,
    needs: NeedRules = DEFAULT_NEEDS,
    received_at: datetime | None = None,
) -> None:
    events, rejected = check_rows(rows, rules=INTAKE, now=datetime.now(UTC))
    assert not rejected
    with Session(engine) as session:
        record_events(
            session,
            events=events,
            tenant=tenant,
            request_id="test",
            received_at=received_at or datetime.now(UTC),
            pseudonymizer=None,
            needs=needs,
        )


def _alerts(engine: Engine, tenant: str, customer: str) -> list[Alert]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Alert)
                .where(Alert.tenant == tenant, Alert.customer_id == customer)
                .order_by(Alert.id)
            )
        )


def _tenant() -> str:
    return f"needs-{uuid.uuid4().hex[:8]}"


def test_a_first_salary_opens_one_alert_and_nothing_repeats_it(engine: Engine) -> None:
    tenant, customer = _tenant(), f"ns-{uuid.uuid4().hex[:8]}"
    first = _salary(customer, T0)
    _take(engine, [first], tenant=tenant)
    (alert,) = _alerts(engine, tenant, customer)
    assert (alert.reason, alert.product, alert.status) == ("first_salary", "credit_card", "open")
    assert (alert.risk_band, alert.probability) == (None, None)
    assert alert.actions and "first salary" in alert.actions[0]
    # The same event again, the next month's salary: still one alert.
    _take(engine, [first], tenant=tenant)
    _take(engine, [_salary(customer, T0 + timedelta(days=30))], tenant=tenant)
    assert len(_alerts(engine, tenant, customer)) == 1
    # Another tenant's customer of the same id is another customer.
    other = _tenant()
    _take(engine, [_salary(customer, T0 + timedelta(days=31))], tenant=other)
    assert [a.reason for a in _alerts(engine, other, customer)] == ["first_salary"]


def test_an_idle_inflow_opens_once_and_the_cooldown_holds_it(engine: Engine) -> None:
    tenant, customer = _tenant(), f"ni-{uuid.uuid4().hex[:8]}"
    inflow = _event(
        customer, "transaction", T0, amount=20_000.0, direction="credit", channel="transfer"
    )
    _take(engine, [inflow], tenant=tenant)
    login = {"platform": "web"}
    _take(
        engine,
        [_event(customer, "digital_session", T0 + timedelta(days=30, seconds=-1), **login)],
        tenant=tenant,
    )
    assert _alerts(engine, tenant, customer) == []  # a second short of idle
    _take(
        engine,
        [_event(customer, "digital_session", T0 + timedelta(days=30), **login)],
        tenant=tenant,
    )
    (alert,) = _alerts(engine, tenant, customer)
    assert (alert.reason, alert.product) == ("idle_inflow", "investment_fund")
    _take(
        engine,
        [_event(customer, "digital_session", T0 + timedelta(days=31), **login)],
        tenant=tenant,
    )
    assert len(_alerts(engine, tenant, customer)) == 1  # still open: not opened twice
    # Resolved: within the cooldown the same rule does not open it again; after it, it does.
    now = datetime.now(UTC)
    with Session(engine) as session:
        scope = TenantScope(tenant)
        acknowledge_alert(
            session, alert_id=alert.id, request=AcknowledgeRequest(), actor="rm", tenant=scope
        )
        resolve_alert(
            session,
            alert_id=alert.id,
            request=ResolveRequest(outcome=Outcome.OTHER, note="invested elsewhere"),
            actor="rm",
            tenant=scope,
        )
    _take(
        engine,
        [_event(customer, "digital_session", T0 + timedelta(days=32), **login)],
        tenant=tenant,
        received_at=now + timedelta(days=29),
    )
    assert len(_alerts(engine, tenant, customer)) == 1
    _take(
        engine,
        [_event(customer, "digital_session", T0 + timedelta(days=33), **login)],
        tenant=tenant,
        received_at=now + timedelta(days=31),
    )
    assert [a.reason for a in _alerts(engine, tenant, customer)] == ["idle_inflow"] * 2


def test_only_the_debits_after_an_inflow_count_against_it(engine: Engine) -> None:
    tenant = _tenant()
    spent, kept = f"nd-{uuid.uuid4().hex[:8]}", f"nk-{uuid.uuid4().hex[:8]}"

    def tx(customer: str, at: datetime, amount: float, direction: str) -> dict[str, Any]:
        return _event(
            customer, "transaction", at, amount=amount, direction=direction, channel="transfer"
        )

    for customer, after in ((spent, [2_500.0, 2_500.01]), (kept, [2_500.0, 2_500.0])):
        rows = [
            tx(customer, T0, 25_000.0, "credit"),
            tx(customer, T0 - timedelta(days=1), 9_000.0, "debit"),
        ]
        rows += [tx(customer, T0 + timedelta(days=n + 1), a, "debit") for n, a in enumerate(after)]
        _take(engine, rows, tenant=tenant)
        later = _event(customer, "digital_session", T0 + timedelta(days=30), platform="web")
        _take(engine, [later], tenant=tenant)
    assert _alerts(engine, tenant, spent) == []  # 19,999.99 EUR left
    (alert,) = _alerts(engine, tenant, kept)  # exactly 20,000 EUR left
    assert alert.reason == "idle_inflow" and "20,000 EUR left" in alert.actions[0]


def test_a_maturing_deposit_opens_a_renewal_beside_the_other_needs(engine: Engine) -> None:
    tenant, customer = _tenant(), f"nm-{uuid.uuid4().hex[:8]}"
    opened = _event(
        customer,
        "account_opened",
        T0 - timedelta(days=335),
        product="term_deposit",
        account_id="TD-1",
        maturity_date=(T0.date() + timedelta(days=31)).isoformat(),
    )
    _take(engine, [opened], tenant=tenant)
    assert _alerts(engine, tenant, customer) == []  # a year ahead of its opening
    _take(engine, [_salary(customer, T0 + timedelta(days=1))], tenant=tenant)
    reasons = sorted(a.reason for a in _alerts(engine, tenant, customer))
    assert reasons == ["deposit_maturing", "first_salary"]
    renewal = next(a for a in _alerts(engine, tenant, customer) if a.reason == "deposit_maturing")
    assert renewal.product == "term_deposit" and "TD-1" in renewal.actions[0]


def test_rules_switched_off_open_nothing(engine: Engine) -> None:
    tenant, customer = _tenant(), f"no-{uuid.uuid4().hex[:8]}"
    off = NeedRules.of(
        NeedsRulesSetting.model_validate(
            {"first_salary": {"enabled": False}, "idle_inflow": {"enabled": False}}
        )
    )
    _take(engine, [_salary(customer, T0)], tenant=tenant, needs=off)
    assert _alerts(engine, tenant, customer) == []
    _take(engine, [_salary(customer, T0 - timedelta(days=1))], tenant=tenant, needs=NO_NEEDS)
    assert _alerts(engine, tenant, customer) == []


def test_only_debits_after_a_credit_are_spent_from_it(engine: Engine) -> None:
    tenant, customer = _tenant(), f"na-{uuid.uuid4().hex[:8]}"

    def tx(event_id: str, at: datetime, amount: float, direction: str) -> dict[str, Any]:
        return {
            **_event(customer, "transaction", at),
            "event_id": f"{customer}-{event_id}",
            "amount": amount,
            "direction": direction,
            "channel": "transfer",
        }

    rows = [
        tx("a", T0, 30_000.0, "credit"),
        tx("b", T0 + timedelta(days=2), 30_000.0, "credit"),
        tx("small", T0 + timedelta(days=2), 100.0, "credit"),
        tx("d0", T0 - timedelta(days=1), 7.0, "debit"),
        tx("d1", T0, 11.0, "debit"),
        tx("d2", T0 + timedelta(days=1), 100.0, "debit"),
        tx("d3", T0 + timedelta(days=3), 1_000.0, "debit"),
    ]
    _take(engine, rows, tenant=tenant, needs=NO_NEEDS)
    _take(engine, [tx("other", T0 + timedelta(days=1), 500.0, "debit")], tenant=_tenant())

    def read(since: datetime, until: datetime) -> tuple[list[str], dict[str, float]]:
        with engine.connect() as connection:
            credits, spent = idle_candidates(
                connection,
                tenant=tenant,
                customer_ids=[customer],
                since=since,
                until=until,
                min_amount=20_000.0,
            )
        prefix = len(customer) + 1
        return [event_id[prefix:] for event_id, _ in credits], {
            event_id[prefix:]: amount for event_id, amount in spent.items()
        }

    # Strictly after: a debit at the credit's own time is not spent from it; another tenant's
    # debit of the same customer id is not either; small credits are no candidates.
    assert read(T0, T0 + timedelta(days=2)) == (["a", "b"], {"a": 1_100.0, "b": 1_000.0})
    assert read(T0 + timedelta(seconds=1), T0 + timedelta(days=2)) == (["b"], {"b": 1_000.0})
    assert read(T0, T0 + timedelta(days=2, seconds=-1)) == (["a"], {"a": 1_100.0})


# Calls delivering one trail (indexes into it): in time order; latest first; the inflow late,
# in the call of the event that makes it idle; a debit late, likewise. (A debit arriving after
# the alert opened does not withdraw it: the rules judge what is stored when they run.)
ORDERS = {
    "in_order": [[0], [1], [2], [3], [4]],
    "latest_first": [[4], [3], [2], [1], [0]],
    "inflow_late": [[3, 1, 2], [4, 0]],
    "debit_late": [[0], [1], [2], [4, 3]],
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_late_and_out_of_order_events_give_the_same_alerts(engine: Engine, order: str) -> None:
    tenant = _tenant()
    spent, kept = f"nd-{uuid.uuid4().hex[:8]}", f"nk-{uuid.uuid4().hex[:8]}"

    def trail(customer: str, last_debit: float) -> list[dict[str, Any]]:
        def tx(at: datetime, amount: float, direction: str) -> dict[str, Any]:
            return _event(
                customer, "transaction", at, amount=amount, direction=direction, channel="card"
            )

        return [
            tx(T0, 25_000.0, "credit"),
            tx(T0 - timedelta(days=1), 9_000.0, "debit"),  # before the inflow: not spent
            tx(T0 + timedelta(days=1), 2_500.0, "debit"),
            tx(T0 + timedelta(days=2), last_debit, "debit"),
            _event(customer, "digital_session", T0 + timedelta(days=30), platform="web"),
        ]

    trails = {spent: trail(spent, 2_500.01), kept: trail(kept, 2_500.0)}
    for call in ORDERS[order]:
        _take(engine, [trails[c][i] for c in (spent, kept) for i in call], tenant=tenant)
    # Whatever the order, once the whole trail is stored the same clock gives the same alerts.
    for customer in (spent, kept):
        clock = _event(customer, "digital_session", T0 + timedelta(days=31), platform="web")
        _take(engine, [clock], tenant=tenant)
    assert _alerts(engine, tenant, spent) == []  # 19,999.99 EUR left
    (alert,) = _alerts(engine, tenant, kept)  # exactly 20,000 EUR left
    assert alert.reason == "idle_inflow" and "20,000 EUR left" in alert.actions[0]


# --- routed and owned as churn alerts ---------------------------------------------------------


@pytest.fixture
def app_client(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """An app with tenant isolation, its intake opening need alerts (the default rules)."""
    settings = settings_for(
        database_url, auth_enabled=True, tenant_isolation=True, churn_alerts_enabled=False
    )
    with TestClient(create_app(settings, registry)) as client:
        yield client


def test_a_need_alert_is_routed_to_the_manager_and_owned_by_who_accepts(
    app_client: TestClient,
) -> None:
    app: Any = app_client.app
    tenant, customer = _tenant(), f"nr-{uuid.uuid4().hex[:8]}"
    _, admin = new_key(app, "staff:admin", tenant=tenant)
    principal, rm = new_key(app, tenant=tenant)
    put_staff(app_client, admin, "rm-1", principal=principal)
    _, feed = new_key(app, "events:write", "alerts:read", "customers:read", tenant=tenant)
    now = datetime.now(UTC)
    profile = _event(
        customer,
        "customer_profile",
        now - timedelta(days=2),
        branch="north",
        relationship_manager="rm-1",
    )
    body = {"events": [profile, _salary(customer, now - timedelta(days=1))]}
    response = app_client.post("/v1/events", json=body, headers=feed)
    assert response.status_code == 200, response.text
    listed = app_client.get(
        "/v1/alerts", params={"reason": "first_salary", "customer_id": customer}, headers=feed
    )
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["reason"], item["product"], item["risk_band"]) == (
        "first_salary",
        "credit_card",
        None,
    )
    assert (
        app_client.get(
            "/v1/alerts", params={"reason": "churn", "customer_id": customer}, headers=feed
        ).json()["items"]
        == []
    )

    record = app_client.get(f"/v1/customers/{customer}", headers=feed)
    assert record.status_code == 200, record.text
    assert [(a["id"], a["reason"]) for a in record.json()["open_alerts"]] == [
        (item["id"], "first_salary")
    ]

    engine = app.state.engine
    with Session(engine) as session:
        summary = route_new_alerts(
            session, policy=RoutingPolicy(), now=datetime.now(UTC), tenant=TenantScope(tenant)
        )
    assert summary.total_routed == 1
    routed = app_client.get(f"/v1/casework/alerts/{item['id']}", headers=rm)
    assert routed.status_code == 200, routed.text
    assert (routed.json()["assignee"], routed.json()["reason"]) == ("rm-1", "first_salary")
    accepted = app_client.post(f"/v1/casework/alerts/{item['id']}/accept", json={}, headers=rm)
    assert accepted.status_code == 200, accepted.text
    detail = app_client.get(f"/v1/alerts/{item['id']}", headers=feed).json()
    assert (detail["status"], detail["owner"]) == ("acknowledged", principal)
    assert detail["history"][0]["note"].startswith("offer credit_card")
