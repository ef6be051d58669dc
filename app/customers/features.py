"""The model features of a customer-month, defined once from the behaviour trail.

Training reads the synthetic book, whose monthly tables already are the aggregates below;
serving reads the running aggregates kept per customer and month as events arrive
(``customer_month`` and ``customer_month_latest``). Both derive the trends and windows with
the functions here, so a model and the code that feeds it cannot disagree.

What each event contributes to its month (the UTC calendar month of ``occurred_at``):

- counters: ``transaction`` -> transactions; ``digital_session`` -> digital_logins (online
  banking or app) or website_visits (the public website); ``contact`` of kind branch_visit ->
  branch_visits; ``complaint`` opened -> complaints; ``campaign_response`` contacted ->
  campaign_contacts. Transactions, sessions and branch visits are activity.
- latest values (the latest occurrence wins, so a late event updates the month it belongs
  to): every ``customer_profile`` field; the state (opened, closed) of each product; the
  balance of each product; the status (opened, resolved) of each complaint.

Demographics, the acquisition channel, the relationship's start (tenure) and the month's
profit come from the profile: the bank's own systems know them, no behaviour shows them.

A feature of month M then reads the latest values of months up to M (balances and holdings
carry forward), the counters of M, and windows of HISTORY_MONTHS months that start no earlier
than the customer's record (the month of its first profile event): earlier months are
unknown, not zero, as the book has no rows for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

PRODUCTS: tuple[str, ...] = (
    "current_account",
    "savings",
    "term_deposit",
    "credit_card",
    "mortgage",
    "personal_loan",
    "business_loan",
    "investment_fund",
    "insurance",
    "pension",
    "brokerage",
    "payroll",
    "mobile_banking",
)
# Balance features: the products whose latest balances they add up. A credit card's balance
# snapshot is the month's statement, i.e. its spend.
BALANCE_PRODUCTS: dict[str, tuple[str, ...]] = {
    "current_account_balance": ("current_account",),
    "savings_balance": ("savings",),
    "term_deposit_balance": ("term_deposit",),
    "fund_holdings": ("investment_fund", "brokerage"),
    "insurance_holdings": ("insurance",),
    "pension_holdings": ("pension",),
    "mortgage_balance": ("mortgage",),
    "personal_loan_balance": ("personal_loan",),
    "business_loan_balance": ("business_loan",),
    "card_spend": ("credit_card",),
}
DEPOSIT_BALANCES = ("current_account_balance", "savings_balance", "term_deposit_balance")
WEALTH_BALANCES = ("fund_holdings", "insurance_holdings", "pension_holdings")
CHANGE_DENOMINATOR_FLOOR = 100.0  # EUR or events: keeps tiny bases from producing huge percentages
HISTORY_MONTHS = 3
DAYS_PER_MONTH = 30  # the book's clock: activity gaps grow by 30 days a month
MAX_DAYS_SINCE_ACTIVITY = 365
DEFAULT_MATERIAL_OUTFLOW = 10_000.0  # EUR; the setting material_outflow_eur

COUNTERS = (
    "transactions",
    "digital_logins",
    "website_visits",
    "branch_visits",
    "complaints",
    "campaign_contacts",
)
# Profile fields kept as numbers; every other profile field is kept as text.
PROFILE_NUMBERS = frozenset({"age", "income", "monthly_profit"})
# Features taken from the latest customer profile: feature name -> profile field.
PROFILE_FEATURES = {
    "age": "age",
    "income": "income",
    "occupation": "occupation",
    "region": "region",
    "channel": "acquisition_channel",
    "profit": "monthly_profit",
    # Not a model feature: the product rules' suitability check reads it.
    "risk_profile": "risk_profile",
}
INTEGER_PROFILE_FEATURES = frozenset({"age"})


class Kind:
    """Kinds of latest values kept per customer-month."""

    PROFILE = "profile"
    PRODUCT = "product"
    BALANCE = "balance"
    COMPLAINT = "complaint"


OPENED = "opened"
CLOSED = "closed"

ArrayOrFloat = TypeVar("ArrayOrFloat", float, Any)


def pct_change(now: ArrayOrFloat, before: ArrayOrFloat) -> ArrayOrFloat:
    """Change from ``before`` to ``now`` in percent of ``before`` (floored), capped to
    [-100, 1000]; scalars or arrays (NaN stays NaN)."""
    base = np.maximum(before, CHANGE_DENOMINATOR_FLOOR)
    return np.clip((now - before) / base * 100.0, -100.0, 1000.0)  # type: ignore[no-any-return]


def deposits(values: Any) -> Any:
    """Deposits: current account + savings + term deposits (in that order of addition), of a
    mapping or a frame of the balance features."""
    return (values["current_account_balance"] + values["savings_balance"]) + values[
        "term_deposit_balance"
    ]


def wealth(values: Any) -> Any:
    """Wealth holdings: funds + insurance + pension (in that order of addition)."""
    return (values["fund_holdings"] + values["insurance_holdings"]) + values["pension_holdings"]


# --- months ----------------------------------------------------------------------------------


def month_index(moment: datetime) -> int:
    """The UTC calendar month of a time as a number (year * 12 + month - 1)."""
    utc = moment.astimezone(UTC)
    return utc.year * 12 + utc.month - 1


def month_start(index: int) -> datetime:
    """The first instant of a month number."""
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def month_label(index: int) -> str:
    """A month number as YYYY-MM."""
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def parse_month(label: str) -> int:
    """YYYY-MM as a month number."""
    year, month = label.split("-")
    return int(year) * 12 + int(month) - 1


def month_position(moment: datetime) -> float:
    """Where a time falls in its month on the book's 30-day clock: 0 at the start, 30 at the
    end."""
    index = month_index(moment)
    start, end = month_start(index), month_start(index + 1)
    return DAYS_PER_MONTH * (moment - start).total_seconds() / (end - start).total_seconds()


def days_since_activity(month: int, last_active: datetime | None) -> int:
    """Whole days from the last activity to the end of ``month`` on the 30-day clock (capped;
    the cap when there is none on record)."""
    if last_active is None:
        return MAX_DAYS_SINCE_ACTIVITY
    gap = (month - month_index(last_active)) * DAYS_PER_MONTH
    return min(
        MAX_DAYS_SINCE_ACTIVITY, math.floor(gap + DAYS_PER_MONTH - month_position(last_active))
    )


# --- events -> running aggregates -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrailEvent:
    """An event as the aggregates see it."""

    customer_id: str
    type: str
    occurred_at: datetime
    payload: Mapping[str, Any]


@dataclass(slots=True)
class MonthDelta:
    """What a set of events adds to one customer-month's counters."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last_activity_at: datetime | None = None

    def active(self, moment: datetime) -> None:
        """Note an activity at ``moment``."""
        if self.last_activity_at is None or moment > self.last_activity_at:
            self.last_activity_at = moment


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The latest value of one thing in one customer-month."""

    month: int
    kind: str
    key: str
    occurred_at: datetime
    number: float | None = None
    text: str | None = None


MonthKey = tuple[str, int]
LatestKey = tuple[str, int, str, str]


def _count(delta: MonthDelta, event: TrailEvent) -> None:
    """The counters an event moves (see the module docstring)."""
    payload, kind = event.payload, event.type
    if kind == "transaction":
        delta.counts["transactions"] += 1
        delta.active(event.occurred_at)
    elif kind == "digital_session":
        website = payload.get("platform") == "website"
        delta.counts["website_visits" if website else "digital_logins"] += 1
        delta.active(event.occurred_at)
    elif kind == "contact" and payload.get("kind") == "branch_visit":
        delta.counts["branch_visits"] += 1
        delta.active(event.occurred_at)
    elif kind == "complaint" and payload.get("status", OPENED) == OPENED:
        delta.counts["complaints"] += 1
    elif kind == "campaign_response" and payload.get("response") == "contacted":
        delta.counts["campaign_contacts"] += 1


def is_activity(event: TrailEvent) -> bool:
    """Whether an event is activity (it moves the month's last activity)."""
    delta = MonthDelta()
    _count(delta, event)
    return delta.last_activity_at is not None


def _latest_of(event: TrailEvent, month: int) -> list[LatestValue]:
    """The latest values an event sets."""
    payload, at = event.payload, event.occurred_at
    if event.type == "customer_profile":
        return [
            LatestValue(month, Kind.PROFILE, name, at, number=float(value))
            if name in PROFILE_NUMBERS
            else LatestValue(month, Kind.PROFILE, name, at, text=str(value))
            for name, value in payload.items()
            if value is not None
        ]
    if event.type in ("account_opened", "account_closed"):
        state = OPENED if event.type == "account_opened" else CLOSED
        return [LatestValue(month, Kind.PRODUCT, str(payload["product"]), at, text=state)]
    if event.type == "balance_snapshot":
        balance = float(payload["balance"])
        return [LatestValue(month, Kind.BALANCE, str(payload["product"]), at, number=balance)]
    if event.type == "complaint":
        status = str(payload.get("status", OPENED))
        points = SEVERITY_POINTS.get(str(payload.get("severity")), DEFAULT_SEVERITY_POINTS)
        key = str(payload["complaint_id"])
        return [LatestValue(month, Kind.COMPLAINT, key, at, number=points, text=status)]
    return []


def aggregate(
    events: Iterable[TrailEvent],
) -> tuple[dict[MonthKey, MonthDelta], dict[LatestKey, LatestValue]]:
    """What events add to their customer-months: counter deltas, and the latest values
    among them (a later occurrence wins; on a tie, the later event in the list)."""
    deltas: dict[MonthKey, MonthDelta] = {}
    latest: dict[LatestKey, LatestValue] = {}
    for event in events:
        month = month_index(event.occurred_at)
        _count(deltas.setdefault((event.customer_id, month), MonthDelta()), event)
        for value in _latest_of(event, month):
            key = (event.customer_id, month, value.kind, value.key)
            kept = latest.get(key)
            if kept is None or value.occurred_at >= kept.occurred_at:
                latest[key] = value
    return deltas, latest


class MaterialReason:
    """Why an event re-assesses its customer."""

    COMPLAINT = "complaint"
    LARGE_OUTFLOW = "large_outflow"
    PRODUCT_CLOSED = "product_closed"
    SALARY_STOPPED = "salary_stopped"


def material_reason(event: TrailEvent, *, outflow_threshold: float) -> str | None:
    """Why an event is material (the customer is re-assessed), or None: a complaint opened,
    a debit of at least ``outflow_threshold``, a product closed (the payroll product: the
    salary stopped)."""
    payload = event.payload
    if event.type == "complaint" and payload.get("status", OPENED) == OPENED:
        return MaterialReason.COMPLAINT
    if event.type == "transaction" and payload.get("direction") == "debit":
        return MaterialReason.LARGE_OUTFLOW if payload["amount"] >= outflow_threshold else None
    if event.type == "account_closed":
        if payload.get("product") == "payroll":
            return MaterialReason.SALARY_STOPPED
        return MaterialReason.PRODUCT_CLOSED
    return None


# --- satisfaction and loyalty indices ---------------------------------------------------------

# Points of an open complaint by its severity (an event without one counts as medium).
SEVERITY_POINTS: dict[str, float] = {"low": 1.0, "medium": 2.0, "high": 3.0}
DEFAULT_SEVERITY_POINTS = SEVERITY_POINTS["medium"]
MAX_DAYS_UNRESOLVED = 365
SATISFACTION_COMPONENTS = ("complaints", "severity", "unresolved", "contacts")
LOYALTY_COMPONENTS = ("tenure", "depth", "wallet_trend", "activity")
# Where each component reaches its bound (0 or 1): complaints in 3 months, severity points
# of the open complaints, days the oldest open complaint has waited, branch visits in the
# month, months of tenure, products held, percent change of deposits and wealth (either
# way), days since the last activity.
COMPLAINTS_CAP = 3.0
SEVERITY_CAP = 6.0
UNRESOLVED_CAP = 90.0
CONTACTS_CAP = 2.0
TENURE_CAP = 120.0
DEPTH_CAP = 6.0
WALLET_TREND_CAP = 50.0
INACTIVITY_CAP = 90.0
# The features the two indices read.
INDEX_INPUTS = (
    "complaints_3m",
    "open_complaint_severity",
    "days_unresolved",
    "branch_visits",
    "tenure_months",
    "products_held",
    "deposits_change_3m_pct",
    "wealth_change_3m_pct",
    "days_since_last_activity",
)


@dataclass(frozen=True, slots=True)
class IndexWeights:
    """The weight of each component in the satisfaction and the loyalty index."""

    satisfaction: Mapping[str, float]
    loyalty: Mapping[str, float]


DEFAULT_INDEX_WEIGHTS = IndexWeights(
    satisfaction={"complaints": 0.3, "severity": 0.2, "unresolved": 0.3, "contacts": 0.2},
    loyalty={"tenure": 0.3, "depth": 0.3, "wallet_trend": 0.2, "activity": 0.2},
)


def _share(value: ArrayOrFloat, cap: float) -> ArrayOrFloat:
    """``value`` as a share of ``cap``, clipped to [0, 1]."""
    return np.minimum(np.maximum(value, 0.0), cap) / cap  # type: ignore[no-any-return]


def _weighted(parts: Mapping[str, Any], weights: Mapping[str, float], order: Sequence[str]) -> Any:
    """100 x the weighted mean of the components (in ``order``)."""
    total: Any = 0.0
    for name in order:
        total = total + weights[name] * parts[name]
    # The share first: a weighted mean of components <= 1 stays <= 1 when rounded, so the
    # index never exceeds 100 by a rounding step.
    return 100.0 * (total / sum(weights[name] for name in order))


def satisfaction_index(values: Any, weights: Mapping[str, float]) -> Any:
    """Satisfaction, 0 (worst) to 100, of a mapping or a frame of features:

    100 x the weighted mean (weights ``weights``) of
      complaints = 1 - min(complaints_3m, 3) / 3,
      severity   = 1 - min(open_complaint_severity, 6) / 6   (low 1, medium 2, high 3 points
                                                               per open complaint),
      unresolved = 1 - min(days_unresolved, 90) / 90          (the oldest open complaint),
      contacts   = min(branch_visits, 2) / 2.
    """
    parts = {
        "complaints": 1.0 - _share(values["complaints_3m"], COMPLAINTS_CAP),
        "severity": 1.0 - _share(values["open_complaint_severity"], SEVERITY_CAP),
        "unresolved": 1.0 - _share(values["days_unresolved"], UNRESOLVED_CAP),
        "contacts": _share(values["branch_visits"], CONTACTS_CAP),
    }
    return _weighted(parts, weights, SATISFACTION_COMPONENTS)


def loyalty_index(values: Any, weights: Mapping[str, float]) -> Any:
    """Loyalty, 0 (weakest) to 100, of a mapping or a frame of features:

    100 x the weighted mean (weights ``weights``) of
      tenure       = min(tenure_months, 120) / 120,
      depth        = min(products_held, 6) / 6,
      wallet_trend = (clip(mean(deposits_change_3m_pct, wealth_change_3m_pct), -50, 50) + 50)
                     / 100, the share-of-wallet trend (0.5 while 3 months of history lack),
      activity     = 1 - min(days_since_last_activity, 90) / 90.
    """
    deposits_change = np.asarray(_number(values["deposits_change_3m_pct"]), dtype=np.float64)
    wealth_change = np.asarray(_number(values["wealth_change_3m_pct"]), dtype=np.float64)
    trend = np.clip((deposits_change + wealth_change) / 2.0, -WALLET_TREND_CAP, WALLET_TREND_CAP)
    wallet = np.where(np.isnan(trend), 0.5, (trend + WALLET_TREND_CAP) / (2 * WALLET_TREND_CAP))
    parts = {
        "tenure": _share(values["tenure_months"], TENURE_CAP),
        "depth": _share(values["products_held"], DEPTH_CAP),
        "wallet_trend": wallet,
        "activity": 1.0 - _share(values["days_since_last_activity"], INACTIVITY_CAP),
    }
    return _weighted(parts, weights, LOYALTY_COMPONENTS)


def _number(value: Any) -> Any:
    """None as NaN (a scalar feature the trail does not tell); anything else as it is."""
    return math.nan if value is None else value


def indices(features: Mapping[str, Feature], weights: IndexWeights) -> dict[str, float]:
    """The satisfaction and loyalty indices of one customer-month's features."""
    return {
        "satisfaction_index": float(satisfaction_index(features, weights.satisfaction)),
        "loyalty_index": float(loyalty_index(features, weights.loyalty)),
    }


def days_open(month: int, opened_at: datetime) -> int:
    """Whole days (rounded) from ``opened_at`` to the end of ``month`` on the 30-day clock
    (capped at MAX_DAYS_UNRESOLVED)."""
    gap = (month - month_index(opened_at)) * DAYS_PER_MONTH
    return min(MAX_DAYS_UNRESOLVED, round(gap + DAYS_PER_MONTH - month_position(opened_at)))


def _complaint_state(
    month: int, current: Mapping[tuple[str, str], LatestValue]
) -> dict[str, Feature]:
    """Severity points of the open complaints and days the oldest of them has waited."""
    opened = [v for v in current.values() if v.kind == Kind.COMPLAINT and v.text == OPENED]
    points = sum(DEFAULT_SEVERITY_POINTS if v.number is None else v.number for v in opened)
    oldest = min((v.occurred_at for v in opened), default=None)
    return {
        "open_complaint_severity": float(points),
        "days_unresolved": 0 if oldest is None else days_open(month, oldest),
    }


# --- running aggregates -> features -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonthCounts:
    """One stored customer-month's counters."""

    month: int
    counts: Mapping[str, int]
    last_activity_at: datetime | None


Feature = float | int | str | bool | None


def _current(latest: Sequence[LatestValue], month: int) -> dict[tuple[str, str], LatestValue]:
    """Each thing's value as of the end of ``month``: the latest month's, latest occurrence."""
    # One pass, no sort: a value replaces the one kept unless that one is later (on a tie,
    # the later in the list wins, as a stable sort by (month, occurred_at) would have it).
    current: dict[tuple[str, str], LatestValue] = {}
    for value in latest:
        if value.month > month:
            continue
        key = (value.kind, value.key)
        kept = current.get(key)
        if kept is None or (value.month, value.occurred_at) >= (kept.month, kept.occurred_at):
            current[key] = value
    return current


def current_values(latest: Sequence[LatestValue], month: int) -> dict[tuple[str, str], LatestValue]:
    """Each thing's (kind, key) value as of the end of ``month``."""
    return _current(latest, month)


def _record_start(latest: Sequence[LatestValue], counts: Sequence[MonthCounts]) -> int | None:
    """The customer's first month on record: its first profile, else its first data."""
    profiles = [v.month for v in latest if v.kind == Kind.PROFILE]
    if profiles:
        return min(profiles)
    months = [v.month for v in latest] + [c.month for c in counts]
    return min(months) if months else None


def _profile(current: Mapping[tuple[str, str], LatestValue]) -> dict[str, Feature]:
    features: dict[str, Feature] = {}
    for feature, name in PROFILE_FEATURES.items():
        value = current.get((Kind.PROFILE, name))
        if value is None:
            features[feature] = None
        elif value.number is not None:
            number = value.number
            whole = feature in INTEGER_PROFILE_FEATURES and number.is_integer()
            features[feature] = int(number) if whole else number
        else:
            features[feature] = value.text
    return features


def _balances(current: Mapping[tuple[str, str], LatestValue]) -> dict[str, float]:
    balances: dict[str, float] = {}
    for feature, products in BALANCE_PRODUCTS.items():
        total = 0.0
        for product in products:
            value = current.get((Kind.BALANCE, product))
            total += value.number if value is not None and value.number is not None else 0.0
        balances[feature] = total
    return balances


def _holdings(current: Mapping[tuple[str, str], LatestValue]) -> dict[str, Feature]:
    flags: dict[str, Feature] = {}
    for product in PRODUCTS:
        value = current.get((Kind.PRODUCT, product))
        flags[f"has_{product}"] = value is not None and value.text == OPENED
    flags["products_held"] = sum(1 for p in PRODUCTS if flags[f"has_{p}"])
    return flags


def value_features(month: int, latest: Sequence[LatestValue]) -> dict[str, Feature]:
    """The features the tier policy measures in ``month`` (the profile, profit included, the
    balances and the holdings), by derive_features' own definitions and nothing else: the
    earlier months of a history read for a tier need no more."""
    current = _current(latest, month)
    return {**_profile(current), **_balances(current), **_holdings(current)}


def derive_features(
    month: int,
    counts: Sequence[MonthCounts],
    latest: Sequence[LatestValue],
    weights: IndexWeights = DEFAULT_INDEX_WEIGHTS,
) -> dict[str, Feature]:
    """Every model feature of one customer in ``month`` from its stored aggregates (rows of
    later months are ignored), with the satisfaction and loyalty indices under ``weights``;
    None where the trail does not tell."""
    current = _current(latest, month)
    start = _record_start(latest, counts)
    by_month = {c.month: c for c in counts if c.month <= month}

    def counter(name: str, at: int) -> int:
        row = by_month.get(at)
        return int(row.counts.get(name, 0)) if row is not None else 0

    def window(name: str) -> int:
        first = month - HISTORY_MONTHS + 1 if start is None else max(start, month - 2)
        return sum(counter(name, m) for m in range(first, month + 1))

    features: dict[str, Feature] = _profile(current)
    since = current.get((Kind.PROFILE, "customer_since"))
    features["tenure_months"] = (
        max(0, month - parse_month(since.text[:7])) if since is not None and since.text else 0
    )
    balances = _balances(current)
    features.update(balances)
    features.update(_holdings(current))
    for name in ("transactions", "digital_logins", "branch_visits"):
        features[name] = counter(name, month)
    features["campaign_contacts"] = counter("campaign_contacts", month)
    features["web_visits"] = counter("website_visits", month)
    active = [c.last_activity_at for c in by_month.values() if c.last_activity_at is not None]
    features["days_since_last_activity"] = days_since_activity(month, max(active, default=None))
    features["complaints_3m"] = window("complaints")
    features["campaign_contacts_3m"] = window("campaign_contacts")
    features["web_visits_3m"] = window("website_visits")
    features["open_complaint"] = any(
        v.kind == Kind.COMPLAINT and v.text == OPENED for v in current.values()
    )
    features.update(_trends(month, start, balances, counter, latest))
    features.update(_complaint_state(month, current))
    features.update(indices(features, weights))
    return features


def _trends(
    month: int,
    start: int | None,
    balances: Mapping[str, float],
    counter: Any,
    latest: Sequence[LatestValue],
) -> dict[str, Feature]:
    """Changes over HISTORY_MONTHS months; None when that month is before the record."""
    before = month - HISTORY_MONTHS
    names = (
        "deposits_change_3m_pct",
        "wealth_change_3m_pct",
        "logins_change_3m_pct",
        "transactions_change_3m_pct",
    )
    if start is None or before < start:
        return dict.fromkeys(names, None)
    earlier = _balances(_current(latest, before))
    changes = (
        pct_change(deposits(balances), deposits(earlier)),
        pct_change(wealth(balances), wealth(earlier)),
        pct_change(
            float(counter("digital_logins", month)), float(counter("digital_logins", before))
        ),
        pct_change(float(counter("transactions", month)), float(counter("transactions", before))),
    )
    return {name: float(value) for name, value in zip(names, changes, strict=True)}
