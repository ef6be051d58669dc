"""Synthetic retail-bank customer book: a seeded monthly panel with real structure to learn from.

Every customer is simulated at once with numpy arrays; only the months are looped over. The
generating story (who leaves, who buys what, what a customer is worth) is written up for data
scientists in ``docs/synthetic-book.md``; the constants below are the numbers it quotes.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from app.customers.features import PRODUCTS as PRODUCTS  # one list, shared with serving

TIERS: tuple[str, ...] = ("mass", "emerging_affluent", "affluent", "high_net_worth", "private")
LIFECYCLES: tuple[str, ...] = ("prospect", "new", "existing", "lost")
OCCUPATIONS: tuple[str, ...] = (
    "employee",
    "civil_servant",
    "self_employed",
    "business_owner",
    "retired",
    "student",
    "unemployed",
)
REGIONS: tuple[str, ...] = ("capital", "north", "south", "east", "west")
CHANNELS: tuple[str, ...] = ("branch", "web", "referral", "partner", "campaign")
BALANCES: tuple[str, ...] = (
    "current_account_balance",
    "savings_balance",
    "term_deposit_balance",
    "fund_holdings",
    "insurance_holdings",
    "pension_holdings",
    "mortgage_balance",
    "personal_loan_balance",
    "business_loan_balance",
    "card_spend",
)
BOOK_FILE = "book.parquet"
GENERATOR = "cvm synth"
GENERATOR_METADATA_KEY = "cvm.generator"

# Relationship value = trailing mean of deposits + wealth + LOAN_WEIGHT x loans + 12 x profit.
TIER_CUTOFFS_EUR: tuple[float, ...] = (25_000.0, 100_000.0, 500_000.0, 2_000_000.0)
TIER_TRAILING_MONTHS = 3
LOAN_WEIGHT = 0.2
NEW_CUSTOMER_MONTHS = 3

BOOK_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("month", pa.int16()),
        ("snapshot_date", pa.date32()),
        ("lifecycle", pa.string()),
        ("age", pa.int16()),
        ("income", pa.float64()),
        ("occupation", pa.string()),
        ("region", pa.string()),
        ("channel", pa.string()),
        ("customer_since", pa.date32()),
        ("tenure_months", pa.int16()),
        *[(name, pa.float64()) for name in BALANCES],
        *[(f"has_{product}", pa.bool_()) for product in PRODUCTS],
        ("transactions", pa.int32()),
        ("digital_logins", pa.int32()),
        ("branch_visits", pa.int32()),
        ("days_since_last_activity", pa.int32()),
        ("complaints", pa.int16()),
        ("open_complaint", pa.bool_()),
        ("campaign_contacts", pa.int16()),
        ("web_visits", pa.int16()),
        ("profit", pa.float64()),
        ("value_tier", pa.string()),
    ]
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Product columns (index into PRODUCTS).
CA, SAV, TD, CC, MORT, PL, BL, FUND, INS, PEN, BROK, PAY, MOB = range(len(PRODUCTS))
# Balance columns (index into BALANCES).
B_CA, B_SAV, B_TD, B_FUND, B_INS, B_PEN, B_MORT, B_PL, B_BL, B_CARD = range(len(BALANCES))
DEPOSIT_COLUMNS = (B_CA, B_SAV, B_TD)
WEALTH_COLUMNS = (B_FUND, B_INS, B_PEN)
LOAN_COLUMNS = (B_MORT, B_PL, B_BL)
# Occupation codes (index into OCCUPATIONS).
EMPLOYEE, CIVIL_SERVANT, SELF_EMPLOYED, BUSINESS_OWNER, RETIRED, STUDENT, UNEMPLOYED = range(7)
PROSPECT, CUSTOMER, GONE = 0, 1, 2
NOT_A_CUSTOMER = -1_000_000  # `since` of a prospect: customer_since is null

# Start-of-book composition.
PROSPECT_SHARE = 0.12
NEW_SHARE = 0.08
MEAN_EXISTING_TENURE_MONTHS = 110.0
MAX_TENURE_MONTHS = 360
# Churn: customers first drift away (balances and activity fall) and then leave.
DRIFT_INTERCEPT = -4.4
DRIFT_MONTHS_RANGE = (2, 4)
DRIFT_LEAVE_PROBABILITY = 0.85
DRIFT_BALANCE_DECAY = (0.15, 0.45)  # log-decline of deposits and wealth per drifting month
DRIFT_ACTIVITY_FACTOR = 0.55  # activity multiplier per drifting month
SUDDEN_CHURN_BASE = 0.0008  # moving abroad, death: leaves without drifting first
# Prospects: log-odds of converting in a month, by acquisition channel.
CONVERSION_INTERCEPT = -3.8
CHANNEL_CONVERSION_LOGIT = (0.7, 0.0, 1.0, -0.1, -1.0)
CHANNEL_CAMPAIGN_CONTACTS = (0.4, 0.5, 0.2, 0.6, 1.4)
# Product take-up: monthly hazard of a non-holder with neutral affinity.
TAKE_UP_BASE = (
    0.010,  # current_account
    0.0040,  # savings
    0.0010,  # term_deposit
    0.0030,  # credit_card
    0.0008,  # mortgage
    0.0018,  # personal_loan
    0.0003,  # business_loan
    0.0007,  # investment_fund
    0.0015,  # insurance
    0.0010,  # pension
    0.0002,  # brokerage
    0.0025,  # payroll
    0.0050,  # mobile_banking
)
# Monthly probability that a holder gives a product up (loans: paid off).
DROP_RATE = (0.0, 0.0005, 0.008, 0.002, 0.004, 0.02, 0.012, 0.001, 0.001, 0.0005, 0.001, 0.003, 0.0)
NEW_CUSTOMER_TAKE_UP_BOOST = 6.0
# Holding probabilities of existing customers at the start: log-odds at neutral affinity.
INITIAL_HOLDING_LOGIT = (
    3.0,  # current_account
    -0.4,  # savings
    -3.4,  # term_deposit
    -0.9,  # credit_card
    -2.6,  # mortgage
    -2.6,  # personal_loan
    -4.6,  # business_loan
    -3.6,  # investment_fund
    -2.3,  # insurance
    -3.0,  # pension
    -5.6,  # brokerage
    -1.5,  # payroll
    -0.3,  # mobile_banking
)
# Balance norms: share of the investable wealth a customer keeps at this bank, per product.
WEALTH_SHARE = {B_CA: 0.04, B_SAV: 0.40, B_TD: 0.35, B_FUND: 0.45, B_INS: 0.06}
MONTHLY_PULL = np.array([0.30, 0.10, 0.05, 0.08, 0.05, 0.05, 0.0, 0.0, 0.0, 0.5])
MONTHLY_NOISE = np.array([0.20, 0.05, 0.02, 0.02, 0.01, 0.01, 0.0, 0.0, 0.0, 0.25])
ANNUAL_RATE = {  # net interest margin or fee, per year, on the balance
    B_CA: 0.020,
    B_SAV: 0.012,
    B_TD: 0.006,
    B_FUND: 0.011,
    B_INS: 0.012,
    B_PEN: 0.007,
    B_MORT: 0.011,
    B_PL: 0.040,
    B_BL: 0.028,
}
LOAN_AMORTISATION = {B_MORT: 0.004, B_PL: 0.02, B_BL: 0.012}
MEDIAN_INCOME = 32_000.0
INCOME_RANGE = (8_000.0, 1_000_000.0)
INCOME_GROWTH = 0.0015  # per month, about 1.8% a year
WEALTHY_SHARE = 0.08  # old money: wealth far beyond what income explains
MAX_WEALTH = 50_000_000.0


@dataclass(frozen=True)
class _Population:
    """What does not change (or changes on a fixed schedule) for each of the n people."""

    age0: IntArray
    birthday_offset: IntArray
    occupation: IntArray
    region: IntArray
    channel: IntArray
    income0: FloatArray
    wealth: FloatArray  # investable wealth across all banks, EUR
    digital: FloatArray  # 0..1 preference for digital over branch
    engagement: FloatArray  # personal activity level; multiplies all usage
    branch_affinity: FloatArray
    spend_affinity: FloatArray
    interest: FloatArray  # a prospect's interest in the bank
    balance_noise: FloatArray  # (n, 10) lasting deviation of each balance from the norm, log
    loan_size: FloatArray  # (n, 10) loan amounts at origination as a multiple of income


@dataclass
class _State:
    """What the simulation carries from one month to the next."""

    status: IntArray
    since: IntArray  # month (relative to start) the customer joined; NOT_A_CUSTOMER if not yet
    held: BoolArray  # (n, 13)
    balances: FloatArray  # (n, 10)
    drift: IntArray  # months on the drifting-away path so far; 0 = not drifting
    drift_length: IntArray
    open_complaint: BoolArray
    complaints: IntArray
    activity: IntArray  # last month's transactions + logins
    contacts: IntArray  # last month's campaign contacts
    web_visits: IntArray  # last month's web visits
    days_since: IntArray
    liquid_history: FloatArray  # (n, 3) deposits + wealth 1, 2 and 3 months ago
    value_history: FloatArray  # (n, 2) relationship value 1 and 2 months ago
    value_months: IntArray  # how many of value_history are real


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


def _choose(rng: np.random.Generator, probabilities: FloatArray) -> IntArray:
    """One category per row, drawn from that row's (unnormalised) probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(cumulative.shape[0]) * cumulative[:, -1]
    picked: IntArray = (cumulative <= u[:, None]).sum(axis=1)
    capped: IntArray = np.minimum(picked, probabilities.shape[1] - 1)
    return capped


