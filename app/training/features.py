"""Feature schemas of the bundled tasks and the code that derives them from the customer book.

This is the single place that names the bundled models' features: the schemas below are saved
into each model's manifest, and serving only ever reads them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.customers.features import (
    CHANGE_DENOMINATOR_FLOOR,
    DAYS_PER_MONTH,
    DEFAULT_INDEX_WEIGHTS,
    DEFAULT_SEVERITY_POINTS,
    HISTORY_MONTHS,
    MAX_DAYS_UNRESOLVED,
    PRODUCTS,
    IndexWeights,
    deposits,
    loyalty_index,
    pct_change,
    satisfaction_index,
    wealth,
)
from app.scoring.feature_schema import FeatureKind, FeatureSchema, FeatureSpec
from app.scoring.manifest import Task
from app.training.synth import CHANNELS, OCCUPATIONS, REGIONS, TIERS
from app.training.trail import COMPLAINTS_AT

CUSTOMER_LIFECYCLES = ("new", "existing")
HORIZON_MONTHS = 3

PRODUCT_LABELS = {
    "current_account": "current account",
    "savings": "savings account",
    "term_deposit": "term deposit",
    "credit_card": "credit card",
    "mortgage": "mortgage",
    "personal_loan": "personal loan",
    "business_loan": "business loan",
    "investment_fund": "investment fund",
    "insurance": "insurance",
    "pension": "pension plan",
    "brokerage": "brokerage account",
    "payroll": "salary paid in (payroll)",
    "mobile_banking": "mobile banking",
}


def _money(name: str, description: str, reason: str, *, actionable: bool = False) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        kind=FeatureKind.NUMBER,
        unit="EUR",
        minimum=0.0,
        description=description,
        reason=reason,
        actionable=actionable,
    )


def _count(name: str, description: str, reason: str, maximum: float = 100_000) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        kind=FeatureKind.INTEGER,
        unit="count",
        minimum=0,
        maximum=maximum,
        description=description,
        reason=reason,
    )


def _change(name: str, what: str) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        kind=FeatureKind.NUMBER,
        unit="%",
        minimum=-100.0,
        maximum=1000.0,
        description=(
            f"Change in {what} over the last 3 months, percent of the level 3 months ago "
            f"(base floored at {CHANGE_DENOMINATOR_FLOOR:g}, capped at +1000%)."
        ),
        reason=f"{what} changed {{value}} in 3 months",
    )


DEMOGRAPHICS: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        name="age",
        kind=FeatureKind.INTEGER,
        unit="years",
        minimum=18,
        maximum=120,
        description="Age of the customer.",
        reason="customer is {value} old",
    ),
    FeatureSpec(
        name="income",
        kind=FeatureKind.NUMBER,
        unit="EUR/year",
        minimum=0,
        description="Declared or estimated gross annual income.",
        reason="annual income of {value}",
    ),
    FeatureSpec(
        name="occupation",
        kind=FeatureKind.CATEGORY,
        categories=OCCUPATIONS,
        description="Occupation group.",
        reason="occupation: {value}",
    ),
    FeatureSpec(
        name="region",
        kind=FeatureKind.CATEGORY,
        categories=REGIONS,
        description="Region of residence.",
        reason="lives in the {value} region",
    ),
)

TENURE = FeatureSpec(
    name="tenure_months",
    kind=FeatureKind.INTEGER,
    unit="months",
    minimum=0,
    maximum=1200,
    description="Months since the relationship started.",
    reason="customer for {value}",
)

BALANCES: tuple[FeatureSpec, ...] = (
    _money(
        "current_account_balance",
        "Current account balance.",
        "current account balance of {value}",
        actionable=True,
    ),
    _money("savings_balance", "Savings balance.", "savings of {value}", actionable=True),
    _money("term_deposit_balance", "Term deposits.", "term deposits of {value}", actionable=True),
    _money(
        "fund_holdings", "Investment fund holdings.", "fund holdings of {value}", actionable=True
    ),
    _money(
        "insurance_holdings",
        "Savings held in insurance products.",
        "insurance savings of {value}",
        actionable=True,
    ),
    _money(
        "pension_holdings", "Pension plan holdings.", "pension holdings of {value}", actionable=True
    ),
    _money("mortgage_balance", "Outstanding mortgage.", "mortgage of {value} outstanding"),
    _money("personal_loan_balance", "Outstanding personal loans.", "personal loans of {value}"),
    _money("business_loan_balance", "Outstanding business loans.", "business loans of {value}"),
    _money("card_spend", "Card spend this month.", "card spend of {value} this month"),
)

PRODUCT_FLAGS: tuple[FeatureSpec, ...] = tuple(
    FeatureSpec(
        name=f"has_{product}",
        kind=FeatureKind.BOOLEAN,
        description=f"Holds a {PRODUCT_LABELS[product]}.",
        reason=f"{PRODUCT_LABELS[product]} held: {{value}}",
        actionable=True,
    )
    for product in PRODUCTS
)

PRODUCTS_HELD = FeatureSpec(
    name="products_held",
    kind=FeatureKind.INTEGER,
    unit="count",
    minimum=0,
    maximum=len(PRODUCTS),
    description="Number of products held.",
    reason="holds {value} products",
)

BEHAVIOUR: tuple[FeatureSpec, ...] = (
    _count("transactions", "Transactions this month.", "{value} transactions this month"),
    _count("digital_logins", "Online and app logins this month.", "{value} digital logins"),
    _count("branch_visits", "Branch visits this month.", "{value} branch visits", 1000),
    _count(
        "days_since_last_activity",
        "Days since the customer last did anything with the bank.",
        "last active {value} days ago",
        3650,
    ),
    _count("complaints_3m", "Complaints filed in the last 3 months.", "{value} complaints", 1000),
    FeatureSpec(
        name="open_complaint",
        kind=FeatureKind.BOOLEAN,
        description="A complaint is open right now.",
        reason="open complaint: {value}",
    ),
    FeatureSpec(
        name="profit",
        kind=FeatureKind.NUMBER,
        unit="EUR",
        description="Profit the customer contributed this month (can be negative).",
        reason="monthly profit contribution of {value}",
    ),
)

TRENDS: tuple[FeatureSpec, ...] = (
    _change("deposits_change_3m_pct", "deposits"),
    _change("wealth_change_3m_pct", "wealth holdings"),
    _change("logins_change_3m_pct", "digital logins"),
    _change("transactions_change_3m_pct", "transactions"),
)

PROSPECT_FEATURES: tuple[FeatureSpec, ...] = (
    *DEMOGRAPHICS,
    FeatureSpec(
        name="channel",
        kind=FeatureKind.CATEGORY,
        categories=CHANNELS,
        description="Channel through which the prospect reached the bank.",
        reason="came through the {value} channel",
    ),
    _count("campaign_contacts", "Bank contacts this month.", "{value} contacts this month", 100),
    _count("web_visits", "Visits to the bank's website this month.", "{value} web visits", 1000),
    _count("campaign_contacts_3m", "Bank contacts in the last 3 months.", "{value} contacts", 300),
    _count("web_visits_3m", "Website visits in the last 3 months.", "{value} web visits", 3000),
)

CUSTOMER_FEATURES: tuple[FeatureSpec, ...] = (
    *DEMOGRAPHICS,
    TENURE,
    *BALANCES,
    *PRODUCT_FLAGS,
    PRODUCTS_HELD,
    *BEHAVIOUR,
    *TRENDS,
)

INDICES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        name="satisfaction_index",
        kind=FeatureKind.NUMBER,
        unit="points",
        minimum=0.0,
        maximum=100.0,
        description="Satisfaction index, 0 (worst) to 100: complaints, their severity and wait, "
        "contacts (README, default weights).",
        reason="satisfaction index of {value}",
    ),
    FeatureSpec(
        name="loyalty_index",
        kind=FeatureKind.NUMBER,
        unit="points",
        minimum=0.0,
        maximum=100.0,
        description="Loyalty index, 0 (weakest) to 100: tenure, product depth, share-of-wallet "
        "trend, activity (README, default weights).",
        reason="loyalty index of {value}",
    ),
)

# The churn candidate that also reads the satisfaction and loyalty indices (`cvm train churn
# --indices`); the bundled churn model does without (README "Satisfaction and loyalty indices").
CHURN_WITH_INDICES: tuple[FeatureSpec, ...] = (*CUSTOMER_FEATURES, *INDICES)

# What a brand-new customer already has on day one; everything else may be missing (cold start).
COLD_START_KNOWN = frozenset({f.name for f in DEMOGRAPHICS} | {TENURE.name})


def schema_for(task: Task, *, indices: bool = False) -> FeatureSchema:
    """The bundled schema of a task; with ``indices``, churn also reads the satisfaction and
    loyalty indices."""
    if task is Task.PROSPECT:
        return FeatureSchema(features=PROSPECT_FEATURES)
    if task is Task.RECOMMENDATION:
        return FeatureSchema(
            features=tuple(
                f if f.name in COLD_START_KNOWN else f.model_copy(update={"required": False})
                for f in CUSTOMER_FEATURES
            )
        )
    if task is Task.CHURN and indices:
        return FeatureSchema(features=CHURN_WITH_INDICES)
    return FeatureSchema(features=CUSTOMER_FEATURES)


@dataclass(frozen=True)
class TaskFrame:
    """A task's rows: features, target, and the month and id each row belongs to."""

    features: pd.DataFrame
    target: pd.Series
    month: pd.Series
    customer_id: pd.Series
    value_target: pd.Series | None = None  # prospect only: annual value brought after converting


