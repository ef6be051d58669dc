"""Reads and writes of the behaviour trail; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import ColumnElement, Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.customers.tables import CustomerEvent, customer_event_table
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


def insert_new_events(connection: Connection, *, rows: Sequence[EventRow]) -> int:
    """Insert the rows whose (tenant, event id) is not stored yet; returns how many were.

    A row whose id is already stored, by an earlier call or by a concurrent transaction that
    commits first, is skipped by the database itself (ON CONFLICT DO NOTHING), so two calls
    carrying one event store it once whatever their timing.
    """
    if not rows:
        return 0
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(customer_event_table).on_conflict_do_nothing().returning(customer_event_table.c.id)
    )
    return len(connection.execute(statement, list(rows)).all())


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
