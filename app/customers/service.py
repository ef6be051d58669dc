"""Event intake use cases: validate a call's events, store the new ones, read a trail.

One call is all or nothing: every event is validated before anything is stored, and a call
with a bad event gets a 422 listing every bad field (``events[3].amount``). Nothing here
knows about HTTP; ``cvm ingest`` validates rows with the same models and stores them with the
same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Connection, Subquery, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.alerts.service import NeedAlert, open_need_alerts
from app.config import Settings
from app.customers import repository
from app.customers.features import (
    DEFAULT_MATERIAL_OUTFLOW,
    Feature,
    LatestValue,
    MonthCounts,
    TrailEvent,
    aggregate,
    derive_features,
    is_activity,
    material_reason,
    month_label,
    parse_month,
    value_features,
)
from app.customers.lifecycle import DEFAULT_LIFECYCLE, LifecycleRules, StageSource
from app.customers.needs import (
    DEFAULT_NEEDS,
    NO_NEEDS,
    Need,
    NeedRules,
    customer_needs,
    is_salary,
)
from app.customers.repository import (
    EventRow,
    campaign_responses,
    insert_new_events,
    latest_balance_totals,
    latest_month,
    list_events,
    queue_rescoring,
    read_book_months,
    read_months,
    update_months,
)
from app.customers.schemas import (
    COMMON_FIELDS,
    Event,
    EventBase,
    EventPage,
    EventsRequest,
    EventType,
    IntakeResult,
    MonthFeatures,
    StoredEvent,
)
from app.customers.stages import Transition, refresh_stages, sweep_stages
from app.customers.tables import CustomerEvent
from app.db.session import writing
from app.errors import BatchTooLarge, DatabaseUnavailable, InvalidInput, NotFound
from app.scoring.repository import TenantScope
from app.security.pseudonyms import Pseudonymizer

EVENT = TypeAdapter(Event)
EVENTS = TypeAdapter(list[Event])
# Problems listed in a 422's message; the body's ``errors`` lists every one.
MESSAGE_FIELDS = 5


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field of one event."""

    field: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        """The error as the problem body lists it."""
        return {"field": self.field, "message": self.message, "type": self.type}


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """What a call's events are checked against, from the settings."""

    future_tolerance_s: float
    max_events: int
    material_outflow: float = DEFAULT_MATERIAL_OUTFLOW
    lifecycle: LifecycleRules = DEFAULT_LIFECYCLE
    needs: NeedRules = DEFAULT_NEEDS

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeRules:
        """The rules a deployment configured: one place for the API, CLI and consumer."""
        return cls(
            future_tolerance_s=settings.event_future_tolerance_s,
            max_events=settings.max_events_per_call,
            material_outflow=settings.material_outflow_eur,
            lifecycle=LifecycleRules.from_settings(settings),
            needs=NeedRules.from_settings(settings),
        )

    def context(self, now: datetime) -> dict[str, Any]:
        """The validation context: the latest occurrence time accepted now."""
        return {
            "latest_occurrence": now + timedelta(seconds=self.future_tolerance_s),
            "future_tolerance_s": self.future_tolerance_s,
        }


@dataclass(frozen=True, slots=True)
class EventIntake:
    """Everything an intake call needs, from the app's state."""

    session_factory: sessionmaker[Session]
    rules: IntakeRules
    pseudonymizer: Pseudonymizer | None

    def take(self, body: bytes, *, tenant: str | None, request_id: str) -> IntakeResult:
        """Validate a raw JSON body and store its new events in one transaction."""
        received_at = datetime.now(UTC)
        events = parse_events(body, rules=self.rules, now=received_at)
        with self.session_factory() as session:
            return record_events(
                session,
                events=events,
                tenant=tenant,
                request_id=request_id,
                received_at=received_at,
                pseudonymizer=self.pseudonymizer,
                material_outflow=self.rules.material_outflow,
                lifecycle=self.rules.lifecycle,
                needs=self.rules.needs,
            )