def _draw_population(rng: np.random.Generator, n: int, is_prospect: BoolArray) -> _Population:
    """Demographics and lasting personal traits; prospects skew younger."""
    age_fraction = np.where(is_prospect, rng.beta(1.6, 4.0, n), rng.beta(2.0, 3.0, n))
    age0 = (18 + np.floor(age_fraction * 78)).astype(np.int64)
    young, senior = age0 < 25, age0 >= 65
    occupation_probs = np.select(
        [young[:, None], senior[:, None]],
        [
            np.array([0.40, 0.03, 0.04, 0.00, 0.00, 0.45, 0.08]),
            np.array([0.04, 0.00, 0.04, 0.04, 0.88, 0.00, 0.00]),
        ],
        np.array([0.58, 0.12, 0.11, 0.07, 0.02, 0.04, 0.06]),
    )
    occupation = _choose(rng, occupation_probs)
    region = _choose(rng, np.tile([0.30, 0.18, 0.20, 0.15, 0.17], (n, 1)))
    channel = _choose(
        rng,
        np.where(
            is_prospect[:, None],
            np.array([0.15, 0.30, 0.10, 0.15, 0.30]),
            np.array([0.35, 0.25, 0.15, 0.10, 0.15]),
        ),
    )

    median = np.array([37e3, 41e3, 40e3, 66e3, 28e3, 12e3, 13e3])[occupation]
    spread = np.array([0.42, 0.35, 0.60, 0.65, 0.40, 0.25, 0.25])[occupation]
    career = np.where(
        np.isin(occupation, (RETIRED, STUDENT, UNEMPLOYED)),
        0.0,
        -0.45 * np.clip((45 - age0) / 25, 0, 1),
    )
    regional = np.array([0.15, 0.0, -0.10, -0.08, 0.0])[region]
    rich_tail = (rng.random(n) < 0.02) * np.abs(rng.normal(0.6, 0.5, n))
    log_income = np.log(median) + career + regional + spread * rng.normal(size=n) + rich_tail
    income0 = np.clip(np.exp(log_income), *INCOME_RANGE)

    # Wealth is accumulated income: it grows with age and has its own (inheritance) spread.
    accumulation = 0.3 + 3.2 * np.clip((age0 - 22) / 43, 0, 1) ** 1.4
    inherited = (rng.random(n) < WEALTHY_SHARE) * np.abs(rng.normal(2.5, 0.5, n))
    wealth = income0 * accumulation * np.exp(1.6 * rng.normal(size=n) - 1.0 + inherited)
    wealth = np.minimum(wealth, MAX_WEALTH)

    digital = _sigmoid((42 - age0) / 9 + rng.normal(0, 0.8, n))
    return _Population(
        age0=age0,
        birthday_offset=rng.integers(0, 12, n),
        occupation=occupation,
        region=region,
        channel=channel,
        income0=income0,
        wealth=wealth,
        digital=digital,
        engagement=np.exp(rng.normal(-0.1, 0.45, n)),
        branch_affinity=(0.1 + 1.0 * (1 - digital)) * np.exp(rng.normal(0, 0.4, n)),
        spend_affinity=np.exp(rng.normal(0, 0.5, n)),
        interest=np.exp(rng.normal(0, 0.6, n)),
        balance_noise=rng.normal(0, 0.5, (n, len(BALANCES))),
        loan_size=np.column_stack(
            [
                np.zeros((n, B_MORT)),
                3.2 * np.exp(rng.normal(0, 0.3, n)),
                0.20 * np.exp(rng.normal(0, 0.5, n)),
                1.20 * np.exp(rng.normal(0, 0.7, n)),
                np.zeros(n),
            ]
        ),
    )


