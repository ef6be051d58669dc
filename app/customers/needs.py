"""The needs warning: opportunity alerts when the behaviour trail shows a need.

Three rules, each configurable (setting ``needs_rules``) and each a pure function of a
customer's stored events as of the trail's clock (the latest occurrence the call brought):

- ``idle_inflow``: a credit transaction of at least ``amount_eur`` of which at least
  ``amount_eur`` is still unspent (credit minus the debits stored after it) ``idle_days``
  or more later -> a wealth product. An inflow is looked at until
  ``2 * idle_days`` after it.
- ``deposit_maturing``: an account opened with a ``maturity_date`` (a term deposit), not
  closed since, maturing within ``window_days`` (0 to window_days days ahead) -> its renewal.
- ``first_salary``: the customer's first credit transaction of the salary category, arriving
  now (not a salary seen before) -> a card.

Intake (``record_events``) runs them in its own transaction for the customers of the call's
new events and opens one alert per customer and rule (alerts domain, reason = the rule), so a
need alert is routed and owned as a churn alert is. No I/O here: the reads are
``app/customers/repository.py``'s ``idle_candidates`` (the large credits in the window, each
with what the debits after it add up to, summed by the database from the typed ``amount``
and ``direction`` columns), ``transactions`` and ``term_accounts``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from app.alerts.states import AlertCause
from app.config import NeedsRulesSetting, Settings
from app.customers.features import TrailEvent

# (event id, event) as stored.
Stored = tuple[str, TrailEvent]


@dataclass(frozen=True, slots=True)
class IdleInflow:
    """The idle inflow rule's thresholds."""

    amount: float
    idle: timedelta
    product: str

    @property
    def lookback(self) -> timedelta:
        """How far back an inflow is looked at: twice the idle period."""
        return self.idle * 2


@dataclass(frozen=True, slots=True)
class DepositMaturing:
    """The maturity rule's window."""

    window_days: int
    product: str


@dataclass(frozen=True, slots=True)
class FirstSalary:
    """The first salary rule's category."""

    category: str
    product: str


@dataclass(frozen=True, slots=True)
class NeedRules:
    """The rules a deployment turned on (None: off), and the cooldown per rule."""

    idle_inflow: IdleInflow | None
    deposit_maturing: DepositMaturing | None
    first_salary: FirstSalary | None
    cooldown: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> NeedRules:
        """The rules of ``needs_rules``."""
        return cls.of(settings.needs_rules)

    @classmethod
    def of(cls, setting: NeedsRulesSetting) -> NeedRules:
        """The rules of a ``needs_rules`` value."""
        idle, maturing, salary = setting.idle_inflow, setting.deposit_maturing, setting.first_salary
        return cls(
            idle_inflow=IdleInflow(idle.amount_eur, timedelta(days=idle.idle_days), idle.product)
            if idle.enabled
            else None,
            deposit_maturing=DepositMaturing(maturing.window_days, maturing.product)
            if maturing.enabled
            else None,
            first_salary=FirstSalary(salary.category, salary.product) if salary.enabled else None,
            cooldown=timedelta(days=setting.cooldown_days),
        )

    @property
    def any(self) -> bool:
        """Whether any rule is on."""
        return any((self.idle_inflow, self.deposit_maturing, self.first_salary))


DEFAULT_NEEDS = NeedRules.of(NeedsRulesSetting())
NO_NEEDS = NeedRules(None, None, None, timedelta(0))


@dataclass(frozen=True, slots=True)
class Need:
    """A need one rule found in a customer's trail: the product to offer and why."""

    customer_id: str
    cause: AlertCause
    product: str
    event_id: str
    text: str


def _amount(event: TrailEvent) -> float:
    return float(event.payload.get("amount", 0.0))


def _is_transaction(event: TrailEvent, direction: str) -> bool:
    return event.type == "transaction" and event.payload.get("direction") == direction


def _eur(amount: float) -> str:
    return f"{amount:,.0f} EUR"