def parse_events(body: bytes, *, rules: IntakeRules, now: datetime) -> Sequence[EventBase]:
    """Every event of a raw JSON body, objects or columns, or a 422 naming each bad field."""
    context = rules.context(now)
    try:
        request = EventsRequest.model_validate_json(body, context=context)
    except ValidationError as error:
        raise invalid_events(_field_errors(error, prefix="")) from error
    if request.events is not None:
        events: Sequence[EventBase] = request.events
        count = len(events)
    else:
        columns: dict[str, list[Any] | None] = dict(request.columns.__dict__)
        count = len(columns["event_id"] or ())
    if count > rules.max_events:
        raise BatchTooLarge(
            f"{count} events in one call; the limit is {rules.max_events}",
            extra={"limit": rules.max_events},
        )
    if request.events is not None:
        return events
    return _events_of_columns(columns, context)


def _events_of_columns(
    columns: dict[str, list[Any] | None], context: dict[str, Any]
) -> Sequence[EventBase]:
    """Column-typed values as events, each checked by its type's model (fields it needs,
    fields that do not apply); errors name the column and row: ``columns.amount[3]``."""
    given = [(name, values) for name, values in columns.items() if values is not None]
    rows = [
        {name: value for (name, _), value in zip(given, values, strict=True) if value is not None}
        for values in zip(*(values for _, values in given), strict=True)
    ]
    try:
        return EVENTS.validate_python(rows, strict=True, context=context)
    except ValidationError as error:
        raise invalid_events(_field_errors(error, prefix="columns")) from error


def check_rows(
    rows: Sequence[dict[str, Any]], *, rules: IntakeRules, now: datetime
) -> tuple[list[EventBase], list[tuple[int, FieldError]]]:
    """Rows of a file (strings and numbers as read) as events; each bad row with its first
    problem. Lax: ``"12.5"`` is an amount here, as a CSV holds it."""
    context = rules.context(now)
    events: list[EventBase] = []
    rejected: list[tuple[int, FieldError]] = []
    for index, row in enumerate(rows):
        try:
            events.append(EVENT.validate_python(row, strict=False, context=context))
        except ValidationError as error:
            rejected.append((index, _field_errors(error, prefix="")[0]))
    return events, rejected


def record_events(
    session: Session,
    *,
    events: Sequence[EventBase],
    tenant: str | None,
    request_id: str,
    received_at: datetime,
    pseudonymizer: Pseudonymizer | None,
    material_outflow: float = DEFAULT_MATERIAL_OUTFLOW,
    lifecycle: LifecycleRules = DEFAULT_LIFECYCLE,
    needs: NeedRules = NO_NEEDS,
) -> IntakeResult:
    """Store the events not stored yet for ``tenant`` (one commit): with them, their
    customer-months' aggregates, the lifecycle stages they change, the re-assessments their
    material events call for and the need alerts the ``needs`` rules find; count the others."""
    writing(session)  # it reads (stored ids, stages, trails) before it writes
    rows = event_rows(
        events,
        tenant=tenant,
        request_id=request_id,
        received_at=received_at,
        pseudonymizer=pseudonymizer,
    )
    try:
        connection = session.connection()
        new_rows = insert_new_events(connection, rows=rows)
        # The running aggregates and the rescoring queue move with the events, in the same
        # transaction: what is acknowledged is aggregated and will be re-assessed.
        trail = [
            (r["event_id"], TrailEvent(r["customer_id"], r["type"], r["occurred_at"], r["payload"]))
            for r in new_rows
        ]
        deltas, latest = aggregate(event for _, event in trail)
        update_months(connection, tenant=tenant, deltas=deltas, latest=latest)
        pending = material_events(trail, outflow_threshold=material_outflow)
        queue_rescoring(connection, tenant=tenant, pending=pending, at=received_at)
        shaping = [event for _, event in trail if shapes_stage(event)]
        refresh_stages(
            connection,
            tenant=tenant,
            customer_ids=[event.customer_id for event in shaping],
            now=received_at,
            rules=lifecycle,
            source=StageSource.INTAKE,
            activity_only={e.customer_id for e in shaping}
            - {e.customer_id for e in shaping if e.type in STAGE_EVENTS},
        )
        # In this transaction, which already holds the write lock: a second transaction
        # reading then writing would race other writers on SQLite (busy).
        open_need_alerts(
            connection,
            tenant=tenant,
            needs=[
                NeedAlert(n.customer_id, n.cause, n.product, n.event_id, n.text)
                for n in find_needs(connection, tenant=tenant, trail=trail, rules=needs)
            ],
            request_id=request_id,
            now=received_at,
            cooldown=needs.cooldown,
        )
        session.commit()
    except SQLAlchemyError as error:
        session.rollback()
        raise DatabaseUnavailable(
            "the database is unavailable; no event of this call was stored, retry it"
        ) from error
    new = len(new_rows)
    return IntakeResult(
        received=len(events), new=new, duplicates=len(events) - new, received_at=received_at
    )


