"""Reads and writes of the behaviour trail; callers own the transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypedDict

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Subquery,
    bindparam,
    case,
    cast,
    delete,
    func,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from app.customers.features import (
    COUNTERS,
    Kind,
    LatestKey,
    LatestValue,
    MonthCounts,
    MonthDelta,
    MonthKey,
    TrailEvent,
)
from app.customers.tables import (
    UNTAGGED_KEY,
    CustomerEvent,
    CustomerMonth,
    CustomerMonthLatest,
    RescorePending,
    customer_event_table,
    customer_month_latest_table,
    customer_month_table,
    rescore_pending_table,
)
from app.db.bulk import insert_rows, one_of
from app.db.session import json_text
from app.scoring.repository import TenantScope


class EventRow(TypedDict):
    """One row to insert into ``customer_event`` (every column but the generated id)."""

    tenant: str | None
    event_id: str
    customer_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    request_id: str
    payload: dict[str, Any]
    # A transaction's amount and direction (None for the other types), as the payload says.
    amount: float | None
    direction: str | None


def insert_new_events(connection: Connection, *, rows: Sequence[EventRow]) -> list[EventRow]:
    """Insert the rows whose (tenant, event id) is not stored yet; returns those.

    A row whose id is already stored, by an earlier call or by a concurrent transaction that
    commits first, is skipped by the database itself (ON CONFLICT DO NOTHING), so two calls
    carrying one event store it once whatever their timing.
    """
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        new_ids = _copy_new_events(connection, rows)
    else:
        statement = (
            sqlite.insert(customer_event_table)
            .on_conflict_do_nothing()
            .returning(customer_event_table.c.event_id)
        )
        new_ids = set(connection.execute(statement, list(rows)).scalars())
    return [row for row in rows if row["event_id"] in new_ids]


# PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT that skips stored ids.
# 13 ms per 1,000 events against 59 ms for SQLAlchemy's multi-row INSERT ... RETURNING, whose
# per-row parameter processing dominates (bench/intake_bench.py). The table lives as long as
# the pooled connection and is emptied by each commit.
_STAGING = "customer_event_in"
_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} (event_id varchar, customer_id varchar, "
    "type varchar, occurred_at timestamptz, payload json, amount float8, direction varchar) "
    "ON COMMIT DELETE ROWS"
)
_STAGED_COLUMNS = "event_id, customer_id, type, occurred_at, payload, amount, direction"
_COPY_STAGED = f"COPY {_STAGING} ({_STAGED_COLUMNS}) FROM STDIN"
_INSERT_STAGED = (
    f"INSERT INTO {customer_event_table.name} (tenant, received_at, request_id, "
    f"{_STAGED_COLUMNS}) SELECT %s, %s, %s, {_STAGED_COLUMNS} FROM {_STAGING} "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


def _copy_new_events(connection: Connection, rows: Sequence[EventRow]) -> set[str]:
    """The PostgreSQL path: the rows of one call share their tenant, time and request id."""
    first = rows[0]
    shared = (first["tenant"], first["received_at"], first["request_id"])
    if any((r["tenant"], r["received_at"], r["request_id"]) != shared for r in rows):
        raise ValueError("rows inserted together must share tenant, received_at and request_id")
    driver_connection: Any = connection.connection.driver_connection
    with driver_connection.cursor() as cursor:
        cursor.execute(_STAGE)
        with cursor.copy(_COPY_STAGED) as copy:
            for row in rows:
                copy.write_row(
                    (
                        row["event_id"],
                        row["customer_id"],
                        row["type"],
                        row["occurred_at"],
                        json_text(row["payload"]),
                        row["amount"],
                        row["direction"],
                    )
                )
        cursor.execute(_INSERT_STAGED, shared)
        return {event_id for (event_id,) in cursor.fetchall()}


def list_events(
    session: Session,
    *,
    customer_ids: Sequence[str],
    event_type: str | None,
    limit: int,
    offset: int,
    tenant: TenantScope | None,
) -> tuple[list[CustomerEvent], int]:
    """A customer's events (any of its stored id forms), latest occurrence first, and the
    total count."""
    if limit < 1 or offset < 0:
        raise ValueError("limit must be positive and offset non-negative")
    conditions: list[ColumnElement[bool]] = [CustomerEvent.customer_id.in_(customer_ids)]
    if event_type is not None:
        conditions.append(CustomerEvent.type == event_type)
    if tenant is not None:
        conditions.append(tenant.condition(CustomerEvent.tenant))
    total = session.scalar(select(func.count()).select_from(CustomerEvent).where(*conditions))
    rows = session.scalars(
        select(CustomerEvent)
        .where(*conditions)
        .order_by(CustomerEvent.occurred_at.desc(), CustomerEvent.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total or 0


# --- running aggregates -----------------------------------------------------------------------


def _later(stored: Any, new: Any) -> Any:
    """The later of two nullable times (SQLite's MAX of a NULL is NULL)."""
    return case(
        (new.is_(None), stored),
        (stored.is_(None), new),
        (new > stored, new),
        else_=stored,
    )


def update_months(
    connection: Connection,
    *,
    tenant: str | None,
    deltas: Mapping[MonthKey, MonthDelta],
    latest: Mapping[LatestKey, LatestValue],
) -> None:
    """Add counter deltas to their customer-months and keep each latest value unless a later
    occurrence is already stored; atomic per row, so concurrent calls never lose an update."""
    key = UNTAGGED_KEY if tenant is None else tenant
    months = customer_month_table.c

    def add_counts(insert: Any) -> Any:
        return insert.on_conflict_do_update(
            index_elements=[months.tenant, months.customer_id, months.month],
            set_={
                **{name: months[name] + insert.excluded[name] for name in COUNTERS},
                "last_activity_at": _later(
                    months.last_activity_at, insert.excluded.last_activity_at
                ),
            },
        )

    insert_rows(
        connection,
        customer_month_table,
        [
            {
                "tenant": key,
                "customer_id": customer_id,
                "month": month,
                **delta.counts,
                "last_activity_at": delta.last_activity_at,
            }
            for (customer_id, month), delta in sorted(deltas.items())
        ],
        on_conflict=add_counts,
    )
    values = customer_month_latest_table.c

    def keep_latest(insert: Any) -> Any:
        return insert.on_conflict_do_update(
            index_elements=[
                values.tenant,
                values.customer_id,
                values.month,
                values.kind,
                values.key,
            ],
            set_={
                "occurred_at": insert.excluded.occurred_at,
                "number": insert.excluded.number,
                "text": insert.excluded.text,
            },
            where=insert.excluded.occurred_at >= values.occurred_at,
        )

    insert_rows(
        connection,
        customer_month_latest_table,
        [
            {
                "tenant": key,
                "customer_id": customer_id,
                "month": value.month,
                "kind": value.kind,
                "key": value.key,
                "occurred_at": value.occurred_at,
                "number": value.number,
                "text": value.text,
            }
            for (customer_id, *_), value in sorted(latest.items(), key=lambda kv: kv[0])
        ],
        on_conflict=keep_latest,
    )


def _nothing(type_: TypeEngine[Any]) -> ColumnElement[Any]:
    return cast(null(), type_)


_month = customer_month_table.c
_latest = customer_month_latest_table.c
# A customer's months and latest values in one statement (one round trip): a month row has no
# kind; a latest value has no counters. Built once: a score by id runs it on every call.
_TRAIL = union_all(
    select(
        _month.month,
        _nothing(_latest.kind.type).label("kind"),
        _nothing(_latest.key.type).label("key"),
        _month.last_activity_at.label("occurred_at"),
        _nothing(_latest.number.type).label("number"),
        _nothing(_latest.text.type).label("text"),
        *(_month[name] for name in COUNTERS),
    ).where(
        _month.tenant == bindparam("tenant"),
        _month.customer_id.in_(bindparam("customer_ids", expanding=True)),
        _month.month <= bindparam("until"),
    ),
    select(
        _latest.month,
        _latest.kind,
        _latest.key,
        _latest.occurred_at,
        _latest.number,
        _latest.text,
        *(_nothing(_month[name].type).label(name) for name in COUNTERS),
    ).where(
        _latest.tenant == bindparam("tenant"),
        _latest.customer_id.in_(bindparam("customer_ids", expanding=True)),
        _latest.month <= bindparam("until"),
    ),
)
# Beyond any month a trail holds (year 9999): "up to no month in particular".
_LAST_MONTH = 9999 * 12 + 11


def read_months(
    reader: Connection | Session,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    until: int | None,
) -> tuple[list[MonthCounts], list[LatestValue]]:
    """A customer's stored aggregates up to a month (None: all of them), under any of its
    stored id forms."""
    key = UNTAGGED_KEY if tenant is None else tenant
    rows = reader.execute(
        _TRAIL,
        {
            "tenant": key,
            "customer_ids": list(customer_ids),
            "until": _LAST_MONTH if until is None else until,
        },
    ).all()  # fetched at once: row by row costs a driver call each
    merged: dict[int, MonthCounts] = {}
    latest: list[LatestValue] = []
    # Rows unpacked by position, not read by name: a score by id reads a year of months and their
    # latest values on every call.
    for month, kind, name, occurred_at, number, text, *counters in rows:
        if kind is not None:
            latest.append(LatestValue(month, kind, name, occurred_at, number=number, text=text))
            continue
        counts = dict(zip(COUNTERS, map(int, counters), strict=True))
        earlier = merged.get(month)
        last = occurred_at
        if earlier is not None:  # the same month under two id forms: add them up
            counts = {n: counts[n] + earlier.counts[n] for n in COUNTERS}
            last = max(filter(None, (last, earlier.last_activity_at)), default=None)
        merged[month] = MonthCounts(month, counts, last)
    return list(merged.values()), latest


def read_book_months(
    session: Session, *, tenant: str | None
) -> dict[str, tuple[list[MonthCounts], list[LatestValue]]]:
    """Every customer's stored aggregates in a tenant, by stored customer id."""
    key = UNTAGGED_KEY if tenant is None else tenant
    book: dict[str, tuple[list[MonthCounts], list[LatestValue]]] = {}
    for row in session.execute(select(CustomerMonth).where(CustomerMonth.tenant == key)).scalars():
        counts = {name: int(getattr(row, name)) for name in COUNTERS}
        entry = book.setdefault(row.customer_id, ([], []))
        entry[0].append(MonthCounts(row.month, counts, row.last_activity_at))
    values = session.execute(
        select(CustomerMonthLatest).where(CustomerMonthLatest.tenant == key)
    ).scalars()
    for v in values:
        entry = book.setdefault(v.customer_id, ([], []))
        entry[1].append(
            LatestValue(v.month, v.kind, v.key, v.occurred_at, number=v.number, text=v.text)
        )
    return book


def latest_balance_totals(*, tenant: str | None, products: Sequence[str]) -> Subquery:
    """Every customer's latest balances of ``products`` summed, as a subquery (``customer_id``,
    ``balance``): each product's snapshot of its latest month (the latest occurrence within
    it, as the features carry it), read set-wise so an aggregate never leaves the database."""
    key = UNTAGGED_KEY if tenant is None else tenant
    ranked = (
        select(
            CustomerMonthLatest.customer_id,
            CustomerMonthLatest.number,
            func.row_number()
            .over(
                partition_by=(CustomerMonthLatest.customer_id, CustomerMonthLatest.key),
                order_by=(
                    CustomerMonthLatest.month.desc(),
                    CustomerMonthLatest.occurred_at.desc(),
                    CustomerMonthLatest.id.desc(),
                ),
            )
            .label("newest"),
        )
        .where(
            CustomerMonthLatest.tenant == key,
            CustomerMonthLatest.kind == Kind.BALANCE,
            CustomerMonthLatest.key.in_(products),
        )
        .subquery("ranked_balance")
    )
    return (
        select(
            ranked.c.customer_id,
            func.sum(func.coalesce(ranked.c.number, 0.0)).label("balance"),
        )
        .where(ranked.c.newest == 1)
        .group_by(ranked.c.customer_id)
        .subquery("balance_total")
    )


def latest_month(
    reader: Connection | Session, *, tenant: str | None, customer_ids: Sequence[str]
) -> int | None:
    """The customer's latest month with any aggregate, or None if it has none."""
    key = UNTAGGED_KEY if tenant is None else tenant
    found = [
        reader.scalar(
            select(func.max(table.month)).where(
                table.tenant == key, table.customer_id.in_(customer_ids)
            )
        )
        for table in (CustomerMonth, CustomerMonthLatest)
    ]
    return max((m for m in found if m is not None), default=None)


# --- rescoring queue ----------------------------------------------------------------------------


def queue_rescoring(
    connection: Connection,
    *,
    tenant: str | None,
    pending: Mapping[str, tuple[str, str]],
    at: datetime,
) -> None:
    """Note customers to re-assess (stored id -> reason, event id), in the caller's
    transaction."""
    key = UNTAGGED_KEY if tenant is None else tenant
    insert_rows(
        connection,
        rescore_pending_table,
        [
            {
                "tenant": key,
                "customer_id": customer_id,
                "reason": reason,
                "event_id": event_id,
                "created_at": at,
            }
            for customer_id, (reason, event_id) in sorted(pending.items())
        ],
    )


def pending_rescoring(session: Session, *, limit: int) -> list[RescorePending]:
    """The oldest re-assessments waiting."""
    return list(
        session.scalars(select(RescorePending).order_by(RescorePending.id).limit(limit)).all()
    )


def drop_rescoring(session: Session, *, ids: Sequence[int]) -> None:
    """Remove re-assessments done (or that can never be done); the caller commits."""
    if ids:
        session.execute(delete(RescorePending).where(RescorePending.id.in_(ids)))


def campaign_responses(
    session: Session, *, tenant: str | None
) -> list[tuple[str, str | None, str, int]]:
    """How many campaign-response events a tenant's book holds, per (campaign, product,
    response)."""
    payload = CustomerEvent.payload
    campaign = payload["campaign_id"].as_string()
    product = payload["product"].as_string()
    response = payload["response"].as_string()
    rows = session.execute(
        select(campaign, product, response, func.count())
        .where(
            TenantScope(tenant).condition(CustomerEvent.tenant),
            CustomerEvent.type == "campaign_response",
        )
        .group_by(campaign, product, response)
    )
    return [(str(c), p, str(r), int(n)) for c, p, r, n in rows]


# --- what the needs warning reads (app/customers/needs.py) ------------------------------------


def _trail_rows(
    connection: Connection, conditions: Sequence[ColumnElement[bool]]
) -> list[tuple[str, TrailEvent]]:
    t = customer_event_table.c
    rows = connection.execute(
        select(t.event_id, t.customer_id, t.type, t.occurred_at, t.payload)
        .where(*conditions)
        .order_by(t.customer_id, t.occurred_at, t.id)
    )
    return [
        (
            row.event_id,
            TrailEvent(row.customer_id, row.type, _aware(row.occurred_at), _json(row.payload)),
        )
        for row in rows
    ]


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC through Core when the column type is not processed.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _json(value: Any) -> dict[str, Any]:
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value)


