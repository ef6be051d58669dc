"""Lifecycle stages kept with the record: facts read from the running aggregates, the rules
of app/customers/lifecycle.py applied, changes stored as transitions. Callers own the
transaction: the intake re-evaluates the customers of its new events in its own, so a stage
never lags the events acknowledged."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Subquery, and_, bindparam, func, or_, select

from app.customers.features import CLOSED, OPENED, Kind
from app.customers.lifecycle import (
    LifecycleRules,
    LifecycleStage,
    RecordFacts,
    StageSource,
    evaluate,
)
from app.customers.tables import (
    UNTAGGED_KEY,
    customer_month_latest_table,
    customer_month_table,
    customer_stage_table,
    customer_stage_transition_table,
)
from app.db.bulk import insert_rows, one_of

# Customers evaluated per statement (the IN lists of the reads).
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Risk:
    """A churn assessment's verdict for the stage rules."""

    at_risk: bool
    assessed_at: datetime


@dataclass(frozen=True, slots=True)
class Transition:
    """One stage change written."""

    customer_id: str
    from_stage: LifecycleStage | None
    to_stage: LifecycleStage
    at: datetime
    cause: str


def tenant_key(tenant: str | None) -> str:
    """The key the aggregates and stages store a tenant under ('' when untagged)."""
    return UNTAGGED_KEY if tenant is None else tenant


def _since_date(text: str | None) -> datetime | None:
    """A profile's customer_since (an ISO date or time) as a UTC time."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text[:10])
        except ValueError:
            return None
        parsed = datetime(day.year, day.month, day.day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Facts:
    """Facts of one customer gathered from the aggregate rows."""

    since: tuple[int, datetime, str | None] | None = None
    products: dict[str, tuple[int, datetime, str | None]] | None = None
    opened: list[datetime] | None = None
    last_activity_at: datetime | None = None

    def facts(self, at_risk: bool, risk_assessed_at: datetime | None) -> RecordFacts:
        current = (self.products or {}).values()
        opened_times = self.opened or []
        closed = [at for _, at, state in current if state == CLOSED]
        return RecordFacts(
            customer_since=_since_date(self.since[2]) if self.since else None,
            first_opened_at=min(opened_times, default=None),
            last_opened_at=max(opened_times, default=None),
            open_products=sum(1 for _, _, state in current if state == OPENED),
            closed_products=len(closed),
            last_closed_at=max(closed, default=None),
            last_activity_at=self.last_activity_at,
            at_risk=at_risk,
            risk_assessed_at=risk_assessed_at,
        )


def _gather(connection: Connection, key: str, customer_ids: Sequence[str]) -> dict[str, _Facts]:
    """Product states, the relationship's start and the last activity of each customer."""
    latest = customer_month_latest_table.c
    gathered = {customer_id: _Facts(products={}, opened=[]) for customer_id in customer_ids}
    rows = connection.execute(
        select(
            latest.customer_id,
            latest.kind,
            latest.key,
            latest.month,
            latest.occurred_at,
            latest.text,
        ).where(
            latest.tenant == key,
            one_of(connection, latest.customer_id, customer_ids),
            or_(
                latest.kind == Kind.PRODUCT,
                and_(latest.kind == Kind.PROFILE, latest.key == "customer_since"),
            ),
        )
    )
    for customer_id, kind, name, month, occurred_at, text in rows:
        facts = gathered[customer_id]
        value = (month, occurred_at, text)
        if kind == Kind.PROFILE:
            if facts.since is None or value[:2] >= facts.since[:2]:
                facts.since = value
            continue
        products = facts.products if facts.products is not None else {}
        kept = products.get(name)
        if kept is None or value[:2] >= kept[:2]:
            products[name] = value
        if text == OPENED and facts.opened is not None:
            facts.opened.append(occurred_at)
    months = customer_month_table.c
    for customer_id, last in connection.execute(
        select(months.customer_id, func.max(months.last_activity_at))
        .where(months.tenant == key, one_of(connection, months.customer_id, customer_ids))
        .group_by(months.customer_id)
    ):
        gathered[customer_id].last_activity_at = last
    return gathered