def find_needs(
    connection: Connection,
    *,
    tenant: str | None,
    trail: Sequence[tuple[str, TrailEvent]],
    rules: NeedRules,
) -> list[Need]:
    """The needs the rules find for the customers of these new events, each as of its latest
    new event: the stored events each rule reads, then the rules (app/customers/needs.py)."""
    if not trail or not rules.any:
        return []
    as_of: dict[str, datetime] = {}
    for _, event in trail:
        known = as_of.get(event.customer_id)
        as_of[event.customer_id] = (
            event.occurred_at if known is None else max(known, event.occurred_at)
        )
    customers = sorted(as_of)
    earliest, latest = min(as_of.values()), max(as_of.values())
    stored: dict[str, dict[str, TrailEvent]] = {customer: {} for customer in customers}
    spent: dict[str, float] = {}

    def keep(rows: Iterable[tuple[str, TrailEvent]]) -> None:
        for event_id, event in rows:
            stored.setdefault(event.customer_id, {})[event_id] = event

    if (idle := rules.idle_inflow) is not None:
        credits, spent = repository.idle_candidates(
            connection,
            tenant=tenant,
            customer_ids=customers,
            since=earliest - idle.lookback,
            until=latest - idle.idle,
            min_amount=idle.amount,
        )
        keep(credits)
    if (maturing := rules.deposit_maturing) is not None:
        keep(
            repository.term_accounts(
                connection,
                tenant=tenant,
                customer_ids=customers,
                first=earliest.date(),
                last=latest.date() + timedelta(days=maturing.window_days),
            )
        )
    if (salary := rules.first_salary) is not None:
        paid = [event for _, event in trail if is_salary(event, salary)]
        keep(
            repository.transactions(
                connection,
                tenant=tenant,
                customer_ids=sorted({event.customer_id for event in paid}),
                direction="credit",
                category=salary.category,
                until=max((event.occurred_at for event in paid), default=None),
            )
        )
    new_ids = {event_id for event_id, _ in trail}
    return [
        need
        for customer in customers
        for need in customer_needs(
            list(stored[customer].items()),
            spent=spent,
            as_of=as_of[customer],
            new_ids=new_ids,
            rules=rules,
        )
    ]


def sweep_lifecycle(
    session: Session, *, now: datetime, rules: LifecycleRules, tenants: Sequence[str] | None = None
) -> list[Transition]:
    """Move the stages that time alone changes (new to active, quiet to dormant) as of
    ``now``; one commit."""
    moved = sweep_stages(session.connection(), now=now, rules=rules, tenants=tenants)
    session.commit()
    return moved


STAGE_EVENTS = frozenset({"customer_profile", "account_opened", "account_closed"})


def shapes_stage(event: TrailEvent) -> bool:
    """Whether an event can move its customer's lifecycle stage: a profile, a product opened
    or closed, an activity (app/customers/features.py says which)."""
    return event.type in STAGE_EVENTS or is_activity(event)


def material_events(
    trail: Sequence[tuple[str, TrailEvent]], *, outflow_threshold: float
) -> dict[str, tuple[str, str]]:
    """Customers whose new events are material: (reason, event id) of the first such event."""
    pending: dict[str, tuple[str, str]] = {}
    for event_id, event in trail:
        reason = material_reason(event, outflow_threshold=outflow_threshold)
        if reason is not None:
            pending.setdefault(event.customer_id, (reason, event_id))
    return pending