def _affinity(pop: _Population, age: IntArray, income: FloatArray, held: BoolArray) -> FloatArray:
    """Log-odds shift of holding / taking up each product, from life stage and holdings."""
    n: int = age.shape[0]
    ln_income = np.log(income / MEDIAN_INCOME)
    wealth_ratio = np.log(pop.wealth / (2 * income))
    young = (age < 30).astype(float)
    prime = ((age >= 28) & (age <= 45)).astype(float)
    over40 = (age >= 40).astype(float)
    senior = (age >= 65).astype(float)
    occupation = pop.occupation
    business = np.isin(occupation, (SELF_EMPLOYED, BUSINESS_OWNER)).astype(float)
    employed = np.isin(occupation, (EMPLOYEE, CIVIL_SERVANT)).astype(float)
    no_income = np.isin(occupation, (STUDENT, UNEMPLOYED)).astype(float)
    savings = held[:, SAV].astype(float)

    a = np.zeros((n, len(PRODUCTS)))
    a[:, SAV] = 0.4 * ln_income + 0.3 * over40 + 0.3 * wealth_ratio
    a[:, TD] = 0.5 * ln_income + 0.6 * (age >= 50) + 1.2 * savings + 0.4 * wealth_ratio
    a[:, CC] = 1.0 * young - 1.2 * senior + 0.4 * ln_income - 0.5 * no_income
    a[:, MORT] = 1.3 * prime - 1.0 * (age < 25) - 0.8 * (age >= 50) - 1.7 * senior
    a[:, MORT] += 0.6 * ln_income - 1.5 * no_income
    a[:, PL] = 0.8 * young + 0.3 * prime - 1.2 * senior - 0.8 * (occupation == STUDENT)
    a[:, BL] = 2.8 * business - 1.5 * (1 - business)
    a[:, FUND] = 0.6 * over40 + 1.0 * savings + 0.5 * over40 * savings + 0.5 * ln_income
    a[:, FUND] += 0.5 * wealth_ratio
    a[:, INS] = 1.0 * prime + 0.9 * held[:, MORT] + 0.3 * ln_income
    a[:, PEN] = 1.0 * ((age >= 40) & (age < 65)) - 1.5 * senior + 0.5 * ln_income + 0.5 * savings
    a[:, BROK] = 0.8 * over40 + 1.0 * savings + 1.5 * held[:, FUND] + 0.7 * ln_income
    a[:, BROK] += 0.6 * wealth_ratio
    a[:, PAY] = 1.5 * employed + 0.6 * (occupation == RETIRED) - 1.0 * no_income - 0.3 * business
    a[:, MOB] = 1.4 * young + 0.6 * (age < 45) - 1.5 * senior + 2.0 * (pop.digital - 0.5)
    # A salary paid in makes the bank the main bank: every other product gets likelier.
    payroll_lift = 0.5 * held[:, PAY]
    for product in range(len(PRODUCTS)):
        if product != PAY:
            a[:, product] += payroll_lift
    return a


