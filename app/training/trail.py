"""The synthetic book's behaviour trail: each customer-month of the book as the events a core
banking system would have sent, so that the features served from the trail (app/customers/
features.py) reproduce the book's.

Per customer-month: a profile (demographics, channel, start of the relationship, the month's
profit), the products opened and closed since the month before, a balance snapshot of each
balance that changed, the complaints opened and resolved, campaign contacts, and the
activity (transactions, app logins and branch visits of a customer; website visits of a
prospect), the last of it placed so that the days since the last activity come out as the
book has them. Where the book's first month starts mid-story (a complaint already open, no
activity for weeks), one event before the book says so. The book's website visits of
customers feed no model feature and are not emitted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.customers.features import (
    BALANCE_PRODUCTS,
    DAYS_PER_MONTH,
    MAX_DAYS_SINCE_ACTIVITY,
    PRODUCTS,
    month_index,
    month_start,
)
from app.customers.schemas import COMMON_FIELDS, PAYLOAD_COLUMNS

# Where in a month (on the 30-day clock) each kind of event is placed.
PROFILE_AT = 0.1
PRODUCTS_AT = 0.2
COMPLAINTS_AT = 1.0
CONTACTS_AT = 2.0
RESOLVED_AT = 28.0
BALANCES_AT = 29.9
TRANSACTION_AMOUNT = 25.0


def moment(month: int, position: float) -> datetime:
    """The time at ``position`` (0..30) of a month, to the second."""
    start, end = month_start(month), month_start(month + 1)
    seconds = round(position / DAYS_PER_MONTH * (end - start).total_seconds())
    return start + timedelta(seconds=seconds)


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class _Customer:
    """One customer's events, month by month, with what it carries between months."""

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.held = dict.fromkeys(PRODUCTS, False)
        self.balances = dict.fromkeys(BALANCE_PRODUCTS, 0.0)
        self.open_complaints: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.first = True

    def emit(self, type_: str, month: int, position: float, tag: str, **fields: Any) -> None:
        self.events.append(
            {
                "event_id": f"{self.customer_id}-{month}-{tag}",
                "type": type_,
                "customer_id": self.customer_id,
                "occurred_at": _stamp(moment(month, position)),
                **fields,
            }
        )

    def month(self, row: Any) -> None:
        """The events of one book row."""
        month = month_index(datetime(row.snapshot_date.year, row.snapshot_date.month, 1))
        prospect = row.lifecycle == "prospect"
        if self.first:
            self._before_book(row, month, prospect)
            self.first = False
        self._profile(row, month)
        self._products(row, month)
        self._complaints(row, month)
        for i in range(int(row.campaign_contacts)):
            self.emit(
                "campaign_response",
                month,
                CONTACTS_AT,
                f"cc{i}",
                campaign_id=f"CAMP-{month}",
                response="contacted",
            )
        self._activity(row, month, prospect)
        self._balances(row, month)

    def _before_book(self, row: Any, month: int, prospect: bool) -> None:
        """What the book's first month takes as given: an open complaint, the last activity."""
        if row.open_complaint and row.complaints == 0:
            self.emit("complaint", month - 1, COMPLAINTS_AT, "k-before", complaint_id="K-before")
            self.open_complaints.append("K-before")
        if _activity_count(row, prospect) == 0:
            days = int(row.days_since_last_activity)
            weeks_back, rest = divmod(days, DAYS_PER_MONTH)
            if days >= MAX_DAYS_SINCE_ACTIVITY:
                when, position = month - 13, 15.0
            else:
                when, position = month - weeks_back, DAYS_PER_MONTH - rest - 0.5
            platform = "website" if prospect else "web"
            self.emit("digital_session", when, position, "a-before", platform=platform)

    def _profile(self, row: Any, month: int) -> None:
        fields: dict[str, Any] = {
            "age": int(row.age),
            "income": float(row.income),
            "occupation": row.occupation,
            "region": row.region,
            "acquisition_channel": row.channel,
            "monthly_profit": float(row.profit),
        }
        if row.customer_since is not None and not pd.isna(row.customer_since):
            fields["customer_since"] = row.customer_since.isoformat()
        self.emit("customer_profile", month, PROFILE_AT, "p", **fields)

    def _products(self, row: Any, month: int) -> None:
        for product in PRODUCTS:
            held = bool(getattr(row, f"has_{product}"))
            if held != self.held[product]:
                kind = "account_opened" if held else "account_closed"
                self.emit(kind, month, PRODUCTS_AT, f"{kind}-{product}", product=product)
                self.held[product] = held

    def _complaints(self, row: Any, month: int) -> None:
        for i in range(int(row.complaints)):
            complaint_id = f"K-{month}-{i}"
            self.emit(
                "complaint", month, COMPLAINTS_AT + 0.01 * i, f"k{i}", complaint_id=complaint_id
            )
            self.open_complaints.append(complaint_id)
        if not row.open_complaint:
            for complaint_id in self.open_complaints:
                self.emit(
                    "complaint",
                    month,
                    RESOLVED_AT,
                    f"r-{complaint_id}",
                    complaint_id=complaint_id,
                    status="resolved",
                )
            self.open_complaints = []

    def _activity(self, row: Any, month: int, prospect: bool) -> None:
        """The month's activity, the last of it ``days_since_last_activity`` before its end."""
        kinds: list[tuple[str, dict[str, Any]]]
        if prospect:
            kinds = [("digital_session", {"platform": "website"})] * int(row.web_visits)
        else:
            kinds = (
                [
                    (
                        "transaction",
                        {"amount": TRANSACTION_AMOUNT, "direction": "debit", "channel": "card"},
                    )
                ]
                * int(row.transactions)
                + [("digital_session", {"platform": "mobile_app"})] * int(row.digital_logins)
                + [("contact", {"kind": "branch_visit"})] * int(row.branch_visits)
            )
        if not kinds:
            return
        last = DAYS_PER_MONTH - 0.5 - int(row.days_since_last_activity)
        count = len(kinds)
        for i, (kind, fields) in enumerate(kinds):
            position = last if i == count - 1 else last * i / count
            self.emit(kind, month, position, f"a{i}", **fields)

    def _balances(self, row: Any, month: int) -> None:
        for feature, products in BALANCE_PRODUCTS.items():
            value = float(getattr(row, feature))
            if value != self.balances[feature]:
                self.emit(
                    "balance_snapshot",
                    month,
                    BALANCES_AT,
                    f"b-{feature}",
                    product=products[0],
                    balance=value,
                )
                self.balances[feature] = value