def prepare_book(book: pd.DataFrame, weights: IndexWeights = DEFAULT_INDEX_WEIGHTS) -> pd.DataFrame:
    """Add the derived columns (trends, rolling counts, product count, open complaints, the
    satisfaction and loyalty indices under ``weights``) to the raw monthly book, by the
    definitions of app.customers.features (which serving applies to the trail)."""
    frame = book.sort_values(["customer_id", "month"], kind="stable").reset_index(drop=True)
    by_customer = frame.groupby("customer_id", sort=False)

    def lagged(column: pd.Series | str, months: int) -> pd.Series:
        series = frame[column] if isinstance(column, str) else column
        shifted: pd.Series = series.groupby(frame["customer_id"], sort=False).shift(months)
        # A lag is only valid if that row really is `months` calendar months earlier.
        gap = frame["month"] - frame.groupby("customer_id", sort=False)["month"].shift(months)
        return shifted.where(gap == months)

    deposit_total = deposits(frame)
    wealth_total = wealth(frame)
    frame["deposits_change_3m_pct"] = pct_change(deposit_total, lagged(deposit_total, 3))
    frame["wealth_change_3m_pct"] = pct_change(wealth_total, lagged(wealth_total, 3))
    frame["logins_change_3m_pct"] = pct_change(
        frame["digital_logins"].astype(float), lagged("digital_logins", 3).astype(float)
    )
    frame["transactions_change_3m_pct"] = pct_change(
        frame["transactions"].astype(float), lagged("transactions", 3).astype(float)
    )
    for source, target in (
        ("complaints", "complaints_3m"),
        ("campaign_contacts", "campaign_contacts_3m"),
        ("web_visits", "web_visits_3m"),
    ):
        frame[target] = by_customer[source].rolling(HISTORY_MONTHS, min_periods=1).sum().to_numpy()
    frame["products_held"] = frame[[f"has_{p}" for p in PRODUCTS]].sum(axis=1)
    frame["history_months"] = by_customer.cumcount()
    _open_complaints(frame)
    frame["satisfaction_index"] = satisfaction_index(frame, weights.satisfaction)
    frame["loyalty_index"] = loyalty_index(frame, weights.loyalty)
    return frame