def idle_inflow(
    events: Sequence[Stored], *, spent: Mapping[str, float], as_of: datetime, rule: IdleInflow
) -> Need | None:
    """The earliest inflow of at least ``rule.amount`` still idle as of ``as_of``: at least
    ``rule.idle`` old (and at most the lookback), at least ``rule.amount`` of it unspent
    (``spent``: what the debits stored after each credit add up to, by event id)."""
    credits = sorted(
        (event.occurred_at, event_id, event)
        for event_id, event in events
        if _is_transaction(event, "credit")
        and _amount(event) >= rule.amount
        and as_of - rule.lookback <= event.occurred_at <= as_of - rule.idle
    )
    for at, event_id, event in credits:
        left = _amount(event) - spent.get(event_id, 0.0)
        if left >= rule.amount:
            return Need(
                event.customer_id,
                AlertCause.IDLE_INFLOW,
                rule.product,
                event_id,
                f"offer {rule.product}: {_eur(_amount(event))} credited on {at.date()} "
                f"still unspent after {(as_of - at).days} days ({_eur(left)} left)",
            )
    return None


def _account(event: TrailEvent) -> str:
    """The account an opening or closing is of: its id, else its product."""
    return str(event.payload.get("account_id") or event.payload.get("product"))


def deposit_maturing(
    events: Sequence[Stored], *, as_of: datetime, rule: DepositMaturing
) -> Need | None:
    """The first term product, not closed since its opening, maturing 0 to
    ``rule.window_days`` days after ``as_of``'s date."""
    today = as_of.date()
    maturing = sorted(
        (date.fromisoformat(str(event.payload["maturity_date"])), event_id, event)
        for event_id, event in events
        if event.type == "account_opened" and event.payload.get("maturity_date")
    )
    for matures, event_id, event in maturing:
        if not 0 <= (matures - today).days <= rule.window_days:
            continue
        closed = any(
            later.type == "account_closed"
            and _account(later) == _account(event)
            and later.occurred_at >= event.occurred_at
            for _, later in events
        )
        if not closed:
            return Need(
                event.customer_id,
                AlertCause.DEPOSIT_MATURING,
                rule.product,
                event_id,
                f"offer the renewal of {event.payload.get('product')} "
                f"{_account(event)}: it matures on {matures} "
                f"(in {(matures - today).days} days)",
            )
    return None


def is_salary(event: TrailEvent, rule: FirstSalary) -> bool:
    """Whether an event is a salary credit of the rule's category."""
    return _is_transaction(event, "credit") and event.payload.get("category") == rule.category


def first_salary(
    events: Sequence[Stored], *, new_ids: Collection[str], rule: FirstSalary
) -> Need | None:
    """The customer's earliest salary credit, if it is one of the new events (so a salary
    seen before never opens one)."""
    salaries = sorted(
        (event.occurred_at, event_id, event) for event_id, event in events if is_salary(event, rule)
    )
    if not salaries or salaries[0][1] not in new_ids:
        return None
    at, event_id, event = salaries[0]
    return Need(
        event.customer_id,
        AlertCause.FIRST_SALARY,
        rule.product,
        event_id,
        f"offer {rule.product}: first salary credited on {at.date()} ({_eur(_amount(event))})",
    )


def customer_needs(
    events: Sequence[Stored],
    *,
    spent: Mapping[str, float],
    as_of: datetime,
    new_ids: Collection[str],
    rules: NeedRules,
) -> list[Need]:
    """Every need the rules find in one customer's stored events as of ``as_of``."""
    found = [
        idle_inflow(events, spent=spent, as_of=as_of, rule=rules.idle_inflow)
        if rules.idle_inflow
        else None,
        deposit_maturing(events, as_of=as_of, rule=rules.deposit_maturing)
        if rules.deposit_maturing
        else None,
        first_salary(events, new_ids=new_ids, rule=rules.first_salary)
        if rules.first_salary
        else None,
    ]
    return [need for need in found if need is not None]
