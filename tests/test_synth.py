"""The synthetic book: deterministic, well-formed, plausible, and shaped as documented."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.training.synth import PRODUCTS, TIERS, generate_book, read_book, write_book

CUSTOMERS = 4_000
MONTHS = 12
SEED = 11

BALANCE_OF_PRODUCT = {
    "current_account": "current_account_balance",
    "savings": "savings_balance",
    "term_deposit": "term_deposit_balance",
    "credit_card": "card_spend",
    "mortgage": "mortgage_balance",
    "personal_loan": "personal_loan_balance",
    "business_loan": "business_loan_balance",
    "insurance": "insurance_holdings",
    "pension": "pension_holdings",
}
DEPOSITS = ["current_account_balance", "savings_balance", "term_deposit_balance"]
WEALTH = ["fund_holdings", "insurance_holdings", "pension_holdings"]
LOANS = ["mortgage_balance", "personal_loan_balance", "business_loan_balance"]
BALANCES = [*DEPOSITS, *WEALTH, *LOANS, "card_spend"]
HAS = [f"has_{product}" for product in PRODUCTS]
CUSTOMER_LIFECYCLES = ["new", "existing"]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return generate_book(customers=CUSTOMERS, months=MONTHS, seed=SEED)


@pytest.fixture(scope="module")
def book(table: pa.Table) -> pd.DataFrame:
    return _with_history(table)


def _with_history(table: pa.Table) -> pd.DataFrame:
    """The book with each row's next month and its 3-month history alongside."""
    frame: pd.DataFrame = table.to_pandas().sort_values(["customer_id", "month"], ignore_index=True)
    frame["liquid"] = frame[DEPOSITS + WEALTH].sum(axis=1)
    frame["products"] = frame[HAS].sum(axis=1)
    frame["is_customer"] = frame["lifecycle"].isin(CUSTOMER_LIFECYCLES)
    by_customer = frame.groupby("customer_id", sort=False)
    for column in ["lifecycle", "liquid", "digital_logins", "complaints", *HAS]:
        frame[f"next_{column}"] = by_customer[column].shift(-1)
    frame["liquid_3m_ago"] = by_customer["liquid"].shift(3)
    frame["logins_3m_ago"] = by_customer["digital_logins"].shift(3)
    frame["complaints_3m"] = by_customer["complaints"].transform(
        lambda s: s.rolling(3, min_periods=1).sum()
    )
    return frame


def _stays(book: pd.DataFrame) -> pd.DataFrame:
    """Customer rows that have a next month on the book, with whether they left in it."""
    rows = book[book["is_customer"] & book["next_lifecycle"].notna()].copy()
    rows["leaves"] = rows["next_lifecycle"].eq("lost")
    return rows


def _takes_up(rows: pd.DataFrame, product: str) -> pd.Series:
    """Among non-holders who stay customers next month: whether they then hold the product."""
    return rows[f"next_has_{product}"].astype(bool)


def _continuing(book: pd.DataFrame) -> pd.DataFrame:
    return book[book["is_customer"] & book["next_lifecycle"].isin(CUSTOMER_LIFECYCLES)]


# Determinism and format.


def test_same_seed_gives_the_same_book_and_another_seed_does_not() -> None:
    first = generate_book(customers=600, months=5, seed=3)
    again = generate_book(customers=600, months=5, seed=3)
    other = generate_book(customers=600, months=5, seed=4)
    assert first.equals(again)
    assert not first.equals(other)
    assert first.num_rows > 600 * 4