def event_rows(
    events: Iterable[EventBase],
    *,
    tenant: str | None,
    request_id: str,
    received_at: datetime,
    pseudonymizer: Pseudonymizer | None,
) -> list[EventRow]:
    """One row per distinct event id (the first wins), customer ids pseudonymised."""
    unique: dict[str, EventBase] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    customer_ids = [event.customer_id for event in unique.values()]
    if pseudonymizer is not None:  # keyed per tenant, as scores are
        customer_ids = pseudonymizer.pseudonyms(customer_ids, tenant=tenant)
    return [
        _event_row(event, customer_id, tenant, request_id, received_at)
        for event, customer_id in zip(unique.values(), customer_ids, strict=True)
    ]


def _event_row(
    event: EventBase, customer_id: str, tenant: str | None, request_id: str, received_at: datetime
) -> EventRow:
    payload = payload_of(event)
    transaction = event.__dict__["type"] is EventType.TRANSACTION
    return EventRow(
        tenant=tenant,
        event_id=event.event_id,
        customer_id=customer_id,
        type=event.__dict__["type"].value,
        occurred_at=event.occurred_at,
        received_at=received_at,
        request_id=request_id,
        payload=payload,
        amount=payload["amount"] if transaction else None,
        direction=payload["direction"] if transaction else None,
    )


def payload_of(event: BaseModel) -> dict[str, Any]:
    """The fields of an event's type that it has (enums as their values)."""
    return {
        name: _plain(value)
        for name, value in event.__dict__.items()
        if value is not None and name not in COMMON_FIELDS
    }


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it: enums as their values, dates as ISO text."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):
        return value.isoformat()
    return value


def customer_events(
    session: Session,
    *,
    customer_id: str,
    event_type: EventType | None,
    limit: int,
    offset: int,
    tenant: TenantScope | None,
    caller_tenant: str | None,
    pseudonymizer: Pseudonymizer | None,
) -> EventPage:
    """A page of one customer's trail (its tenant's rows only when isolation is on)."""
    # With pseudonymisation, rows hold the id's HMAC under the caller's tenant's key (or an
    # earlier form: a rotated secret, or the one without a tenant key).
    stored_ids = (
        pseudonymizer.lookup_forms(customer_id, tenant=caller_tenant)
        if pseudonymizer
        else [customer_id]
    )
    rows, total = list_events(
        session,
        customer_ids=stored_ids,
        event_type=event_type.value if event_type else None,
        limit=limit,
        offset=offset,
        tenant=tenant,
    )
    return EventPage(
        customer_id=customer_id,
        total=total,
        limit=limit,
        offset=offset,
        items=[
            StoredEvent(
                event_id=row.event_id,
                type=EventType(row.type),
                occurred_at=row.occurred_at,
                received_at=row.received_at,
                payload=row.payload,
            )
            for row in rows
        ],
    )


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """Who serves a customer, from the latest profile events that say so."""

    branch: str | None
    relationship_manager: str | None


# Profile events read, latest first, to find the branch and manager (fields left out of a
# profile event are unchanged, so the latest that names each one counts).
PROFILE_LOOKBACK = 50


def service_profile(
    session: Session, *, stored_customer_id: str, tenant: str | None
) -> ServiceProfile:
    """The customer's branch and relationship manager (None when no profile event names them);
    ``stored_customer_id`` as rows store it (the pseudonym, when pseudonymisation is on)."""
    rows, _ = list_events(
        session,
        customer_ids=[stored_customer_id],
        event_type=EventType.CUSTOMER_PROFILE.value,
        limit=PROFILE_LOOKBACK,
        offset=0,
        tenant=TenantScope(tenant),
    )
    branch = next((row.payload["branch"] for row in rows if row.payload.get("branch")), None)
    manager = next(
        (
            row.payload["relationship_manager"]
            for row in rows
            if row.payload.get("relationship_manager")
        ),
        None,
    )
    return ServiceProfile(branch=branch, relationship_manager=manager)


def stored_forms(
    customer_id: str, *, caller_tenant: str | None, pseudonymizer: Pseudonymizer | None
) -> list[str]:
    """The ids a customer's rows may be stored under for this caller's tenant."""
    # With pseudonymisation, rows hold the id's HMAC under the caller's tenant's key (or an
    # earlier form: a rotated secret, or the one without a tenant key).
    if pseudonymizer is None:
        return [customer_id]
    return pseudonymizer.lookup_forms(customer_id, tenant=caller_tenant)