def _customers(
    connection: Connection, tenant: str | None, customer_ids: Sequence[str]
) -> list[ColumnElement[bool]]:
    return [
        one_of(connection, customer_event_table.c.customer_id, customer_ids),
        TenantScope(tenant).condition(CustomerEvent.tenant),
    ]


def transactions(
    connection: Connection,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    direction: str,
    category: str | None = None,
    until: datetime | None = None,
) -> list[tuple[str, TrailEvent]]:
    """These customers' transactions of one direction (and category) that occurred up to
    ``until``, as (event id, event), per customer in time order."""
    if not customer_ids:
        return []
    t = customer_event_table.c
    conditions = [
        *_customers(connection, tenant, customer_ids),
        t.type == "transaction",
        t.direction == direction,
    ]
    if until is not None:
        conditions.append(t.occurred_at <= until)
    if category is not None:
        conditions.append(t.payload["category"].as_string() == category)
    return _trail_rows(connection, conditions)


def idle_candidates(
    connection: Connection,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    since: datetime,
    until: datetime,
    min_amount: float,
) -> tuple[list[tuple[str, TrailEvent]], dict[str, float]]:
    """These customers' credits of at least ``min_amount`` that occurred in [since, until],
    as (event id, event) per customer in time order, and for each (by event id) what the
    customer's debits occurring after it add up to: summed by the database from the typed
    columns' index, no debit row read here."""
    if not customer_ids:
        return [], {}
    credit, debit = customer_event_table.alias("credit"), customer_event_table.alias("debit")
    spent = (
        select(func.coalesce(func.sum(debit.c.amount), 0.0))
        .where(
            _tenant_is(debit.c.tenant, tenant),
            debit.c.customer_id == credit.c.customer_id,
            debit.c.type == "transaction",
            debit.c.direction == "debit",
            debit.c.occurred_at > credit.c.occurred_at,
        )
        .scalar_subquery()
    )
    rows = connection.execute(
        select(
            credit.c.event_id,
            credit.c.customer_id,
            credit.c.occurred_at,
            credit.c.payload,
            spent.label("spent"),
        )
        .where(
            _tenant_is(credit.c.tenant, tenant),
            one_of(connection, credit.c.customer_id, customer_ids),
            credit.c.type == "transaction",
            credit.c.direction == "credit",
            credit.c.occurred_at >= since,
            credit.c.occurred_at <= until,
            credit.c.amount >= min_amount,
        )
        .order_by(credit.c.customer_id, credit.c.occurred_at, credit.c.id)
    )
    credits: list[tuple[str, TrailEvent]] = []
    spent_by_id: dict[str, float] = {}
    for row in rows:
        event = TrailEvent(
            row.customer_id, "transaction", _aware(row.occurred_at), _json(row.payload)
        )
        credits.append((row.event_id, event))
        spent_by_id[row.event_id] = float(row.spent)
    return credits, spent_by_id


def _tenant_is(column: ColumnElement[str | None], tenant: str | None) -> ColumnElement[bool]:
    """The tenant condition on an alias's tenant column."""
    return column.is_(None) if tenant is None else column == tenant


def term_accounts(
    connection: Connection,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    first: date,
    last: date,
) -> list[tuple[str, TrailEvent]]:
    """These customers' accounts opened with a maturity date in [first, last], and every
    account closing of the customers that have one."""
    if not customer_ids:
        return []
    t = customer_event_table.c
    maturity = t.payload["maturity_date"].as_string()
    opened = _trail_rows(
        connection,
        [
            *_customers(connection, tenant, customer_ids),
            t.type == "account_opened",
            maturity >= first.isoformat(),
            maturity <= last.isoformat(),
        ],
    )
    holders = sorted({event.customer_id for _, event in opened})
    if not holders:
        return []
    closed = _trail_rows(
        connection, [*_customers(connection, tenant, holders), t.type == "account_closed"]
    )
    return opened + closed
