"""Reads and writes of alerts, their history and the outbox; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal, NotRequired, TypedDict

import orjson
from sqlalchemy import Connection, Select, Update, bindparam, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.alerts.states import AlertCause, AlertStatus, MessageStatus
from app.alerts.tables import (
    ACTIVE_ALERT,
    ACTIVE_TAGGED_ALERT,
    ACTIVE_UNTAGGED_ALERT,
    Alert,
    AlertEvent,
    alert_event_table,
    alert_table,
    digest_entry_table,
    outbox_attempt_table,
    outbox_message_table,
)
from app.db.bulk import one_of
from app.scoring.repository import TenantScope

# The churn path's lookups see churn alerts only: a need alert of the same customer is another
# alert (one active per customer and reason).
CHURN_ALERT = f"reason = '{AlertCause.CHURN.value}'"

# --- alerts on the scoring hot path -----------------------------------------------------------


@dataclass(slots=True)
class ActiveAlert:
    """What the scoring transaction needs to know about a customer's unresolved alert."""

    id: int
    customer_id: str
    status: str
    above_threshold: bool
    peak_probability: float
    score_count: int
    reasons: list[Any]
    actions: list[str]


class NewAlertRow(TypedDict):
    """One row to insert into ``alert`` when a customer first crosses the threshold."""

    customer_id: str
    reason: str
    status: str
    risk_band: str | None
    probability: float | None
    peak_probability: float | None
    above_threshold: bool
    reasons: list[Any]
    actions: list[str]
    model_version: str | None
    score_count: int
    opened_request_id: str
    last_request_id: str
    opened_at: datetime
    last_scored_at: datetime
    updated_at: datetime
    tenant: NotRequired[str | None]
    product: NotRequired[str | None]


class AlertScoreUpdate(TypedDict):
    """The latest score of an active alert (``b_id`` names the alert)."""

    b_id: int
    risk_band: str
    probability: float
    peak_probability: float
    above_threshold: bool
    reasons: list[Any]
    actions: list[str]
    model_version: str | None
    score_count: int
    last_request_id: str
    last_scored_at: datetime
    updated_at: datetime


class AlertEventRow(TypedDict):
    """One history entry."""

    alert_id: int
    kind: str
    at: datetime
    by: str | None
    status: str
    probability: float | None
    risk_band: str | None
    request_id: str | None
    note: str | None


class OutboxRow(TypedDict):
    """One message for the dispatcher."""

    id: str
    channel: str
    kind: str
    recipient: str | None
    alert_id: int | None
    payload: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    tenant: NotRequired[str | None]
    last_error: NotRequired[str | None]


class DigestEntryRow(TypedDict):
    """One alert waiting for a recipient's digest."""

    recipient: str
    alert_id: int
    created_at: datetime


@cache
def _active_alerts_query(many: bool, tenant: Literal["any", "none", "one"] = "any") -> Select[Any]:
    # Built once: every churn write runs it, and building a statement costs more than the
    # index lookup it asks for.
    t = alert_table.c
    customer = (
        t.customer_id.in_(bindparam("customer_ids", expanding=True))
        if many
        else t.customer_id == bindparam("customer_id")
    )
    return (
        select(
            t.id,
            t.customer_id,
            t.status,
            t.above_threshold,
            t.peak_probability,
            t.score_count,
            t.reasons,
            t.actions,
        )
        # Verbatim the partial index's predicate, so the lookup is answered from that index.
        .where(customer, text(ACTIVE_ALERT), text(CHURN_ALERT))
        .where(
            *(
                [t.tenant.is_(None)]
                if tenant == "none"
                else [t.tenant == bindparam("tenant")]
                if tenant == "one"
                else []
            )
        )
        # A fixed lock order keeps two transactions over the same customers from deadlocking.
        .order_by(t.id)
        # PostgreSQL: wait for a concurrent acknowledge/resolve/score, then see its outcome.
        # SQLite ignores it: its writers are serialised by the database lock.
        .with_for_update()
    )