def trail_features(
    reader: Connection | Session,
    *,
    customer_id: str,
    month: str | None,
    caller_tenant: str | None,
    pseudonymizer: Pseudonymizer | None,
) -> tuple[str, dict[str, Feature]]:
    """A customer's model features in a month (YYYY-MM; default its latest month on record)
    from the running aggregates; 404 if the caller's tenant has no trail of it."""
    forms = stored_forms(customer_id, caller_tenant=caller_tenant, pseudonymizer=pseudonymizer)
    # One read of the aggregates: up to the month asked for, else all (the latest is theirs).
    until = None if month is None else parse_month(month)
    counts, latest = read_months(reader, tenant=caller_tenant, customer_ids=forms, until=until)
    if not counts and not latest:
        if until is None or latest_month(reader, tenant=caller_tenant, customer_ids=forms) is None:
            raise CustomerNotFound(f"no events are stored for customer {customer_id!r}")
        raise CustomerNotFound(
            f"no events are stored for customer {customer_id!r} up to {month_label(until)}"
        )
    chosen = (
        until
        if until is not None
        else max([row.month for row in counts] + [value.month for value in latest])
    )
    return month_label(chosen), derive_features(chosen, counts, latest)


def month_features(
    session: Session,
    *,
    customer_id: str,
    month: str | None,
    caller_tenant: str | None,
    pseudonymizer: Pseudonymizer | None,
) -> MonthFeatures:
    """The features of one customer-month as the API answers them."""
    label, features = trail_features(
        session,
        customer_id=customer_id,
        month=month,
        caller_tenant=caller_tenant,
        pseudonymizer=pseudonymizer,
    )
    return MonthFeatures(customer_id=customer_id, month=label, features=features)


# How much of each month a history derives: every feature of every month, every feature of
# the latest month only (the tier measures of the others), or the tier measures only.
HistoryDepth = Literal["every", "latest", "value"]


def feature_history(
    session: Session,
    *,
    customer_id: str,
    caller_tenant: str | None,
    pseudonymizer: Pseudonymizer | None,
    depth: HistoryDepth = "every",
) -> list[tuple[str, dict[str, Feature]]]:
    """A customer's features in every month from its first on record to its latest (month
    YYYY-MM, features), oldest first, to ``depth``; 404 if the caller's tenant has no trail
    of it."""
    forms = stored_forms(customer_id, caller_tenant=caller_tenant, pseudonymizer=pseudonymizer)
    counts, latest = read_months(session, tenant=caller_tenant, customer_ids=forms, until=None)
    if not counts and not latest:
        raise CustomerNotFound(f"no events are stored for customer {customer_id!r}")
    return _history(counts, latest, depth)


def book_feature_histories(
    session: Session, *, tenant: str | None, depth: HistoryDepth = "every"
) -> Iterator[tuple[str, list[tuple[str, dict[str, Feature]]]]]:
    """Every customer of a tenant (by stored id, in id order) with its feature history as
    ``feature_history`` gives it."""
    book = read_book_months(session, tenant=tenant)
    for customer_id in sorted(book):
        counts, latest = book[customer_id]
        yield customer_id, _history(counts, latest, depth)


def balance_totals(*, tenant: str | None, products: Sequence[str]) -> Subquery:
    """Every customer's latest balances of ``products`` summed, as a subquery (``customer_id``,
    ``balance``) for set-wise reads such as the value pyramid's per-tier totals."""
    return latest_balance_totals(tenant=tenant, products=products)


def _history(
    counts: Sequence[MonthCounts], latest: Sequence[LatestValue], depth: HistoryDepth
) -> list[tuple[str, dict[str, Feature]]]:
    months = [c.month for c in counts] + [v.month for v in latest]
    last = max(months)

    def features(month: int) -> dict[str, Feature]:
        if depth == "every" or (depth == "latest" and month == last):
            return derive_features(month, counts, latest)
        return value_features(month, latest)

    return [(month_label(m), features(m)) for m in range(min(months), last + 1)]


class CustomerNotFound(NotFound):
    """No trail of this customer for the caller's tenant."""

    code = "customer_not_found"


# --- errors ----------------------------------------------------------------------------------

_TAG_ERRORS = ("union_tag_invalid", "union_tag_not_found")
_TYPE_VALUES = frozenset(t.value for t in EventType)
_KNOWN_TYPES = ", ".join(t.value for t in EventType)