def _stored(connection: Connection, key: str, customer_ids: Sequence[str]) -> dict[str, Any]:
    stage = customer_stage_table.c
    return {
        row.customer_id: row
        for row in connection.execute(
            select(customer_stage_table).where(
                stage.tenant == key, one_of(connection, stage.customer_id, customer_ids)
            )
        )
    }


def _activity_matters(stored: Any, now: datetime) -> bool:
    """Whether new activity may move a stored stage: it wakes a dormant customer; any other
    stage reads no activity, or only its absence, until its review time."""
    if stored is None or stored.stage == LifecycleStage.DORMANT.value:
        return True
    return stored.review_at is not None and stored.review_at <= now


def refresh_stages(
    connection: Connection,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    now: datetime,
    rules: LifecycleRules,
    source: StageSource,
    risks: Mapping[str, Risk] | None = None,
    activity_only: Collection[str] = (),
) -> list[Transition]:
    """Re-evaluate customers' stages (stored ids) at ``now``; store what changed. ``risks``:
    the verdicts of churn assessments just stored (else the stored verdict holds).
    ``activity_only``: customers whose new events are all activity, which can only wake a
    dormant customer (every other stage reads no activity, or only its absence)."""
    written: list[Transition] = []
    unique = sorted(set(customer_ids))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        written.extend(
            _refresh(
                connection, tenant_key(tenant), chunk, now, rules, source, risks, activity_only
            )
        )
    return written


def _refresh(
    connection: Connection,
    key: str,
    customer_ids: Sequence[str],
    now: datetime,
    rules: LifecycleRules,
    source: StageSource,
    risks: Mapping[str, Risk] | None,
    activity_only: Collection[str] = (),
) -> list[Transition]:
    stored = _stored(connection, key, customer_ids)
    if activity_only:
        customer_ids = [
            c
            for c in customer_ids
            if c not in activity_only or _activity_matters(stored.get(c), now)
        ]
        if not customer_ids:
            return []
    gathered = _gather(connection, key, customer_ids)
    upserts: list[dict[str, Any]] = []
    transitions: list[Transition] = []
    for customer_id in customer_ids:
        before = stored.get(customer_id)
        risk = (risks or {}).get(customer_id)
        at_risk = risk.at_risk if risk else bool(before is not None and before.at_risk)
        assessed_at = risk.assessed_at if risk else (before.risk_assessed_at if before else None)
        verdict = evaluate(gathered[customer_id].facts(at_risk, assessed_at), rules, now=now)
        changed = before is None or before.stage != verdict.stage.value
        if (
            before is not None
            and not changed
            and before.at_risk == at_risk
            and before.risk_assessed_at == assessed_at
            and before.review_at == verdict.review_at
        ):
            continue
        since = before.since if before is not None and not changed else verdict.since
        if changed:
            # Never before the stage it follows, never in the future.
            floor = before.since if before is not None else verdict.since
            since = min(max(verdict.since, floor), now)
            transitions.append(
                Transition(
                    customer_id,
                    LifecycleStage(before.stage) if before is not None else None,
                    verdict.stage,
                    since,
                    verdict.cause.value,
                )
            )
        upserts.append(
            {
                "tenant": key,
                "customer_id": customer_id,
                "stage": verdict.stage.value,
                "since": since,
                "at_risk": at_risk,
                "risk_assessed_at": assessed_at,
                "review_at": verdict.review_at,
                "updated_at": now,
            }
        )
    _write(connection, upserts, transitions, key=key, source=source, now=now)
    return transitions


def _write(
    connection: Connection,
    upserts: list[dict[str, Any]],
    transitions: list[Transition],
    *,
    key: str,
    source: StageSource,
    now: datetime,
) -> None:
    stage = customer_stage_table.c

    def replace(insert: Any) -> Any:
        return insert.on_conflict_do_update(
            index_elements=[stage.tenant, stage.customer_id],
            set_={
                name: insert.excluded[name]
                for name in (
                    "stage",
                    "since",
                    "at_risk",
                    "risk_assessed_at",
                    "review_at",
                    "updated_at",
                )
            },
        )

    insert_rows(connection, customer_stage_table, upserts, on_conflict=replace)
    insert_rows(
        connection,
        customer_stage_transition_table,
        [
            {
                "tenant": key,
                "customer_id": t.customer_id,
                "from_stage": t.from_stage.value if t.from_stage else None,
                "to_stage": t.to_stage.value,
                "at": t.at,
                "cause": t.cause,
                "source": source.value,
                "recorded_at": now,
            }
            for t in transitions
        ],
    )