def lock_active_alerts(
    connection: Connection, *, customer_ids: Sequence[str], tenant: TenantScope | None = None
) -> dict[str, ActiveAlert]:
    """The unresolved churn alerts of these customers (of one tenant), row-locked until commit.

    Every churn write runs this lookup, so on SQLite and PostgreSQL (psycopg) it goes to the
    driver with SQL written once per shape: SQLAlchemy's statement machinery cost ~85 µs for
    one customer, several times the indexed lookup itself. Other dialects take the Core query.
    """
    if not customer_ids:
        return {}
    which: Literal["any", "none", "one"] = (
        "any" if tenant is None else "none" if tenant.tenant is None else "one"
    )
    dialect = connection.dialect
    if dialect.name == "sqlite" or (dialect.name == "postgresql" and dialect.driver == "psycopg"):
        return _lock_active_alerts_on_driver(connection, customer_ids, which, tenant)
    params: dict[str, Any] = {}
    if tenant is not None and tenant.tenant is not None:
        params["tenant"] = tenant.tenant
    if len(customer_ids) == 1:
        params["customer_id"] = customer_ids[0]
        rows = connection.execute(_active_alerts_query(False, which), params)
    else:
        params["customer_ids"] = list(customer_ids)
        rows = connection.execute(_active_alerts_query(True, which), params)
    return {row.customer_id: _active_alert(*row) for row in rows}


def _active_alert(
    alert_id: int,
    customer_id: str,
    status: str,
    above_threshold: Any,
    peak_probability: float,
    score_count: int,
    reasons: Any,
    actions: Any,
) -> ActiveAlert:
    # JSON arrives as text from SQLite, parsed from PostgreSQL; booleans as 0/1 from SQLite.
    return ActiveAlert(
        id=alert_id,
        customer_id=customer_id,
        status=status,
        above_threshold=bool(above_threshold),
        peak_probability=peak_probability,
        score_count=score_count,
        reasons=orjson.loads(reasons) if isinstance(reasons, str | bytes) else reasons,
        actions=orjson.loads(actions) if isinstance(actions, str | bytes) else actions,
    )


def _lock_active_alerts_on_driver(
    connection: Connection,
    customer_ids: Sequence[str],
    which: Literal["any", "none", "one"],
    tenant: TenantScope | None,
) -> dict[str, ActiveAlert]:
    on_sqlite = connection.dialect.name == "sqlite"
    sql = _active_alerts_sql(on_sqlite, len(customer_ids) if on_sqlite else 0, which)
    tenant_value = [] if which != "one" or tenant is None else [tenant.tenant]
    # SQLite: one ? per id; PostgreSQL: the ids as one array parameter.
    params = (*customer_ids, *tenant_value) if on_sqlite else (list(customer_ids), *tenant_value)
    # The DBAPI cursor itself, inside the caller's transaction: even exec_driver_sql costs
    # SQLAlchemy's execution context, most of the lookup's time.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return {row[1]: _active_alert(*row) for row in rows}


@cache
def _active_alerts_sql(on_sqlite: bool, count: int, which: Literal["any", "none", "one"]) -> str:
    """The lookup's SQL for one dialect, number of ids (SQLite) and tenant filter."""
    placeholder = "?" if on_sqlite else "%s"
    customers = (
        f"customer_id IN ({', '.join('?' * count)})" if on_sqlite else "customer_id = ANY(%s)"
    )
    tenants = {"any": "", "none": " AND tenant IS NULL", "one": f" AND tenant = {placeholder}"}
    return (
        "SELECT id, customer_id, status, above_threshold, peak_probability, score_count, "
        f"reasons, actions FROM {alert_table.name} "
        # Verbatim the partial index's predicate, so the lookup is answered from an index.
        f"WHERE {customers} AND {ACTIVE_ALERT} AND {CHURN_ALERT}{tenants[which]} "
        # A fixed lock order keeps two transactions over the same customers from deadlocking;
        # PostgreSQL waits for a concurrent acknowledge/resolve/score, then sees its outcome.
        # SQLite has no row locks: its writers are serialised by the database lock.
        "ORDER BY id" + ("" if on_sqlite else " FOR UPDATE")
    )