def test_schema_has_exactly_the_documented_columns_and_types(table: pa.Table) -> None:
    expected = [
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
        *[(name, pa.float64()) for name in BALANCES[:-1]],
        ("card_spend", pa.float64()),
        *[(name, pa.bool_()) for name in HAS],
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
    assert [(field.name, field.type) for field in table.schema] == expected


def test_write_then_read_round_trips_and_reports_each_month(tmp_path: Path) -> None:
    seen: list[int] = []
    path = write_book(
        out_dir=tmp_path / "book", customers=300, months=4, seed=5, on_month=seen.append
    )
    assert path == tmp_path / "book" / "book.parquet"
    assert seen == [0, 1, 2, 3]
    expected = generate_book(customers=300, months=4, seed=5)
    assert read_book(path.parent).equals(expected)
    assert read_book(path).equals(expected)
    assert not list(path.parent.glob("*.partial"))


def test_read_book_rejects_a_file_that_is_not_a_book(tmp_path: Path) -> None:
    pq.write_table(pa.table({"customer_id": ["C0000001"]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a customer book"):
        read_book(tmp_path / "other.parquet")


def test_rejects_an_empty_book() -> None:
    with pytest.raises(ValueError):
        generate_book(customers=0, months=3, seed=1)


# The panel's shape.


def test_ids_dates_and_months_line_up(book: pd.DataFrame) -> None:
    assert book["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert book["customer_id"].nunique() == CUSTOMERS
    assert (book.loc[book["month"] == 0, "customer_id"].nunique()) == CUSTOMERS
    snapshot = pd.to_datetime(book["snapshot_date"])
    assert (snapshot.dt.day == 1).all()
    months_after_start = (snapshot.dt.year - 2025) * 12 + snapshot.dt.month - 1
    assert (months_after_start == book["month"]).all()
    # Consecutive months, one row each, from month 0 until the customer is lost or the book ends.
    gaps = book.groupby("customer_id")["month"].diff().dropna()
    assert (gaps == 1).all()


def test_start_month_can_be_moved() -> None:
    moved = generate_book(customers=50, months=2, seed=1, start=datetime.date(2023, 7, 1))
    assert set(moved.column("snapshot_date").to_pylist()) == {
        datetime.date(2023, 7, 1),
        datetime.date(2023, 8, 1),
    }


def test_lifecycle_follows_prospect_new_existing_lost(book: pd.DataFrame) -> None:
    lost = book["lifecycle"].eq("lost")
    assert book.loc[lost, "next_lifecycle"].isna().all(), "nothing after a lost row"
    assert lost.sum() > 100
    order = {"prospect": 0, "new": 1, "existing": 2, "lost": 3}
    rank = book["lifecycle"].map(order)
    assert (rank.groupby(book["customer_id"]).diff().dropna() >= 0).all()
    customers = book[book["is_customer"]]
    assert (customers["lifecycle"].eq("new") == (customers["tenure_months"] < 3)).all()
    prospects = book[book["lifecycle"].eq("prospect")]
    assert prospects["customer_since"].isna().all()
    assert (prospects["tenure_months"] == 0).all()
    assert book.loc[~book["lifecycle"].eq("prospect"), "customer_since"].notna().all()
    # tenure counts the months since customer_since
    known = book[book["customer_since"].notna()]
    since = pd.to_datetime(known["customer_since"])
    snapshot = pd.to_datetime(known["snapshot_date"])
    elapsed = (snapshot.dt.year - since.dt.year) * 12 + snapshot.dt.month - since.dt.month
    assert (elapsed == known["tenure_months"]).all()


def test_start_of_book_composition(book: pd.DataFrame) -> None:
    start = book.loc[book["month"] == 0, "lifecycle"].value_counts(normalize=True)
    assert 0.09 < start["prospect"] < 0.15
    assert 0.05 < start["new"] < 0.11
    assert "lost" not in start
    existing = book[(book["month"] == 0) & book["lifecycle"].eq("existing")]
    assert existing["tenure_months"].min() >= 3
    assert existing["tenure_months"].max() > 25 * 12
    assert existing["tenure_months"].max() <= 30 * 12


# Plausible values.


def test_values_are_in_plausible_ranges(table: pa.Table, book: pd.DataFrame) -> None:
    nullable = {"customer_since", "value_tier"}
    for name in table.column_names:
        if name not in nullable:
            assert table.column(name).null_count == 0, name
    numbers = book[table.column_names].select_dtypes("number")
    assert np.isfinite(numbers.to_numpy(dtype=float)).all()
    assert book["age"].between(18, 95).all()
    assert book["income"].between(8_000, 1_000_000).all()
    assert 28_000 < book["income"].median() < 37_000
    assert book["income"].quantile(0.99) > 3 * book["income"].median()  # long right tail
    assert (book[BALANCES] >= 0).all().all()
    assert book["days_since_last_activity"].between(0, 365).all()
    for column in ("transactions", "digital_logins", "branch_visits", "complaints"):
        assert (book[column] >= 0).all()
    assert set(book["occupation"]) == {
        "employee",
        "civil_servant",
        "self_employed",
        "business_owner",
        "retired",
        "student",
        "unemployed",
    }
    assert set(book["region"]) == {"capital", "north", "south", "east", "west"}
    assert set(book["channel"]) == {"branch", "web", "referral", "partner", "campaign"}
    assert set(book["value_tier"].dropna()) <= set(TIERS)
    assert (book["profit"] < 0).any()


def test_balances_are_positive_exactly_where_the_product_is_held(book: pd.DataFrame) -> None:
    customers = book[book["is_customer"]]
    for product, balance in BALANCE_OF_PRODUCT.items():
        held = customers[f"has_{product}"]
        assert (customers.loc[held, balance] > 0).all(), product
        assert (customers.loc[~held, balance] == 0).all(), product
    investing = customers["has_investment_fund"] | customers["has_brokerage"]
    assert (customers.loc[investing, "fund_holdings"] > 0).all()
    assert (customers.loc[~investing, "fund_holdings"] == 0).all()
    assert (customers.loc[customers["has_payroll"], "has_current_account"]).all()
    outside = book[~book["is_customer"]]
    assert (outside[BALANCES] == 0).all().all()
    assert not outside[HAS].any().any()
    assert (outside["profit"] == 0).all()


def test_value_tier_follows_the_documented_rule(book: pd.DataFrame) -> None:
    customers = book[book["is_customer"]].copy()
    customers["value"] = (
        customers[DEPOSITS + WEALTH].sum(axis=1)
        + 0.2 * customers[LOANS].sum(axis=1)
        + 12 * customers["profit"]
    )
    trailing = customers.groupby("customer_id")["value"].transform(
        lambda s: s.rolling(3, min_periods=1).mean()
    )
    cut = np.searchsorted([25_000, 100_000, 500_000, 2_000_000], trailing, side="right")
    expected = pd.Series(np.array(TIERS)[cut], index=customers.index)
    assert (expected == customers["value_tier"]).mean() > 0.999
    assert book.loc[~book["is_customer"], "value_tier"].isna().all()


def test_value_tiers_form_a_pyramid(book: pd.DataFrame) -> None:
    shares = book.loc[book["is_customer"], "value_tier"].value_counts(normalize=True)
    assert 0.50 < shares["mass"] < 0.70
    assert 0.15 < shares["emerging_affluent"] < 0.30
    assert 0.07 < shares["affluent"] < 0.18
    assert 0.015 < shares["high_net_worth"] < 0.08
    assert 0.002 < shares["private"] < 0.03


def test_monthly_churn_take_up_and_conversion_rates(book: pd.DataFrame) -> None:
    churn = _stays(book)["leaves"].mean()
    assert 0.008 < churn < 0.02
    continuing = _continuing(book)
    added = (
        continuing[[f"next_{h}" for h in HAS]].to_numpy(dtype=bool) & ~continuing[HAS].to_numpy()
    ).any(axis=1)
    assert 0.015 < added.mean() < 0.05
    dropped = (
        ~continuing[[f"next_{h}" for h in HAS]].to_numpy(dtype=bool) & continuing[HAS].to_numpy()
    ).any(axis=1)
    assert dropped.mean() < added.mean() / 2, "products are rarely given up"
    prospects = book[book["lifecycle"].eq("prospect") & book["next_lifecycle"].notna()]
    conversion = prospects["next_lifecycle"].eq("new").mean()
    assert 0.025 < conversion < 0.08


# The structure models are meant to learn.


def test_leavers_drift_away_before_they_go(book: pd.DataFrame) -> None:
    rows = _stays(book).dropna(subset=["liquid_3m_ago"])
    ratio = rows["liquid"] / rows["liquid_3m_ago"].clip(lower=100)
    logins = (rows["digital_logins"] + 1) / (rows["logins_3m_ago"] + 1)
    leavers, stayers = rows["leaves"], ~rows["leaves"]
    assert leavers.sum() > 50
    assert ratio[leavers].median() < 0.6 < 0.9 < ratio[stayers].median()
    assert logins[leavers].median() < 0.7 * logins[stayers].median()
    complained = rows["complaints_3m"] > 0
    assert complained[leavers].mean() > 2 * complained[stayers].mean()


def test_open_complaints_few_products_and_short_tenure_raise_churn(book: pd.DataFrame) -> None:
    rows = _stays(book)
    leaves = rows["leaves"]
    assert leaves[rows["open_complaint"]].mean() > 2 * leaves[~rows["open_complaint"]].mean()
    assert leaves[rows["products"] <= 2].mean() > 2 * leaves[rows["products"] >= 5].mean()
    assert (
        leaves[rows["tenure_months"] < 12].mean() > 1.5 * leaves[rows["tenure_months"] >= 36].mean()
    )


def test_payroll_and_mortgage_customers_churn_less(book: pd.DataFrame) -> None:
    rows = _stays(book)
    leaves = rows["leaves"]
    assert leaves[rows["has_payroll"]].mean() < 0.6 * leaves[~rows["has_payroll"]].mean()
    assert leaves[rows["has_mortgage"]].mean() < 0.7 * leaves[~rows["has_mortgage"]].mean()


def test_referral_and_branch_prospects_convert_more_than_campaign_ones(book: pd.DataFrame) -> None:
    prospects = book[book["lifecycle"].eq("prospect") & book["next_lifecycle"].notna()]
    converts = prospects["next_lifecycle"].eq("new")
    by_channel = converts.groupby(prospects["channel"]).mean()
    assert by_channel["referral"] > 1.5 * by_channel["campaign"]
    assert by_channel["branch"] > 1.5 * by_channel["campaign"]
    low, high = prospects["income"].quantile([1 / 3, 2 / 3])
    assert (
        converts[prospects["income"] >= high].mean()
        > 1.3 * converts[prospects["income"] <= low].mean()
    )
    # Contact helps within a channel (campaign prospects are contacted most but convert least).
    campaign = prospects["channel"].eq("campaign")
    contacted = prospects["campaign_contacts"] >= 2
    assert converts[campaign & contacted].mean() > 1.3 * converts[campaign & ~contacted].mean()
    browsed = prospects["web_visits"] >= 2
    assert converts[browsed].mean() > 1.3 * converts[prospects["web_visits"] == 0].mean()


def test_converts_bring_more_profit_the_more_they_earn(book: pd.DataFrame) -> None:
    started_as_prospect = book.loc[book["lifecycle"].eq("prospect"), "customer_id"].unique()
    converts = book[book["customer_id"].isin(started_as_prospect) & book["is_customer"]]
    per_customer = converts.groupby("customer_id").agg(
        income=("income", "first"), profit=("profit", "mean")
    )
    assert len(per_customer) > 100
    assert per_customer["income"].corr(per_customer["profit"], method="spearman") > 0.2


def test_product_take_up_follows_life_stage(book: pd.DataFrame) -> None:
    rows = _continuing(book)

    def rate(product: str, who: pd.Series) -> float:
        eligible = rows[who.loc[rows.index] & ~rows[f"has_{product}"]]
        return float(_takes_up(eligible, product).mean())

    young = book["age"] < 30
    retired = book["occupation"].eq("retired")
    assert rate("credit_card", young) > 3 * rate("credit_card", retired)
    assert rate("mobile_banking", young) > 3 * rate("mobile_banking", retired)
    assert rate("mortgage", book["age"].between(28, 45)) > 3 * rate("mortgage", book["age"] >= 50)
    savers_40 = (book["age"] >= 40) & book["has_savings"]
    assert rate("investment_fund", savers_40) > 3 * rate("investment_fund", ~book["has_savings"])
    assert rate("term_deposit", book["has_savings"]) > 2 * rate(
        "term_deposit", ~book["has_savings"]
    )
    business = book["occupation"].isin(["self_employed", "business_owner"])
    assert rate("business_loan", business) > 5 * rate("business_loan", ~business)


def test_new_customers_and_payroll_customers_add_products_faster(book: pd.DataFrame) -> None:
    rows = _continuing(book)
    added = (rows[[f"next_{h}" for h in HAS]].to_numpy(dtype=bool) & ~rows[HAS].to_numpy()).any(
        axis=1
    )
    added_series = pd.Series(added, index=rows.index)
    assert (
        added_series[rows["tenure_months"] < 3].mean()
        > 3 * added_series[rows["tenure_months"] >= 12].mean()
    )

    # Payroll lifts every other product: compare take-ups per product not yet held.
    others = [h for h in HAS if h != "has_payroll"]
    held = rows[others].to_numpy()
    taken = rows[[f"next_{h}" for h in others]].to_numpy(dtype=bool) & ~held
    settled = (rows["tenure_months"] >= 12).to_numpy()
    payroll = rows["has_payroll"].to_numpy()

    def per_free_product(who: np.ndarray) -> float:
        return float(taken[who].sum() / (~held[who]).sum())

    assert per_free_product(settled & payroll) > 1.3 * per_free_product(settled & ~payroll)


def test_value_scales_with_income_age_and_tenure(book: pd.DataFrame) -> None:
    customers = book[book["is_customer"] & (book["month"] == MONTHS - 1)]
    liquid = customers["liquid"]
    assert customers["income"].corr(liquid, method="spearman") > 0.3
    older, younger = customers["age"].between(55, 70), customers["age"].between(25, 35)
    assert liquid[older].median() > 2.5 * liquid[younger].median()
    wealth = customers[WEALTH].sum(axis=1)
    assert wealth[older].mean() > 3 * wealth[younger].mean()
    assert customers["tenure_months"].corr(liquid, method="spearman") > 0.1
    everything = liquid + customers[LOANS].sum(axis=1)
    assert customers["profit"].corr(everything, method="spearman") > 0.5
    assert customers["profit"].corr(customers["products"], method="spearman") > 0.3