def sweep_stages(
    connection: Connection,
    *,
    now: datetime,
    rules: LifecycleRules,
    tenants: Sequence[str | None] | None = None,
    batch: int = CHUNK,
) -> list[Transition]:
    """Re-evaluate every customer (of ``tenants``; None: all) whose review time has come by
    ``now``: the new become active, the quiet dormant."""
    stage = customer_stage_table.c
    conditions = [stage.review_at <= now]
    if tenants is not None:
        conditions.append(stage.tenant.in_([tenant_key(t) for t in tenants]))
    due = connection.execute(
        select(stage.tenant, stage.customer_id)
        .where(*conditions)
        .order_by(stage.tenant, stage.customer_id)
    ).all()
    by_tenant: dict[str, list[str]] = {}
    for key, customer_id in due:
        by_tenant.setdefault(key, []).append(customer_id)
    written: list[Transition] = []
    for key, ids in by_tenant.items():
        for start in range(0, len(ids), batch):
            written.extend(
                _refresh(
                    connection, key, ids[start : start + batch], now, rules, StageSource.SWEEP, None
                )
            )
    return written


def read_stage(
    connection: Connection, *, tenant: str | None, customer_ids: Sequence[str]
) -> tuple[Any | None, list[Any]]:
    """A customer's current stage row (any of its stored id forms) and its transitions,
    oldest first."""
    key = tenant_key(tenant)
    stage = customer_stage_table.c
    current = connection.execute(
        select(customer_stage_table)
        .where(stage.tenant == key, stage.customer_id.in_(customer_ids))
        .order_by(stage.updated_at.desc())
        .limit(1)
    ).first()
    moves = customer_stage_transition_table.c
    history = connection.execute(
        select(customer_stage_transition_table)
        .where(moves.tenant == key, moves.customer_id.in_(customer_ids))
        .order_by(moves.at, moves.id)
    ).all()
    return current, list(history)


@dataclass(frozen=True, slots=True)
class KnownStage:
    """A customer's stage and, when stored, the churn verdict it was last told."""

    stage: LifecycleStage
    at_risk: bool | None  # None: evaluated from the aggregates, nothing stored yet


# The stage on record of a customer under any of its id forms, built once: a score by id reads
# it on every call.
_STORED_STAGE = (
    select(customer_stage_table.c.stage, customer_stage_table.c.at_risk)
    .where(
        customer_stage_table.c.tenant == bindparam("tenant"),
        customer_stage_table.c.customer_id.in_(bindparam("customer_ids", expanding=True)),
    )
    .order_by(customer_stage_table.c.updated_at.desc())
    .limit(1)
)


def current_stage(
    connection: Connection,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    now: datetime,
    rules: LifecycleRules,
) -> KnownStage | None:
    """A customer's stage (any of its stored id forms): as stored, else evaluated from its
    aggregates (a record from before stages were kept); None without a product or profile."""
    key = tenant_key(tenant)
    stored = connection.execute(
        _STORED_STAGE, {"tenant": key, "customer_ids": list(customer_ids)}
    ).first()
    if stored is not None:
        return KnownStage(LifecycleStage(stored.stage), bool(stored.at_risk))
    gathered = _gather(connection, key, customer_ids)
    for facts in gathered.values():
        if facts.products or facts.since is not None:
            return KnownStage(evaluate(facts.facts(False, None), rules, now=now).stage, None)
    return None


def stages_of_record(*, tenant: str | None) -> Subquery:
    """Every customer's stored stage in a tenant as a subquery (``customer_id``, ``stage``):
    the book a campaign targets."""
    stage = customer_stage_table.c
    return (
        select(stage.customer_id, stage.stage)
        .where(stage.tenant == tenant_key(tenant))
        .subquery("stage_of_record")
    )