def customers_with_active_alert(
    connection: Connection, *, customer_ids: Sequence[str], reason: str, tenant: TenantScope
) -> set[str]:
    """Which of these customers (of one tenant) have an active alert of ``reason``: a plain
    read, so that intake does not try (and skip) an insert per customer on every call."""
    if not customer_ids:
        return set()
    t = alert_table.c
    query = select(t.customer_id).where(
        one_of(connection, t.customer_id, customer_ids),
        # Verbatim the partial index's predicate, so the lookup is answered from that index.
        text(ACTIVE_ALERT),
        t.reason == reason,
        tenant.condition(Alert.tenant),
    )
    return set(connection.scalars(query))


def insert_new_alerts(connection: Connection, *, rows: Sequence[NewAlertRow]) -> dict[str, int]:
    """Insert one tenant's alerts of one reason, skipping customers whose active alert of
    that reason (and tenant) is already stored, or a concurrent transaction just made.

    Returns the ids of the alerts inserted, by customer; a missing customer lost the race and
    must be treated as having an active alert.
    """
    if not rows:
        return {}
    tenants = {row.get("tenant") for row in rows}
    if len(tenants) != 1:
        raise ValueError("insert_new_alerts takes the alerts of one tenant at a time")
    if len({row["reason"] for row in rows}) != 1:
        raise ValueError("insert_new_alerts takes the alerts of one reason at a time")
    tagged = tenants.pop() is not None
    statement = _insert_alert_statement(connection.dialect.name, tagged)
    result = connection.execute(statement, list(rows))
    return {row.customer_id: row.id for row in result}


@cache
def _insert_alert_statement(dialect: str, tagged: bool) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # The conflict target names the unique index the rows fall under (alert_tables.py).
    columns, where = (
        (["tenant", "reason", "customer_id"], ACTIVE_TAGGED_ALERT)
        if tagged
        else (["reason", "customer_id"], ACTIVE_UNTAGGED_ALERT)
    )
    return (
        insert(alert_table)
        .on_conflict_do_nothing(index_elements=columns, index_where=text(where))
        .returning(alert_table.c.id, alert_table.c.customer_id)
    )


def update_alert_scores(connection: Connection, *, updates: Sequence[AlertScoreUpdate]) -> None:
    """Record each alert's latest score (one executemany UPDATE)."""
    if updates:
        connection.execute(_update_scores_statement(), list(updates))


@cache
def _update_scores_statement() -> Update:
    # The alert's id is bound as ``b_id``: a bind named like a column it sets would clash.
    columns = [name for name in AlertScoreUpdate.__annotations__ if name != "b_id"]
    return (
        update(alert_table)
        .where(alert_table.c.id == bindparam("b_id"))
        .values({name: bindparam(name) for name in columns})
    )


def insert_alert_events(connection: Connection, *, rows: Sequence[AlertEventRow]) -> None:
    """Append history entries."""
    if rows:
        connection.execute(alert_event_table.insert(), list(rows))


def insert_outbox_messages(connection: Connection, *, rows: Sequence[OutboxRow]) -> None:
    """Queue messages for the dispatcher (same transaction as what they announce)."""
    if rows:
        connection.execute(outbox_message_table.insert(), list(rows))


def outbox_message_exists(connection: Connection, *, message_id: str) -> bool:
    """Whether a message with this id is in the outbox."""
    t = outbox_message_table.c
    return connection.scalar(select(func.count()).where(t.id == message_id)) == 1


def insert_digest_entries(connection: Connection, *, rows: Sequence[DigestEntryRow]) -> None:
    """Queue alerts for the recipients' next digests."""
    if rows:
        connection.execute(digest_entry_table.insert(), list(rows))


@dataclass(frozen=True, slots=True)
class Resolution:
    """A customer's latest resolved alert (of one reason), for the cooldown."""

    alert_id: int
    customer_id: str
    probability: float | None
    resolved_at: datetime


def latest_resolutions(
    connection: Connection,
    *,
    customer_ids: Sequence[str],
    since: datetime,
    tenant: TenantScope | None = None,
    reason: str = AlertCause.CHURN.value,
) -> dict[str, Resolution]:
    """Each customer's most recent alert of ``reason`` resolved at or after ``since`` (of one
    tenant)."""
    if not customer_ids:
        return {}
    t = alert_table.c
    query = (
        select(t.id, t.customer_id, t.probability, t.resolved_at)
        .where(
            one_of(connection, t.customer_id, customer_ids),
            t.status == AlertStatus.RESOLVED,
            t.resolved_at >= since,
            t.reason == reason,
        )
        .order_by(t.resolved_at, t.id)
    )
    if tenant is not None:
        query = query.where(tenant.condition(Alert.tenant))
    # Oldest first, so each customer ends with the latest.
    return {
        row.customer_id: Resolution(row.id, row.customer_id, row.probability, row.resolved_at)
        for row in connection.execute(query)
    }