def _open_complaints(frame: pd.DataFrame) -> None:
    """Severity points of the open complaints and the days the oldest has waited, per row of
    a book sorted by customer and month.

    The book keeps a complaint open from the month it is filed (on day COMPLAINTS_AT of it)
    until the first month whose ``open_complaint`` is false; every complaint counts as medium
    severity (the book has none). A book whose first month has a complaint open and none
    filed took it over from the month before (as the trail says).
    """
    is_open = frame["open_complaint"].astype(bool)
    first = frame.groupby("customer_id", sort=False).cumcount() == 0
    # A run of open months starts where the month before (of the same customer) was closed.
    starts = is_open & (
        first | ~is_open.groupby(frame["customer_id"], sort=False).shift(1, fill_value=False)
    )
    run = starts.cumsum().where(is_open)
    taken_over = first & is_open & frame["complaints"].eq(0)
    opened_month = frame["month"] - taken_over.astype(int)
    run_start = opened_month.where(starts).groupby(run).transform("first")
    filed = frame["complaints"].where(is_open, 0).groupby(run).cumsum()
    count = filed + taken_over.astype(int).groupby(run).transform("max").fillna(0).astype(int)
    frame["open_complaint_severity"] = (
        (count * DEFAULT_SEVERITY_POINTS).where(is_open, 0.0).astype(np.float64)
    )
    waited = (frame["month"] - run_start) * DAYS_PER_MONTH + DAYS_PER_MONTH - COMPLAINTS_AT
    frame["days_unresolved"] = (
        waited.clip(upper=MAX_DAYS_UNRESOLVED).where(is_open, 0).round().astype(np.int64)
    )


def month_snapshot(book: pd.DataFrame, month: int | None = None) -> pd.DataFrame:
    """Every known customer in one month, with the derived features models take."""
    prepared = prepare_book(book)
    chosen = int(prepared["month"].max()) if month is None else month
    snapshot = prepared[prepared["month"] == chosen]
    if snapshot.empty:
        raise ValueError(f"month {chosen} is not in the book")
    return snapshot.reset_index(drop=True)