def _share_of_wallet(tenure: IntArray) -> FloatArray:
    """Share of a customer's wealth kept at this bank; grows over the first years."""
    return 0.25 + 0.75 * (1 - np.exp(-np.maximum(tenure, 0) / 60.0))


def _norms(
    pop: _Population, age: IntArray, income: FloatArray, tenure: IntArray, held: BoolArray
) -> FloatArray:
    """Balance each customer tends towards given income, wealth, age and tenure (EUR)."""
    at_bank = pop.wealth * _share_of_wallet(tenure)
    norm = np.zeros((age.shape[0], len(BALANCES)))
    for column, share in WEALTH_SHARE.items():
        norm[:, column] = share * at_bank
    norm[:, B_CA] += income / 12 * (0.6 + 0.8 * held[:, PAY])
    norm[:, B_FUND] *= 1 + 0.5 * held[:, BROK]
    norm[:, B_INS] += 0.1 * income
    years_saving = np.clip(age - 25, 1, 40)
    norm[:, B_PEN] = 0.03 * income * years_saving * _share_of_wallet(tenure)
    norm[:, B_CARD] = income / 12 * 0.12 * pop.spend_affinity
    for column in LOAN_COLUMNS:
        norm[:, column] = pop.loan_size[:, column] * income
    return norm * np.exp(pop.balance_noise)


def _balance_held(held: BoolArray) -> BoolArray:
    """Which balance columns must be positive, given the products held."""
    return np.column_stack(
        [
            held[:, CA],
            held[:, SAV],
            held[:, TD],
            held[:, FUND] | held[:, BROK],
            held[:, INS],
            held[:, PEN],
            held[:, MORT],
            held[:, PL],
            held[:, BL],
            held[:, CC],
        ]
    )


def _starter_products(rng: np.random.Generator, pop: _Population, age: IntArray) -> BoolArray:
    """What a customer opens on joining: an account, often the app, sometimes more."""
    n: int = age.shape[0]
    held = np.zeros((n, len(PRODUCTS)), dtype=bool)
    employed = np.isin(pop.occupation, (EMPLOYEE, CIVIL_SERVANT))
    held[:, CA] = rng.random(n) < 0.97
    held[:, MOB] = rng.random(n) < 0.3 + 0.6 * pop.digital
    held[:, PAY] = held[:, CA] & (
        rng.random(n) < np.where(employed, 0.35, np.where(pop.occupation == RETIRED, 0.2, 0.05))
    )
    held[:, CC] = rng.random(n) < np.where(age < 30, 0.25, 0.12)
    held[:, SAV] = rng.random(n) < 0.25
    return held


def _initial_state(rng: np.random.Generator, pop: _Population, is_prospect: BoolArray) -> _State:
    """The book as it stands on the first day: prospects, new and long-standing customers."""
    n: int = is_prospect.shape[0]
    age, income = pop.age0, pop.income0
    is_new = ~is_prospect & (rng.random(n) < NEW_SHARE / (1 - PROSPECT_SHARE))
    existing = ~is_prospect & ~is_new
    # Exponential tenure truncated at 30 years and at age 16 (accounts opened for minors).
    longest = np.clip((age - 16) * 12, 4, MAX_TENURE_MONTHS + 1) - NEW_CUSTOMER_MONTHS
    reach = 1 - np.exp(-longest / MEAN_EXISTING_TENURE_MONTHS)
    tenure_existing = NEW_CUSTOMER_MONTHS + np.floor(
        -MEAN_EXISTING_TENURE_MONTHS * np.log1p(-reach * rng.random(n))
    )
    tenure = np.where(
        existing,
        np.minimum(tenure_existing, MAX_TENURE_MONTHS),
        np.where(is_new, rng.integers(0, NEW_CUSTOMER_MONTHS, n), 0),
    ).astype(np.int64)

    # Existing customers' holdings: in dependency order, base products first.
    held = np.zeros((n, len(PRODUCTS)), dtype=bool)
    intercept = np.array(INITIAL_HOLDING_LOGIT) + 0.3 * np.log1p(tenure / 12)[:, None]
    for group in ((CA, PAY, SAV, CC, MORT, PL, BL, MOB), (TD, FUND, INS, PEN), (BROK,)):
        logit = intercept + _affinity(pop, age, income, held)
        draw = rng.random((n, len(PRODUCTS))) < _sigmoid(logit)
        for product in group:
            held[:, product] = draw[:, product] & existing
    held[:, CA] |= held[:, PAY]
    held |= _starter_products(rng, pop, age) & is_new[:, None]

    norm = _norms(pop, age, income, tenure, held)
    fill = np.ones((n, len(BALANCES)))
    # Loans part repaid: outstanding share of the original amount.
    for column in LOAN_COLUMNS:
        fill[:, column] = np.where(existing, rng.uniform(0.15, 1.0, n), 1.0)
    # New customers are still moving money in.
    fill[is_new] *= rng.uniform(0.2, 0.6, (int(is_new.sum()), 1))
    balances = norm * fill * np.exp(rng.normal(0, 0.15, (n, len(BALANCES))))
    balances = np.where(_balance_held(held), balances, 0.0)

    drift_length = rng.integers(DRIFT_MONTHS_RANGE[0], DRIFT_MONTHS_RANGE[1] + 1, size=n)
    drifting = existing & (rng.random(n) < 0.035)
    drift = np.where(drifting, rng.integers(1, drift_length + 1), 0)
    balances[:, : B_PEN + 1] *= np.exp(-0.3 * drift)[:, None]
    liquid = balances[:, list(DEPOSIT_COLUMNS + WEALTH_COLUMNS)].sum(axis=1)

    return _State(
        status=np.where(is_prospect, PROSPECT, CUSTOMER),
        since=np.where(is_prospect, NOT_A_CUSTOMER, -tenure),
        held=held,
        balances=balances,
        drift=drift,
        drift_length=drift_length,
        open_complaint=~is_prospect & (rng.random(n) < 0.015 + 0.2 * drifting),
        complaints=np.zeros(n, dtype=np.int64),
        activity=np.zeros(n, dtype=np.int64),
        contacts=np.zeros(n, dtype=np.int64),
        web_visits=np.zeros(n, dtype=np.int64),
        days_since=rng.integers(20, 200, size=n),
        liquid_history=np.repeat(liquid[:, None], 3, axis=1),
        value_history=np.zeros((n, 2)),
        value_months=np.zeros(n, dtype=np.int64),
    )