# --- alert lifecycle (API) ---------------------------------------------------------------------


def get_alert(
    session: Session, *, alert_id: int, tenant: TenantScope | None = None
) -> Alert | None:
    """One alert, or None (also when it belongs to another tenant than ``tenant``)."""
    alert = session.get(Alert, alert_id, populate_existing=True)
    if alert is not None and tenant is not None and alert.tenant != tenant.tenant:
        return None
    return alert


@dataclass(frozen=True, slots=True)
class AlertRef:
    """What other domains need of an alert to route it: who, whose, and where it is."""

    id: int
    customer_id: str
    tenant: str | None
    status: str
    owner: str | None
    opened_at: datetime
    reason: str = AlertCause.CHURN.value


def _ref(alert: Alert) -> AlertRef:
    return AlertRef(
        id=alert.id,
        customer_id=alert.customer_id,
        tenant=alert.tenant,
        status=alert.status,
        owner=alert.owner,
        opened_at=alert.opened_at,
        reason=alert.reason,
    )


def open_alert_refs(
    session: Session, *, after_id: int, limit: int, tenant: TenantScope | None = None
) -> list[AlertRef]:
    """Alerts still open (nobody acknowledged them), of one tenant or all, by id after
    ``after_id``."""
    query = (
        select(Alert)
        .where(Alert.status == AlertStatus.OPEN, Alert.id > after_id)
        .order_by(Alert.id)
        .limit(limit)
    )
    if tenant is not None:
        query = query.where(tenant.condition(Alert.tenant))
    return [_ref(alert) for alert in session.scalars(query)]


def alert_refs(session: Session, *, alert_ids: Sequence[int]) -> dict[int, AlertRef]:
    """These alerts by id (missing ones left out)."""
    if not alert_ids:
        return {}
    query = select(Alert).where(Alert.id.in_(alert_ids))
    return {alert.id: _ref(alert) for alert in session.scalars(query)}


def alert_history(session: Session, *, alert_id: int) -> list[AlertEvent]:
    """An alert's history, oldest first."""
    query = select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id)
    return list(session.scalars(query))


def list_alerts(
    session: Session,
    *,
    status: AlertStatus | None = None,
    outcome: str | None = None,
    risk_band: str | None = None,
    owner: str | None = None,
    customer_id: str | None = None,
    opened_before: datetime | None = None,
    opened_after: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    tenant: TenantScope | None = None,
    reason: str | None = None,
) -> tuple[list[Alert], int]:
    """One page of alerts, oldest opened first (the work queue order), and the total."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    conditions = [] if tenant is None else [tenant.condition(Alert.tenant)]
    if status is not None:
        conditions.append(Alert.status == status)
    if outcome is not None:
        conditions.append(Alert.outcome == outcome)
    if risk_band is not None:
        conditions.append(Alert.risk_band == risk_band)
    if owner is not None:
        conditions.append(Alert.owner == owner)
    if reason is not None:
        conditions.append(Alert.reason == reason)
    if customer_id is not None:
        conditions.append(Alert.customer_id == customer_id)
    if opened_before is not None:
        conditions.append(Alert.opened_at < opened_before)
    if opened_after is not None:
        conditions.append(Alert.opened_at >= opened_after)
    total = session.scalar(select(func.count()).select_from(Alert).where(*conditions)) or 0
    page = session.scalars(
        select(Alert)
        .where(*conditions)
        .order_by(Alert.opened_at, Alert.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(page), total


def transition_alert(
    session: Session,
    *,
    alert_id: int,
    from_status: AlertStatus,
    owner: str | None,
    values: dict[str, Any],
    tenant: TenantScope | None = None,
) -> bool:
    """Move an alert on if it is still in ``from_status`` (and owned by ``owner`` when given).

    A conditional UPDATE: the check and the change are one statement, so two staff members
    acting at once cannot both succeed, on either backend. Returns whether it applied.
    """
    t = alert_table.c
    statement = update(alert_table).where(t.id == alert_id, t.status == from_status)
    if owner is not None:
        statement = statement.where(t.owner == owner)
    if tenant is not None:
        statement = statement.where(tenant.condition(Alert.tenant))
    result = session.connection().execute(statement.values(values))
    return bool(result.rowcount == 1)


def add_alert_event(session: Session, *, row: AlertEventRow) -> None:
    """Append one history entry in the session's transaction."""
    session.connection().execute(alert_event_table.insert(), [row])