def _future(frame: pd.DataFrame, column: str, months: int) -> pd.Series:
    """The value of ``column`` exactly ``months`` later for the same customer (NaN if absent)."""
    shifted = frame.groupby("customer_id", sort=False)[column].shift(-months)
    gap = frame.groupby("customer_id", sort=False)["month"].shift(-months) - frame["month"]
    return shifted.where(gap == months)


def _encode(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Typed feature columns in schema order; categories as their integer codes."""
    columns: dict[str, pd.Series] = {}
    for feature in schema.features:
        column = frame[feature.name]
        if feature.kind is FeatureKind.CATEGORY:
            assert feature.categories is not None
            codes = pd.Categorical(column, categories=list(feature.categories)).codes
            columns[feature.name] = pd.Series(np.where(codes < 0, np.nan, codes), index=frame.index)
        else:
            columns[feature.name] = column.astype(np.float64)
    return pd.DataFrame(columns, index=frame.index)


def _is_customer(lifecycle: pd.Series) -> pd.Series:
    return lifecycle.isin(CUSTOMER_LIFECYCLES)


def build_task_frame(book: pd.DataFrame, task: Task, *, indices: bool = False) -> TaskFrame:
    """Rows, features and labels of one task, from a book already passed through prepare_book
    (``indices``: the churn schema with the satisfaction and loyalty indices)."""
    schema = schema_for(task, indices=indices)
    has_history = book["history_months"] >= HISTORY_MONTHS
    if task is Task.CHURN:
        last_month = book["month"].max()
        leaves = pd.Series(False, index=book.index)
        for ahead in range(1, HORIZON_MONTHS + 1):
            leaves |= _future(book, "lifecycle", ahead).eq("lost")
        rows = (
            _is_customer(book["lifecycle"])
            & has_history
            & (book["month"] <= last_month - HORIZON_MONTHS)
        )
        target = leaves[rows].astype(int)
    elif task is Task.TIER:
        next_tier = _future(book, "value_tier", 1)
        rows = _is_customer(book["lifecycle"]) & has_history & next_tier.isin(TIERS)
        target = next_tier[rows].map({t: i for i, t in enumerate(TIERS)}).astype(int)
    elif task is Task.PROSPECT:
        return _prospect_frame(book, schema)
    else:
        return _recommendation_frame(book, schema)
    selected = book[rows]
    return TaskFrame(
        features=_encode(selected, schema),
        target=target,
        month=selected["month"],
        customer_id=selected["customer_id"],
    )


def _prospect_frame(book: pd.DataFrame, schema: FeatureSchema) -> TaskFrame:
    last_month = book["month"].max()
    converts = pd.Series(False, index=book.index)
    for ahead in range(1, HORIZON_MONTHS + 1):
        converts |= _is_customer(_future(book, "lifecycle", ahead)).fillna(False).astype(bool)
    rows = book["lifecycle"].eq("prospect") & (book["month"] <= last_month - HORIZON_MONTHS)
    # Value a convert brings: mean monthly profit over its first six months as a customer, x12.
    customers = book[_is_customer(book["lifecycle"]) & (book["tenure_months"] < 6)]
    annual_value = customers.groupby("customer_id")["profit"].mean() * 12.0
    selected = book[rows]
    value = selected["customer_id"].map(annual_value).where(converts[rows])
    return TaskFrame(
        features=_encode(selected, schema),
        target=converts[rows].astype(int),
        month=selected["month"],
        customer_id=selected["customer_id"],
        value_target=value,
    )


def _recommendation_frame(book: pd.DataFrame, schema: FeatureSchema) -> TaskFrame:
    """One row per product a customer added the following month; class = that product."""
    eligible = _is_customer(book["lifecycle"]) & _is_customer(_future(book, "lifecycle", 1)).fillna(
        False
    ).astype(bool)
    parts: list[pd.DataFrame] = []
    for index, product in enumerate(PRODUCTS):
        column = f"has_{product}"
        added = eligible & ~book[column].astype(bool) & _future(book, column, 1).eq(True)
        part = book.loc[added, ["customer_id", "month"]].copy()
        part["product"] = index
        part["row"] = part.index
        parts.append(part)
    additions = pd.concat(parts).sort_values(["month", "customer_id", "product"], kind="stable")
    selected = book.loc[additions["row"].to_numpy()]
    features = _encode(selected, schema).reset_index(drop=True)
    return TaskFrame(
        features=features,
        target=pd.Series(additions["product"].to_numpy()),
        month=pd.Series(additions["month"].to_numpy()),
        customer_id=pd.Series(additions["customer_id"].to_numpy()),
    )