def _drift_logit(state: _State, tenure: IntArray, income: FloatArray) -> FloatArray:
    """Log-odds of starting to drift away this month, from last month's relationship."""
    held = state.held
    products = held.sum(axis=1)
    balance_fall = state.liquid_history[:, 0] < 0.75 * np.maximum(state.liquid_history[:, 2], 100)
    logit: FloatArray = (
        DRIFT_INTERCEPT
        + 1.5 * state.open_complaint
        + 0.9 * (state.complaints > 0)
        - 0.3 * (products - 3)
        - 1.0 * held[:, PAY]
        - 0.8 * held[:, MORT]
        + 0.9 * (tenure < 12)
        + 0.4 * ((tenure >= 12) & (tenure < 36))
        + 0.7 * (state.activity < 10)
        + 0.6 * (state.days_since > 45)
        + 0.8 * balance_fall
        - 0.2 * np.log(income / MEDIAN_INCOME)
    )
    return logit


def _churn(
    rng: np.random.Generator, state: _State, tenure: IntArray, income: FloatArray
) -> BoolArray:
    """Advance the drifting-away path; return who closes the relationship this month."""
    n: int = tenure.shape[0]
    customer = state.status == CUSTOMER
    drifting = customer & (state.drift > 0)
    state.drift[drifting] += 1
    decided = drifting & (state.drift > state.drift_length)
    leaves_after_drift = decided & (rng.random(n) < DRIFT_LEAVE_PROBABILITY)
    state.drift[decided & ~leaves_after_drift] = 0

    p_drift = _sigmoid(_drift_logit(state, tenure, income))
    calm = customer & (state.drift == 0) & ~decided
    leaves_suddenly = calm & (rng.random(n) < SUDDEN_CHURN_BASE + 0.08 * p_drift)
    starts = calm & ~leaves_suddenly & (rng.random(n) < p_drift)
    state.drift[starts] = 1
    state.drift_length[starts] = rng.integers(
        DRIFT_MONTHS_RANGE[0], DRIFT_MONTHS_RANGE[1] + 1, size=int(starts.sum())
    )
    leaves: BoolArray = leaves_after_drift | leaves_suddenly
    return leaves


def _convert(
    rng: np.random.Generator,
    pop: _Population,
    state: _State,
    income: FloatArray,
) -> BoolArray:
    """Prospects who open an account this month: channel, income and last month's contact."""
    logit = (
        CONVERSION_INTERCEPT
        + np.array(CHANNEL_CONVERSION_LOGIT)[pop.channel]
        + 0.6 * np.log(income / MEDIAN_INCOME)
        + 0.45 * np.minimum(state.contacts, 5)
        + 0.2 * np.minimum(state.web_visits, 8)
        + 0.5 * np.log(pop.interest)
    )
    converts: BoolArray = (state.status == PROSPECT) & (
        rng.random(income.shape[0]) < _sigmoid(logit)
    )
    return converts