# --- outbox (dispatcher) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """An outbox message this dispatcher holds until ``claimed_until``."""

    id: str
    channel: str
    kind: str
    recipient: str | None
    alert_id: int | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    tenant: str | None = None


def claim_messages(
    connection: Connection,
    *,
    channels: Sequence[str],
    dispatcher: str,
    now: datetime,
    claimed_until: datetime,
    limit: int,
) -> list[ClaimedMessage]:
    """Claim up to ``limit`` due messages: no other dispatcher takes them until the lease ends.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets concurrent dispatchers claim disjoint rows
    without waiting for each other. SQLite: the UPDATE takes the database's write lock, so
    claims are serialised. Either way a claim increments ``attempts``, so a message that kills
    its dispatcher is not retried forever.
    """
    if not channels:
        return []
    t = outbox_message_table.c
    due: Select[tuple[str]] = (
        select(t.id)
        .where(
            t.status == MessageStatus.PENDING,
            t.channel.in_(channels),
            t.next_attempt_at <= now,
            or_(t.claimed_until.is_(None), t.claimed_until <= now),
        )
        .order_by(t.next_attempt_at, t.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(outbox_message_table)
        .where(t.id.in_(due.scalar_subquery()))
        .values(claimed_until=claimed_until, claimed_by=dispatcher, attempts=t.attempts + 1)
        .returning(
            t.id,
            t.channel,
            t.kind,
            t.recipient,
            t.alert_id,
            t.payload,
            t.attempts,
            t.created_at,
            t.tenant,
        )
    )
    rows = connection.execute(statement).all()
    messages = [
        ClaimedMessage(
            id=row.id,
            channel=row.channel,
            kind=row.kind,
            recipient=row.recipient,
            alert_id=row.alert_id,
            payload=row.payload,
            attempts=row.attempts,
            created_at=row.created_at,
            tenant=row.tenant,
        )
        for row in rows
    ]
    # RETURNING order is unspecified; deliver oldest first.
    return sorted(messages, key=lambda m: (m.created_at, m.id))


def record_attempt(
    connection: Connection,
    *,
    message_id: str,
    number: int,
    dispatcher: str,
    started_at: datetime,
    finished_at: datetime,
    error: str | None,
) -> None:
    """Keep one delivery attempt (``error`` None means it succeeded)."""
    connection.execute(
        outbox_attempt_table.insert(),
        [
            {
                "message_id": message_id,
                "number": number,
                "dispatcher": dispatcher,
                "started_at": started_at,
                "finished_at": finished_at,
                "ok": error is None,
                "error": None if error is None else error[:500],
            }
        ],
    )


def mark_delivered(connection: Connection, *, message_id: str, delivered_at: datetime) -> None:
    """The receiver took the message: never send it again."""
    t = outbox_message_table.c
    connection.execute(
        update(outbox_message_table)
        .where(t.id == message_id, t.status == MessageStatus.PENDING)
        .values(
            status=MessageStatus.DELIVERED,
            delivered_at=delivered_at,
            claimed_until=None,
            last_error=None,
        )
    )


def schedule_retry(
    connection: Connection,
    *,
    message_id: str,
    dispatcher: str,
    next_attempt_at: datetime,
    error: str,
    give_up: bool,
) -> None:
    """Release a failed message for a later attempt, or mark it failed for good."""
    t = outbox_message_table.c
    connection.execute(
        update(outbox_message_table)
        # Only while this dispatcher still holds it: after a lease expiry it is another's.
        .where(t.id == message_id, t.status == MessageStatus.PENDING, t.claimed_by == dispatcher)
        .values(
            status=MessageStatus.FAILED if give_up else MessageStatus.PENDING,
            next_attempt_at=next_attempt_at,
            claimed_until=None,
            last_error=error[:500],
        )
    )


def renew_claims(
    connection: Connection,
    *,
    message_ids: Sequence[str],
    dispatcher: str,
    now: datetime,
    claimed_until: datetime,
) -> set[str]:
    """Extend this dispatcher's lease on the messages it still holds; return their ids.

    A message whose lease ran out (``claimed_until <= now``), or that another dispatcher has
    claimed since, is not renewed and not returned: its holder must not send it.
    """
    if not message_ids:
        return set()
    t = outbox_message_table.c
    result = connection.execute(
        update(outbox_message_table)
        .where(
            t.id.in_(message_ids),
            t.status == MessageStatus.PENDING,
            t.claimed_by == dispatcher,
            t.claimed_until > now,
        )
        .values(claimed_until=claimed_until)
        .returning(t.id)
    )
    return {str(message_id) for message_id in result.scalars()}


def release_claims(connection: Connection, *, message_ids: Sequence[str], dispatcher: str) -> int:
    """Give back claimed messages that were not tried (a graceful stop mid-batch)."""
    if not message_ids:
        return 0
    t = outbox_message_table.c
    result = connection.execute(
        update(outbox_message_table)
        .where(
            t.id.in_(message_ids),
            t.status == MessageStatus.PENDING,
            t.claimed_by == dispatcher,
        )
        .values(claimed_until=None, attempts=t.attempts - 1)
    )
    return int(result.rowcount)


def requeue_failed(connection: Connection, *, now: datetime) -> int:
    """Put messages that ran out of attempts back in the queue, with a fresh count."""
    t = outbox_message_table.c
    result = connection.execute(
        update(outbox_message_table)
        .where(t.status == MessageStatus.FAILED)
        .values(status=MessageStatus.PENDING, attempts=0, next_attempt_at=now, claimed_until=None)
    )
    return int(result.rowcount)


def outbox_counts(connection: Connection) -> dict[str, int]:
    """Messages by status."""
    t = outbox_message_table.c
    rows = connection.execute(select(t.status, func.count()).group_by(t.status)).all()
    return {str(status): int(count) for status, count in rows}


# --- e-mail digests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One alert listed in a digest."""

    alert_id: int
    customer_id: str
    status: str
    risk_band: str
    probability: float
    reasons: list[Any]
    actions: list[str]
    opened_at: datetime


def due_digest_recipients(connection: Connection, *, cutoff: datetime) -> list[str]:
    """Recipients whose oldest undigested alert was queued at or before ``cutoff``."""
    t = digest_entry_table.c
    query = (
        select(t.recipient)
        .where(t.message_id.is_(None))
        .group_by(t.recipient)
        .having(func.min(t.created_at) <= cutoff)
        .order_by(t.recipient)
    )
    return list(connection.scalars(query))


def claim_digest_entries(
    connection: Connection, *, recipient: str, message_id: str
) -> list[DigestItem]:
    """Assign a recipient's undigested entries to ``message_id`` and return their alerts.

    The UPDATE is the claim: a concurrent composer waits for it (PostgreSQL row locks, SQLite
    database lock) and then finds the entries taken, so each alert is listed in one digest.
    """
    t = digest_entry_table.c
    connection.execute(
        update(digest_entry_table)
        .where(t.recipient == recipient, t.message_id.is_(None))
        .values(message_id=message_id)
    )
    a = alert_table.c
    query = (
        select(
            a.id,
            a.customer_id,
            a.status,
            a.risk_band,
            a.probability,
            a.reasons,
            a.actions,
            a.opened_at,
        )
        .join(digest_entry_table, t.alert_id == a.id)
        .where(t.message_id == message_id)
        .order_by(a.opened_at, a.id)
    )
    return [
        DigestItem(
            alert_id=row.id,
            customer_id=row.customer_id,
            status=row.status,
            risk_band=row.risk_band,
            probability=row.probability,
            reasons=row.reasons,
            actions=row.actions,
            opened_at=row.opened_at,
        )
        for row in connection.execute(query)
    ]