def invalid_events(errors: list[FieldError]) -> InvalidInput:
    """A 422 naming every bad field of the call."""
    if [e.field for e in errors] == ["body"]:  # the body as a whole: its message says why
        return InvalidInput(errors[0].message, extra={"errors": [errors[0].as_dict()]})
    fields = ", ".join(e.field for e in errors[:MESSAGE_FIELDS])
    more = f" and {len(errors) - MESSAGE_FIELDS} more" if len(errors) > MESSAGE_FIELDS else ""
    return InvalidInput(
        f"invalid field(s): {fields}{more}; no event of this call was stored",
        extra={"errors": [e.as_dict() for e in errors]},
    )


def _field_errors(error: ValidationError, *, prefix: str) -> list[FieldError]:
    """pydantic's errors as field paths: ``events[3].amount``; ``columns.amount[3]`` for the
    rows of a columns body (``prefix="columns"``)."""
    found = []
    for item in error.errors(include_url=False, include_input=False):
        location = list(item["loc"])
        message = item["msg"]
        if item["type"] in _TAG_ERRORS:
            location.append("type")
            tag = (item.get("ctx") or {}).get("tag")
            message = (
                f"unknown event type {tag!r}; expected one of {_KNOWN_TYPES}"
                if item["type"] == "union_tag_invalid"
                else f"the event has no type; expected one of {_KNOWN_TYPES}"
            )
        elif item["type"] == "extra_forbidden":
            tag = next((p for p in location if p in _TYPE_VALUES), None)
            message = f"not a field of a {tag} event" if tag else message
        found.append(FieldError(_path(location, prefix), message, item["type"]))
    return found


def _path(location: list[int | str], prefix: str) -> str:
    # An event's errors carry its type as a step (the union's branch): not part of the field.
    parts = [
        part
        for before, part in zip([None, *location], location, strict=False)
        if not ((before is None or isinstance(before, int)) and part in _TYPE_VALUES)
    ]
    if prefix == "columns" and parts and isinstance(parts[0], int):
        index, *rest = parts
        return f"columns.{'.'.join(map(str, rest)) or 'type'}[{index}]"
    path = prefix
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def campaign_response_counts(
    session: Session, *, tenant: str | None
) -> list[tuple[str, str | None, str, int]]:
    """How many campaign responses the tenant's trail holds per (campaign, product, response)."""
    return campaign_responses(session, tenant=tenant)


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """One campaign_response event of the trail: who, how far they went, and when."""

    customer_id: str
    response: str
    occurred_at: datetime


def campaign_response_mark(
    session: Session, *, tenant: str | None, since: datetime, until: datetime | None
) -> tuple[int, int]:
    """(count, largest id) of the trail's campaign responses in [since, until]: it changes when
    one arrives (a report computed from them is stale then)."""
    event = CustomerEvent
    query = select(func.count(event.id), func.coalesce(func.max(event.id), 0)).where(
        TenantScope(tenant).condition(event.tenant),
        event.type == EventType.CAMPAIGN_RESPONSE.value,
        event.occurred_at >= since,
    )
    if until is not None:
        query = query.where(event.occurred_at <= until)
    count, last = session.execute(query).one()
    return int(count), int(last)


def responses_to_campaign(
    session: Session,
    *,
    tenant: str | None,
    campaign_code: str,
    since: datetime,
    until: datetime | None,
) -> list[ResponseEvent]:
    """The trail's responses to one campaign (its ``campaign_id`` is the campaign's code)
    that occurred in [since, until], oldest first."""
    event = CustomerEvent
    query = (
        select(event.customer_id, event.occurred_at, event.payload)
        .where(
            TenantScope(tenant).condition(event.tenant),
            event.type == EventType.CAMPAIGN_RESPONSE.value,
            event.occurred_at >= since,
        )
        .order_by(event.occurred_at, event.id)
    )
    if until is not None:
        query = query.where(event.occurred_at <= until)
    return [
        ResponseEvent(row.customer_id, str(row.payload["response"]), row.occurred_at)
        for row in session.execute(query)
        if row.payload.get("campaign_id") == campaign_code
    ]