def _take_up(
    rng: np.random.Generator,
    pop: _Population,
    state: _State,
    age: IntArray,
    income: FloatArray,
    tenure: IntArray,
    eligible: BoolArray,
) -> None:
    """Products added (life stage, holdings, new-customer zeal) and the rare ones given up."""
    n, k = int(state.held.shape[0]), int(state.held.shape[1])
    hazard = np.array(TAKE_UP_BASE) * np.exp(_affinity(pop, age, income, state.held))
    boost = np.where(tenure < NEW_CUSTOMER_MONTHS, NEW_CUSTOMER_TAKE_UP_BOOST, 1.0)
    boost = np.where((tenure >= NEW_CUSTOMER_MONTHS) & (tenure < 6), 3.0, boost)
    boost = boost * (1 + 0.25 * state.contacts) * np.where(state.drift > 0, 0.1, 1.0)
    hazard *= boost[:, None]
    hazard[:, BL] *= np.isin(pop.occupation, (SELF_EMPLOYED, BUSINESS_OWNER)) + 0.05
    takes = eligible[:, None] & ~state.held & (rng.random((n, k)) < 1 - np.exp(-hazard))

    drop_rate = np.broadcast_to(np.array(DROP_RATE), (n, k)).copy()
    drop_rate[:, PAY] += 0.3 * (state.drift > 0)  # a leaving customer moves the salary first
    drops = eligible[:, None] & state.held & (rng.random((n, k)) < drop_rate)
    state.held = (state.held | takes) & ~drops
    state.held[:, CA] |= state.held[:, PAY]


def _evolve_balances(
    rng: np.random.Generator,
    pop: _Population,
    state: _State,
    age: IntArray,
    income: FloatArray,
    tenure: IntArray,
    market_return: float,
) -> None:
    """Pull balances towards their norm; drifting customers take money out; loans amortise."""
    n: int = age.shape[0]
    norm = _norms(pop, age, income, tenure, state.held)
    must_hold = _balance_held(state.held)
    current = state.balances
    opened = must_hold & (current <= 0)

    log_now = np.log(np.maximum(current, 1.0))
    log_next = (
        log_now
        + MONTHLY_PULL * (np.log(norm) - log_now)
        + MONTHLY_NOISE * rng.normal(size=(n, len(BALANCES)))
    )
    log_next[:, B_FUND] += market_return
    drifting = state.drift > 0
    decay = rng.uniform(DRIFT_BALANCE_DECAY[0], DRIFT_BALANCE_DECAY[1], size=n)
    for column in (*DEPOSIT_COLUMNS, B_FUND, B_INS):
        log_next[drifting, column] = log_now[drifting, column] - decay[drifting]
    log_next[drifting, B_PEN] = log_now[drifting, B_PEN] - 0.3 * decay[drifting]
    log_next[drifting, B_CARD] = log_now[drifting, B_CARD] + np.log(DRIFT_ACTIVITY_FACTOR)
    nxt = np.exp(log_next)
    for column, rate in LOAN_AMORTISATION.items():
        nxt[:, column] = current[:, column] * (1 - rate)

    # A product opened this month starts part-filled (deposits) or at full amount (loans).
    start_fill = rng.uniform(0.2, 0.6, (n, len(BALANCES)))
    for column in LOAN_COLUMNS:
        start_fill[:, column] = 1.0
    nxt = np.where(opened, norm * start_fill, nxt)
    state.balances = np.where(must_hold, np.maximum(np.round(nxt, 2), 1.0), 0.0)


@dataclass(frozen=True)
class _Behaviour:
    transactions: IntArray
    logins: IntArray
    branch_visits: IntArray
    complaints: IntArray


def _behave(
    rng: np.random.Generator, pop: _Population, state: _State, income: FloatArray
) -> _Behaviour:
    """Monthly usage of customers; activity collapses on the drifting-away path."""
    n: int = income.shape[0]
    held = state.held.astype(float)
    active = (state.status == CUSTOMER).astype(float)
    level = pop.engagement * DRIFT_ACTIVITY_FACTOR**state.drift * active
    logins = rng.poisson(
        level * (held[:, MOB] * (5 + 20 * pop.digital) + (1 - held[:, MOB]) * (1 + 3 * pop.digital))
    )
    transactions = rng.poisson(
        level
        * (income / MEDIAN_INCOME) ** 0.2
        * (
            held[:, CA] * (6 + 12 * held[:, PAY] + 6 * pop.digital)
            + held[:, CC] * 8 * pop.spend_affinity
        )
    )
    visits = rng.poisson(level * 0.6 * pop.branch_affinity)
    p_complaint = 0.006 * (1 + 3 * (state.drift > 0)) * active
    complaints = (rng.random(n) < p_complaint) * (1 + rng.poisson(0.2, n))
    return _Behaviour(transactions, logins, visits, complaints)


def _profit(state: _State, behaviour: _Behaviour, rng: np.random.Generator) -> FloatArray:
    """Monthly contribution: margins on balances, fees, minus servicing and complaint costs."""
    b, held = state.balances, state.held
    margin = sum(rate * b[:, column] for column, rate in ANNUAL_RATE.items()) / 12
    fees = (
        0.009 * b[:, B_CARD]
        + 2.0 * held[:, CC]
        + 3.0 * held[:, CA]
        + 4.0 * held[:, BROK]
        + 0.004 / 12 * b[:, B_FUND] * held[:, BROK]
        + 0.04 * behaviour.transactions
    )
    cost = (
        5.0
        + 1.2 * held.sum(axis=1)
        + 5.0 * behaviour.branch_visits
        + 0.03 * behaviour.transactions
        + 0.01 * behaviour.logins
        + 35.0 * behaviour.complaints
    )
    noise = rng.normal(0, 1.5, held.shape[0])
    profit: FloatArray = np.round(margin + fees - cost + noise, 2)
    return profit


@dataclass
class _MonthRows:
    index: IntArray
    columns: dict[str, npt.NDArray[np.generic]]