def _activity_count(row: Any, prospect: bool) -> int:
    if prospect:
        return int(row.web_visits)
    return int(row.transactions) + int(row.digital_logins) + int(row.branch_visits)


def book_events(book: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Every customer's trail as events (POST /v1/events objects), customer by customer."""
    ordered = book.sort_values(["customer_id", "month"], kind="stable")
    current: _Customer | None = None
    for row in ordered.itertuples(index=False):
        if current is None or current.customer_id != row.customer_id:
            if current is not None:
                yield from current.events
            current = _Customer(str(row.customer_id))
        current.month(row)
    if current is not None:
        yield from current.events


# The events file's columns: the columns form of POST /v1/events, numbers typed as such.
EVENT_NUMBER_TYPES = {
    "age": pa.int64(),
    "income": pa.float64(),
    "monthly_profit": pa.float64(),
    "balance": pa.float64(),
    "amount": pa.float64(),
    "duration_s": pa.float64(),
}
EVENTS_SCHEMA = pa.schema(
    [
        (name, EVENT_NUMBER_TYPES.get(name, pa.string()))
        for name in (*COMMON_FIELDS, *PAYLOAD_COLUMNS)
    ]
)


def write_events(
    book: pd.DataFrame,
    path: Path,
    *,
    chunk_rows: int = 200_000,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """The book's trail as an events file ``cvm ingest`` reads: Parquet, or CSV by the
    suffix (.csv), one event per row, written whole or not at all; returns the number of
    events written."""
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: expected a .parquet or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    csv = path.suffix.lower() == ".csv"
    writer: Any = (
        pa_csv.CSVWriter(partial, EVENTS_SCHEMA)
        if csv
        else pq.ParquetWriter(partial, EVENTS_SCHEMA)
    )
    events = book_events(book)
    written = 0
    try:
        while chunk := list(islice(events, chunk_rows)):
            writer.write_table(pa.Table.from_pylist(chunk, schema=EVENTS_SCHEMA))
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    finally:
        writer.close()
    partial.replace(path)
    return written
