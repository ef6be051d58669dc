"""Casework reports: volumes and service levels over a window, and a regulator-style
half-yearly complaints return, computed from case data alone (SQL aggregates).

Windows are whole UTC days: ``date_from`` included, ``date_to`` excluded. A complaint counts
as closed when it was closed or rejected (both end the case and set ``closed_at``); it was
closed on time when that happened by its due date.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, case, func, literal_column, or_, select
from sqlalchemy.orm import Session

from app.alerts import service as alerts
from app.alerts.states import Outcome as AlertOutcome
from app.casework.deadlines import DeadlineClock, Period, Unit
from app.casework.schemas import (
    CaseCounts,
    CaseworkReport,
    ComplaintsReturn,
    RepeatComplaints,
    RetentionCounts,
    ReturnLine,
    RootCause,
)
from app.casework.states import AssignmentStatus, Outcome
from app.casework.tables import AlertAssignment, Complaint
from app.errors import InvalidInput
from app.scoring.repository import TenantScope

TOP_ROOT_CAUSES = 5
UPHELD = (Outcome.UPHELD.value, Outcome.PARTIALLY_UPHELD.value)
HALF_PATTERN = re.compile(r"^(\d{4})H([12])$")
BUCKET_PATTERN = re.compile(r"^([1-9]\d{0,2})(bd|d|w)$")
# DISP's two marks: the summary-resolution letter (3 business days) and the final response.
DEFAULT_BUCKETS = ("3bd", "8w")
ALL_PRODUCTS = "all"


@dataclass(frozen=True, slots=True)
class Bucket:
    """A 'closed within' mark of the return: its label and its period."""

    label: str
    period: Period


class ReportWindow(NamedTuple):
    """Whose complaints and alerts a report covers, and when."""

    tenant: str | None
    branch: str | None
    date_from: date | None
    date_to: date | None


@dataclass(frozen=True, slots=True)
class HalfYear:
    """One half of a calendar year: [starts_on, ends_before)."""

    label: str
    starts_on: date
    ends_before: date


def parse_half(text: str, *, field: str = "half") -> HalfYear:
    """``2026H1`` -> January to June 2026 (422 naming ``field`` when malformed)."""
    match = HALF_PATTERN.match(text)
    year = int(match.group(1)) if match else 0
    if match is None or not 1970 <= year <= 9998:
        raise InvalidInput(
            f"{field} must look like 2026H1 or 2026H2 (a year from 1970), not {text!r}",
            extra={"field": field},
        )
    first = match.group(2) == "1"
    starts_on = date(year, 1, 1) if first else date(year, 7, 1)
    ends_before = date(year, 7, 1) if first else date(year + 1, 1, 1)
    return HalfYear(text, starts_on, ends_before)


def parse_buckets(texts: Sequence[str], *, field: str = "buckets") -> list[Bucket]:
    """``3bd`` (business days), ``15d`` (calendar days), ``8w`` (weeks), ascending."""
    buckets = []
    for text in texts:
        match = BUCKET_PATTERN.match(text)
        if match is None:
            raise InvalidInput(
                f"{field} items look like 3bd, 15d or 8w (1 to 999), not {text!r}",
                extra={"field": field},
            )
        count, unit = int(match.group(1)), match.group(2)
        period = (
            Period(count, Unit.BUSINESS_DAYS)
            if unit == "bd"
            else Period(count * 7 if unit == "w" else count)
        )
        buckets.append(Bucket(text, period))
    if not buckets or len({b.label for b in buckets}) != len(buckets):
        raise InvalidInput(f"{field} must name 1 or more distinct marks", extra={"field": field})
    return buckets


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _within(column: Any, date_from: date | None, date_to: date | None) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = [column.is_not(None)]
    if date_from is not None:
        conditions.append(column >= _instant(date_from))
    if date_to is not None:
        conditions.append(column < _instant(date_to))
    return and_(*conditions)


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _key(key: Any) -> Any:
    """The grouping column, or 'all' for a total (no GROUP BY: PostgreSQL refuses a constant)."""
    return literal_column(f"'{ALL_PRODUCTS}'") if key is None else key


def _grouped(query: Select[Any], key: Any) -> Select[Any]:
    return query if key is None else query.group_by(key).order_by(key)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _scope(tenant: str | None, branch: str | None) -> list[ColumnElement[bool]]:
    conditions = [TenantScope(tenant).condition(Complaint.tenant)]
    if branch is not None:
        conditions.append(Complaint.branch == branch)
    return conditions


def _case_counts(
    session: Session,
    key: Any,
    *,
    scope: list[ColumnElement[bool]],
    received: ColumnElement[bool],
    closed: ColumnElement[bool],
) -> list[CaseCounts]:
    """Received, closed and closed-on-time per value of ``key``, in one grouped query."""
    on_time = and_(closed, Complaint.closed_at <= Complaint.due_at)
    rows = session.execute(
        _grouped(
            select(_key(key), _count(received), _count(closed), _count(on_time)).where(
                *scope, or_(received, closed)
            ),
            key,
        )
    ).all()
    return [
        CaseCounts(
            key=str(row[0]),
            received=int(row[1]),
            closed=int(row[2]),
            closed_on_time=int(row[3]),
            deadline_hit_rate=_rate(int(row[3]), int(row[2])),
        )
        for row in rows
    ]


def _retention(
    session: Session,
    key: Any,
    *,
    window: ReportWindow,
) -> list[RetentionCounts]:
    """Routed alerts closed in the window per value of ``key``, and how many were retained."""
    tenant, branch, date_from, date_to = window
    outcomes = alerts.outcome_rows().subquery()
    conditions = [
        TenantScope(tenant).condition(AlertAssignment.tenant),
        AlertAssignment.status == AssignmentStatus.CLOSED.value,
        _within(AlertAssignment.closed_at, date_from, date_to),
    ]
    if branch is not None:
        conditions.append(AlertAssignment.branch == branch)
    retained = outcomes.c.outcome == AlertOutcome.RETAINED.value
    # A literal, not a parameter: PostgreSQL matches the grouped expression by its text.
    group = func.coalesce(key, literal_column("'unassigned'"))
    rows = session.execute(
        select(group.label("key"), func.count(), _count(retained))
        .join(outcomes, outcomes.c.alert_id == AlertAssignment.alert_id)
        .where(*conditions)
        .group_by(group)
        .order_by(group)
    ).all()
    return [
        RetentionCounts(
            key=str(row[0]),
            resolved=int(row[1]),
            retained=int(row[2]),
            retention_rate=_rate(int(row[2]), int(row[1])),
        )
        for row in rows
    ]


def casework_report(
    session: Session,
    *,
    tenant: str | None,
    branch: str | None,
    date_from: date | None,
    date_to: date | None,
) -> CaseworkReport:
    """Volumes, deadline hit rate, by branch and owner, root causes, repeat complaints and
    churn-alert retention of one tenant (one branch when given) over a window."""
    if date_from is not None and date_to is not None and date_from >= date_to:
        raise InvalidInput("from must be before to", extra={"field": "from"})
    scope = _scope(tenant, branch)
    received = _within(Complaint.received_at, date_from, date_to)
    closed = _within(Complaint.closed_at, date_from, date_to)

    def counts(key: Any) -> list[CaseCounts]:
        return _case_counts(session, key, scope=scope, received=received, closed=closed)

    totals = counts(None)
    total = (
        totals[0]
        if totals
        else CaseCounts(key="all", received=0, closed=0, closed_on_time=0, deadline_hit_rate=None)
    )
    by_status: dict[str, int] = dict(
        session.execute(
            select(Complaint.status, func.count())
            .where(*scope, received)
            .group_by(Complaint.status)
            .order_by(Complaint.status)
        ).all()
    )
    open_count = sum(n for s, n in by_status.items() if s not in ("closed", "rejected"))
    causes = session.execute(
        select(Complaint.root_cause, func.count().label("n"))
        .where(*scope, closed, Complaint.root_cause.is_not(None))
        .group_by(Complaint.root_cause)
        .order_by(func.count().desc(), Complaint.root_cause)
        .limit(TOP_ROOT_CAUSES)
    ).all()
    per_customer = (
        select(Complaint.customer_id, func.count().label("n"))
        .where(*scope, received)
        .group_by(Complaint.customer_id)
        .having(func.count() > 1)
        .subquery()
    )
    repeat = session.execute(
        select(func.count(), func.coalesce(func.sum(per_customer.c.n), 0))
    ).one()
    window = ReportWindow(tenant, branch, date_from, date_to)
    return CaseworkReport(
        tenant=tenant,
        date_from=date_from,
        date_to=date_to,
        branch=branch,
        received=total.received,
        closed=total.closed,
        open=open_count,
        closed_on_time=total.closed_on_time,
        deadline_hit_rate=total.deadline_hit_rate,
        by_status=by_status,
        by_branch=counts(Complaint.branch),
        by_owner=counts(Complaint.owner_id),
        top_root_causes=[RootCause(root_cause=str(c), complaints=int(n)) for c, n in causes],
        repeat_complaints=RepeatComplaints(customers=int(repeat[0]), complaints=int(repeat[1])),
        retention_by_reason=_retention(session, AlertAssignment.reason, window=window),
        retention_by_branch=_retention(session, AlertAssignment.branch, window=window),
        retention_by_assignee=_retention(session, AlertAssignment.assignee_id, window=window),
    )


def _return_lines(
    session: Session,
    *,
    tenant: str | None,
    half: HalfYear,
    product: Any,
) -> dict[str, dict[str, Any]]:
    """Received, closed, upheld, redress and outstanding per value of ``product``."""
    start, end = _instant(half.starts_on), _instant(half.ends_before)
    received = and_(Complaint.received_at >= start, Complaint.received_at < end)
    closed = _within(Complaint.closed_at, half.starts_on, half.ends_before)
    upheld = and_(closed, Complaint.outcome.in_(UPHELD))
    outstanding = and_(
        Complaint.received_at < end, or_(Complaint.closed_at.is_(None), Complaint.closed_at >= end)
    )
    redress = func.coalesce(
        func.sum(case((closed, func.coalesce(Complaint.redress_amount, 0.0)), else_=0.0)), 0.0
    )
    query = select(
        _key(product),
        _count(received),
        _count(closed),
        _count(upheld),
        redress,
        _count(outstanding),
    ).where(TenantScope(tenant).condition(Complaint.tenant), or_(received, closed, outstanding))
    rows = session.execute(_grouped(query, product)).all()
    return {
        str(row[0]): {
            "received": int(row[1]),
            "closed": int(row[2]),
            "upheld": int(row[3]),
            "redress_total": round(float(row[4]), 2),
            "outstanding": int(row[5]),
        }
        for row in rows
    }


def _closed_within(
    session: Session,
    *,
    tenant: str | None,
    half: HalfYear,
    clock: DeadlineClock,
    buckets: Sequence[Bucket],
) -> dict[str, dict[str, int]]:
    """Per product, how many complaints closed in the half-year were closed within each
    bucket; the business-day calendar needs each case's dates, so only those are read."""
    rows = session.execute(
        select(Complaint.product, Complaint.received_at, Complaint.closed_at).where(
            TenantScope(tenant).condition(Complaint.tenant),
            _within(Complaint.closed_at, half.starts_on, half.ends_before),
        )
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for product, received_at, closed_at in rows:
        for key in (product, ALL_PRODUCTS):
            line = counts.setdefault(key, {b.label: 0 for b in buckets})
            for bucket in buckets:
                if closed_at is not None and closed_at <= clock.end_of(received_at, bucket.period):
                    line[bucket.label] += 1
    return counts


def complaints_return(
    session: Session,
    *,
    tenant: str | None,
    half: HalfYear,
    clock: DeadlineClock,
    buckets: Sequence[Bucket],
) -> ComplaintsReturn:
    """The half-yearly return: received, closed within each bucket, upheld share, redress and
    outstanding, in total and by product."""
    per_product = _return_lines(session, tenant=tenant, half=half, product=Complaint.product)
    total = _return_lines(session, tenant=tenant, half=half, product=None).get(ALL_PRODUCTS)
    within = _closed_within(session, tenant=tenant, half=half, clock=clock, buckets=buckets)
    empty = {b.label: 0 for b in buckets}

    def line(product: str, counts: dict[str, Any] | None) -> ReturnLine:
        counts = counts or {
            "received": 0,
            "closed": 0,
            "upheld": 0,
            "redress_total": 0.0,
            "outstanding": 0,
        }
        return ReturnLine(
            product=product,
            closed_within=within.get(product, empty),
            upheld_share=_rate(counts["upheld"], counts["closed"]),
            **counts,
        )

    return ComplaintsReturn(
        tenant=tenant,
        half=half.label,
        starts_on=half.starts_on,
        ends_before=half.ends_before,
        buckets=[b.label for b in buckets],
        total=line(ALL_PRODUCTS, total),
        by_product=[line(product, counts) for product, counts in per_product.items()],
    )