def _simulate_month(
    rng: np.random.Generator,
    pop: _Population,
    state: _State,
    m: int,
    market_return: float,
) -> _MonthRows:
    """Transitions into month m, then that month's balances, behaviour, profit and tier."""
    n = pop.age0.shape[0]
    age = np.minimum(pop.age0 + (m + pop.birthday_offset) // 12, 95)
    grown = np.minimum(pop.income0 * (1 + INCOME_GROWTH) ** m, INCOME_RANGE[1])
    income: FloatArray = np.round(grown, 2).astype(np.float64)
    prospect_before = state.status == PROSPECT
    customer_before = state.status == CUSTOMER

    leaves = np.zeros(n, dtype=bool)
    if m > 0:
        leaves = _churn(rng, state, m - state.since, income)
        converts = _convert(rng, pop, state, income)
        state.status[converts] = CUSTOMER
        state.since[converts] = m
        state.held[converts] = _starter_products(rng, pop, age)[converts]
        state.balances[converts] = 0.0
        state.value_months[converts] = 0
        state.drift[converts] = 0
        _take_up(rng, pop, state, age, income, m - state.since, customer_before & ~leaves)
    tenure = np.where(state.status == CUSTOMER, m - state.since, 0)

    # Contacts and web visits act on next month's conversion and take-up.
    still_prospect = state.status == PROSPECT
    channel_contacts = np.array(CHANNEL_CAMPAIGN_CONTACTS)[pop.channel]
    contacts = rng.poisson(np.where(still_prospect, channel_contacts, 0.25))
    web_rate = np.where(
        still_prospect, 1.2 * pop.interest * (1 + 0.8 * (pop.channel == 1)), 0.5 * pop.digital
    )
    web_visits = rng.poisson(web_rate)

    _evolve_balances(rng, pop, state, age, income, tenure, market_return)
    behaviour = _behave(rng, pop, state, income)
    complaints = behaviour.complaints
    state.open_complaint = (state.status == CUSTOMER) & (
        (complaints > 0) | (state.open_complaint & (rng.random(n) < 0.6))
    )
    own_activity = np.where(
        state.status == CUSTOMER,
        behaviour.transactions + behaviour.logins + behaviour.branch_visits,
        web_visits,
    )
    recent = np.floor(-np.log(1 - rng.random(n)) * 30 / (own_activity + 1))
    state.days_since = np.where(
        own_activity > 0, np.minimum(recent, 29), np.minimum(state.days_since + 30, 365)
    ).astype(np.int64)

    customer = state.status == CUSTOMER
    profit = np.where(customer, _profit(state, behaviour, rng), 0.0)
    b = state.balances
    value = (
        b[:, list(DEPOSIT_COLUMNS + WEALTH_COLUMNS)].sum(axis=1)
        + LOAN_WEIGHT * b[:, list(LOAN_COLUMNS)].sum(axis=1)
        + 12 * profit
    )
    history = np.minimum(state.value_months, TIER_TRAILING_MONTHS - 1)
    trailing = (
        value
        + state.value_history[:, 0] * (history >= 1)
        + state.value_history[:, 1] * (history >= 2)
    ) / (1 + history)
    tier = np.searchsorted(np.array(TIER_CUTOFFS_EUR), trailing, side="right")

    lifecycle = np.where(
        prospect_before & ~customer,
        0,
        np.where(tenure < NEW_CUSTOMER_MONTHS, 1, 2),
    )
    # A leaver's last row: the relationship is closed, so nothing is held any more.
    lifecycle = np.where(leaves, 3, lifecycle)
    closed = ~customer | leaves
    shown_balances = np.where(closed[:, None], 0.0, b)
    shown_held = state.held & ~closed[:, None]
    rows = np.flatnonzero(state.status != GONE)  # leavers are still CUSTOMER here

    columns: dict[str, npt.NDArray[np.generic]] = {
        "lifecycle": lifecycle,
        "age": age,
        "income": income,
        "since": state.since,
        "tenure_months": np.where(customer | leaves, m - state.since, 0),
        "balances": shown_balances,
        "held": shown_held,
        "transactions": behaviour.transactions,
        "digital_logins": behaviour.logins,
        "branch_visits": behaviour.branch_visits,
        "days_since_last_activity": state.days_since,
        "complaints": complaints,
        "open_complaint": state.open_complaint,
        "campaign_contacts": contacts,
        "web_visits": web_visits,
        "profit": np.where(leaves, 0.0, profit),
        "tier": np.where(customer & ~leaves, tier, -1),
    }
    month_rows = _MonthRows(rows, {name: col[rows] for name, col in columns.items()})

    # Carry the month forward.
    state.status[leaves] = GONE
    state.complaints = complaints
    state.activity = behaviour.transactions + behaviour.logins
    state.contacts, state.web_visits = contacts, web_visits
    liquid = b[:, list(DEPOSIT_COLUMNS + WEALTH_COLUMNS)].sum(axis=1)
    state.liquid_history = np.column_stack([liquid, state.liquid_history[:, :2]])
    state.value_history = np.column_stack([value, state.value_history[:, 0]])
    state.value_months = np.where(customer, state.value_months + 1, 0)
    return month_rows


def _decode(codes: IntArray, labels: tuple[str, ...]) -> pa.Array:
    """Integer codes (negative = null) as an Arrow string column."""
    indices = pa.array(codes.astype(np.int8), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(labels)).dictionary_decode()


def _to_table(pop: _Population, chunks: list[_MonthRows], start: datetime.date) -> pa.Table:
    """One row per customer and month, sorted by customer then month."""
    index = np.concatenate([chunk.index for chunk in chunks])
    month = np.concatenate([np.full(chunk.index.shape[0], m) for m, chunk in enumerate(chunks)])
    order = np.argsort(index, kind="stable")  # months were appended in order
    index, month = index[order], month[order]

    def column(name: str) -> npt.NDArray[np.generic]:
        return np.concatenate([chunk.columns[name] for chunk in chunks])[order]

    first_month = np.datetime64(start.replace(day=1), "M")
    since = column("since").astype(np.int64)
    ids = np.char.add("C", np.char.zfill(np.arange(1, pop.age0.shape[0] + 1).astype(str), 7))
    balances = column("balances")
    held = column("held")
    arrays: list[pa.Array] = [
        pa.array(ids).take(pa.array(index)),
        pa.array(month.astype(np.int16)),
        pa.array((first_month + month).astype("datetime64[D]")),
        _decode(column("lifecycle").astype(np.int64), LIFECYCLES),
        pa.array(column("age").astype(np.int16)),
        pa.array(column("income").astype(np.float64)),
        _decode(pop.occupation[index], OCCUPATIONS),
        _decode(pop.region[index], REGIONS),
        _decode(pop.channel[index], CHANNELS),
        pa.array(
            (first_month + np.maximum(since, -MAX_TENURE_MONTHS)).astype("datetime64[D]"),
            mask=since == NOT_A_CUSTOMER,
        ),
        pa.array(column("tenure_months").astype(np.int16)),
        *[pa.array(balances[:, i].astype(np.float64)) for i in range(len(BALANCES))],
        *[pa.array(held[:, i].astype(np.bool_)) for i in range(len(PRODUCTS))],
        pa.array(column("transactions").astype(np.int32)),
        pa.array(column("digital_logins").astype(np.int32)),
        pa.array(column("branch_visits").astype(np.int32)),
        pa.array(column("days_since_last_activity").astype(np.int32)),
        pa.array(column("complaints").astype(np.int16)),
        pa.array(column("open_complaint").astype(np.bool_)),
        pa.array(column("campaign_contacts").astype(np.int16)),
        pa.array(column("web_visits").astype(np.int16)),
        pa.array(column("profit").astype(np.float64)),
        _decode(column("tier").astype(np.int64), TIERS),
    ]
    return pa.Table.from_arrays(arrays, schema=BOOK_SCHEMA)


def generate_book(
    *,
    customers: int,
    months: int,
    seed: int,
    start: datetime.date = datetime.date(2025, 1, 1),
    on_month: Callable[[int], None] | None = None,
) -> pa.Table:
    """Simulate the book: the same seed always gives the same table."""
    if customers < 1 or months < 1:
        raise ValueError("customers and months must be positive")
    rng = np.random.default_rng(seed)
    is_prospect = rng.random(customers) < PROSPECT_SHARE
    pop = _draw_population(rng, customers, is_prospect)
    state = _initial_state(rng, pop, is_prospect)
    chunks: list[_MonthRows] = []
    for m in range(months):
        market_return = float(rng.normal(0.004, 0.03))
        chunks.append(_simulate_month(rng, pop, state, m, market_return))
        if on_month is not None:
            on_month(m)
    return _to_table(pop, chunks, start)


def write_book(
    *,
    out_dir: Path,
    customers: int,
    months: int,
    seed: int,
    on_month: Callable[[int], None] | None = None,
) -> Path:
    """Write the book to out_dir/book.parquet, atomically so a crash leaves no half file."""
    table = generate_book(customers=customers, months=months, seed=seed, on_month=on_month)
    # The generator's parameters travel inside the file: a model card trained on it can say the
    # data is synthetic and how to regenerate it, and a bank's own book never carries them.
    generator = {"generator": GENERATOR, "customers": customers, "months": months, "seed": seed}
    table = table.replace_schema_metadata({GENERATOR_METADATA_KEY: json.dumps(generator)})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / BOOK_FILE
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial, compression="zstd")
    partial.replace(path)
    return path


def read_book(path: Path) -> pa.Table:
    """Load a book written by write_book (the directory or the parquet file itself)."""
    file = path / BOOK_FILE if path.is_dir() else path
    table = pq.read_table(file)
    found = [(field.name, field.type) for field in table.schema]
    expected = [(field.name, field.type) for field in BOOK_SCHEMA]
    if found != expected:
        raise ValueError(f"{file} is not a customer book: its columns differ from BOOK_SCHEMA")
    return table


def book_generator(path: Path) -> dict[str, Any] | None:
    """The parameters ``write_book`` generated a book with; None for a book from elsewhere."""
    file = path / BOOK_FILE if path.is_dir() else path
    metadata = pq.read_schema(file).metadata or {}
    raw = metadata.get(GENERATOR_METADATA_KEY.encode())
    if raw is None:
        return None
    generator: dict[str, Any] = json.loads(raw)
    return generator if generator.get("generator") == GENERATOR else None
