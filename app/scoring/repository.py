"""Reads and writes of stored scores; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Subquery,
    delete,
    false,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db.session import json_bytes
from app.scoring.tables import (
    RequestRecord,
    RequestStatus,
    Score,
    request_record_table,
    score_alert_candidate_table,
    score_table,
)
from app.value.prospect_book import ProspectScore, is_prospect_score, record_prospect_scores


class ScoreRow(TypedDict):
    """One row to insert into ``score`` (every column but the generated ``id``)."""

    request_id: str
    task: str
    customer_id: str
    model_name: str | None
    model_version: str | None
    outputs: dict[str, Any]
    reasons: list[Any]
    features: dict[str, Any]
    created_at: datetime
    tenant: NotRequired[str | None]
    source: str
    stage: str | None
    probability: float | None
    band: str | None
    alert: bool


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Only rows of ``tenant``; ``None`` means rows stored without a tenant."""

    tenant: str | None

    def condition(self, column: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
        """The WHERE clause on a table's tenant column (plain equality: index friendly)."""
        return column.is_(None) if self.tenant is None else column == self.tenant


# A score row in ``_COLUMNS`` order with its three JSON documents already encoded (UTF-8) and
# its time as microseconds since the epoch (an int pickles in a third of an aware datetime's
# time): what a writer in another process receives, and what every insert starts from.
EncodedScore = tuple[
    str,
    str,
    str,
    str | None,
    str | None,
    bytes,
    bytes,
    bytes,
    int,
    str | None,
    str,
    str | None,
    float | None,
    str | None,
    bool,
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_scores(rows: Sequence[ScoreRow | EncodedScore]) -> list[EncodedScore]:
    """The rows with their JSON encoded once (orjson), ready for any database; rows already
    encoded pass through."""
    micros: dict[datetime, int] = {}  # rows of one call share their timestamp

    def since_epoch(created_at: datetime) -> int:
        value = micros.get(created_at)
        if value is None:
            if created_at.tzinfo is None:
                raise ValueError("naive datetime given for a timezone-aware column")
            value = micros[created_at] = (created_at - _EPOCH) // _MICROSECOND
        return value

    return [
        row
        if isinstance(row, tuple)
        else (
            row["request_id"],
            row["task"],
            row["customer_id"],
            row["model_name"],
            row["model_version"],
            json_bytes(row["outputs"]),
            json_bytes(row["reasons"]),
            json_bytes(row["features"]),
            since_epoch(row["created_at"]),
            row.get("tenant"),
            row["source"],
            row["stage"],
            row["probability"],
            row["band"],
            row["alert"],
        )
        for row in rows
    ]


def _timestamp(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def insert_scores(target: Connection | Session, *, rows: Sequence[ScoreRow | EncodedScore]) -> int:
    """Insert ``rows`` in the caller's transaction; returns the count.

    This is the hot path of every scoring call, so it skips SQLAlchemy's per-row parameter
    processing: JSON is serialised once with orjson, each distinct timestamp goes through the
    column type's own bind processor once, and the driver gets plain tuples (COPY on
    PostgreSQL, one executemany on SQLite, the two databases CVM runs on).
    """
    if not rows:
        return 0
    connection = target.connection() if isinstance(target, Session) else target
    encoded = encode_scores(rows)
    dialect = connection.dialect
    if dialect.name == "postgresql":  # psycopg 3, the driver create_db_engine uses
        _copy_scores(connection, encoded)
    else:
        connection.exec_driver_sql(_SQLITE_INSERT, _driver_tuples(dialect, encoded))
    # A prospect's ranking inputs as columns, in the same transaction (app/value/prospect_book).
    prospects = [_prospect_score(row) for row in encoded if is_prospect_score(row[1], row[11])]
    if prospects:
        record_prospect_scores(connection, scores=prospects)
    return len(rows)


def _prospect_score(row: EncodedScore) -> ProspectScore:
    return ProspectScore(
        tenant=row[9],
        customer_id=row[2],
        outputs=orjson.loads(row[5]),
        features=orjson.loads(row[7]),
        model_version=row[4],
        scored_at=_timestamp(row[8]),
    )


# Columns written by insert_scores, in order (the generated id is left to the database).
_COLUMNS = (
    "request_id",
    "task",
    "customer_id",
    "model_name",
    "model_version",
    "outputs",
    "reasons",
    "features",
    "created_at",
    "tenant",
    "source",
    "stage",
    "probability",
    "band",
    "alert",
)
_SQLITE_INSERT = (
    f"INSERT INTO {score_table.name} ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_COPY = f"COPY {score_table.name} ({', '.join(_COLUMNS)}) FROM STDIN"
# Rows per executemany on the bulk path: bounds the memory of the tuples built for one call.
BULK_EXECUTEMANY_ROWS = 5_000


def _driver_tuples(dialect: Dialect, rows: Sequence[EncodedScore]) -> list[tuple[Any, ...]]:
    """One tuple per row in ``_COLUMNS`` order, as the driver takes them."""
    # The dialect's own processor (SQLite: the text SQLAlchemy writes and parses back), so
    # rows from this path and from the Core INSERT store the same form.
    stamp = score_table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    stamps: dict[int, Any] = {}  # rows of one call share their timestamp
    tuples = []
    for row in rows:
        micros = row[8]
        stored_at = stamps.get(micros)
        if stored_at is None:
            created_at = _timestamp(micros)
            stored_at = stamps[micros] = created_at if stamp is None else stamp(created_at)
        tuples.append(
            (*row[:5], row[5].decode(), row[6].decode(), row[7].decode(), stored_at, *row[9:])
        )
    return tuples


def _copy_scores(connection: Connection, rows: Sequence[EncodedScore]) -> None:
    driver_connection: Any = connection.connection.driver_connection
    with driver_connection.cursor() as cursor, cursor.copy(_COPY) as copy:
        for values in _driver_tuples(connection.dialect, rows):
            copy.write_row(values)


def bulk_insert_scores(connection: Connection, *, rows: Sequence[ScoreRow]) -> int:
    """Insert many rows (a batch file's chunk) in slices that bound the memory per call."""
    for start in range(0, len(rows), BULK_EXECUTEMANY_ROWS):
        insert_scores(connection, rows=rows[start : start + BULK_EXECUTEMANY_ROWS])
    return len(rows)


def request_id_exists(connection: Connection, *, request_id: str) -> bool:
    """Whether any score row carries ``request_id`` (an index lookup)."""
    found = connection.execute(
        select(score_table.c.id).where(score_table.c.request_id == request_id).limit(1)
    ).first()
    return found is not None


def lock_request_id(connection: Connection, *, request_id: str) -> None:
    """Serialise transactions writing the same ``request_id`` until they end."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:request_id))"),
            {"request_id": request_id},
        )
    elif connection.dialect.name == "sqlite":
        # Take SQLite's write lock before reading: a reader that later writes is refused at
        # once (SQLITE_BUSY) when another writer is active; a writer waits for the lock.
        connection.execute(score_table.delete().where(false()))


def list_scores(
    session: Session,
    *,
    customer_id: str | Sequence[str],
    task: str | None = None,
    limit: int = 50,
    offset: int = 0,
    tenant: TenantScope | None = None,
) -> tuple[list[Score], int]:
    """One page of a customer's scores, newest first, and the total across all pages.

    ``customer_id`` may list every stored form of one id (pseudonyms under rotated secrets);
    ``tenant`` limits the rows to one tenant's.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    conditions = [
        Score.customer_id == customer_id
        if isinstance(customer_id, str)
        else Score.customer_id.in_(customer_id)
    ]
    if task is not None:
        conditions.append(Score.task == task)
    if tenant is not None:
        conditions.append(tenant.condition(Score.tenant))
    total = session.scalar(select(func.count()).select_from(Score).where(*conditions)) or 0
    page = session.scalars(
        select(Score)
        .where(*conditions)
        # id breaks ties between rows written in the same instant.
        .order_by(Score.created_at.desc(), Score.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(page), total


def stored_inputs(
    session: Session,
    *,
    task: str,
    model_version: str,
    since: datetime | None = None,
    limit: int,
    tenant: TenantScope | None = None,
) -> tuple[list[dict[str, Any]], list[float | None]]:
    """The features and headline scores of the newest ``limit`` rows a model version stored
    (what drift monitoring compares with the training data)."""
    conditions = [Score.task == task, Score.model_version == model_version]
    if since is not None:
        conditions.append(Score.created_at >= since)
    if tenant is not None:
        conditions.append(tenant.condition(Score.tenant))
    rows = session.execute(
        select(Score.features, Score.probability)
        .where(*conditions)
        .order_by(Score.id.desc())
        .limit(limit)
    ).all()
    return [r[0] for r in rows], [r[1] for r in rows]


def stored_probabilities(
    session: Session,
    *,
    task: str,
    model_version: str | None,
    until: datetime,
    tenant: TenantScope | None = None,
) -> list[tuple[str, datetime, float, str | None]]:
    """(customer id, time, probability, model version) of every score of ``task`` stored up to
    ``until`` with a probability, oldest first (what a backtest joins to outcomes)."""
    conditions = [Score.task == task, Score.created_at <= until, Score.probability.is_not(None)]
    if model_version is not None:
        conditions.append(Score.model_version == model_version)
    if tenant is not None:
        conditions.append(tenant.condition(Score.tenant))
    rows = session.execute(
        select(Score.customer_id, Score.created_at, Score.probability, Score.model_version)
        .where(*conditions)
        .order_by(Score.created_at, Score.id)
    ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows if r[2] is not None]


# --- the alert inbox: churn scores that crossed the threshold --------------------------------


class AlertCandidateRow(TypedDict):
    """A churn score whose assessment calls for an alert, stored beside the score (plain data:
    the writer, in this process or another, inserts it without knowing what an alert is)."""

    request_id: str
    customer_id: str
    tenant: str | None
    stage: str | None
    probability: float
    band: str
    reasons: list[Any]
    model_version: str | None
    source: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """A claimed candidate, as the alert processor reads it."""

    id: int
    request_id: str
    customer_id: str
    tenant: str | None
    stage: str | None
    probability: float
    band: str
    reasons: list[Any]
    model_version: str | None
    source: str
    created_at: datetime


def insert_alert_candidates(connection: Connection, *, rows: Sequence[AlertCandidateRow]) -> int:
    """Queue candidates in the caller's transaction (the one that stores their scores)."""
    if rows:
        connection.execute(score_alert_candidate_table.insert(), list(rows))
    return len(rows)


def claim_alert_candidates(connection: Connection, *, limit: int) -> list[AlertCandidate]:
    """Take up to ``limit`` of the oldest candidates out of the inbox, in the caller's
    transaction: they are gone once it commits, and back if it rolls back.

    One ``DELETE ... RETURNING``: on PostgreSQL its ``FOR UPDATE SKIP LOCKED`` subquery lets two
    processors take disjoint candidates without waiting for each other; on SQLite the DELETE
    takes the database's write lock, so processors take turns.
    """
    t = score_alert_candidate_table.c
    oldest = select(t.id).order_by(t.id).limit(limit).with_for_update(skip_locked=True)
    statement = (
        delete(score_alert_candidate_table)
        .where(t.id.in_(oldest.scalar_subquery()))
        .returning(*score_alert_candidate_table.c)
    )
    rows = connection.execute(statement).all()
    # RETURNING order is unspecified: hand them over in the order the writers queued them.
    return sorted((AlertCandidate(**row._mapping) for row in rows), key=lambda c: c.id)


def count_alert_candidates(connection: Connection) -> int:
    """Candidates waiting in the inbox (committed, not yet processed)."""
    query = select(func.count()).select_from(score_alert_candidate_table)
    return int(connection.scalar(query) or 0)


# --- request records: one per committed request, in the transaction of its rows --------------


class RequestRow(TypedDict):
    """A request's record, as the service hands it to the writer with the request's rows."""

    request_id: str
    tenant: str | None
    operation: str
    tasks: list[str]
    customers: int
    rows: int
    key_digest: str | None
    request_digest: str | None
    response: bytes | None
    created_at: datetime


def insert_requests(
    connection: Connection, *, rows: Sequence[RequestRow], committed_at: datetime
) -> set[str]:
    """Insert request records unless one with the same request id or Idempotency-Key digest
    exists; returns the request ids inserted (the others are retries of a committed request:
    their rows must not be written). One statement for the whole group.

    Like ``insert_scores``, it hands the driver plain values: a request is one row of a
    scoring call's commit, and SQLAlchemy's per-row processing of the same statement cost
    about a third more of the writer's CPU (bench/README.md).
    """
    if len(rows) > REQUESTS_PER_STATEMENT:  # SQLite's bound on a statement's parameters
        return insert_requests(
            connection, rows=rows[:REQUESTS_PER_STATEMENT], committed_at=committed_at
        ) | insert_requests(
            connection, rows=rows[REQUESTS_PER_STATEMENT:], committed_at=committed_at
        )
    if not rows:
        return set()
    dialect = connection.dialect
    stamp = request_record_table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    committed = committed_at if stamp is None else stamp(committed_at)
    values: list[Any] = []
    for row in rows:
        created = row["created_at"]
        values += (
            row["request_id"],
            row["tenant"],
            row["operation"],
            RequestStatus.COMMITTED.value,
            orjson.dumps(row["tasks"]).decode(),
            row["customers"],
            row["rows"],
            row["key_digest"],
            row["request_digest"],
            row["response"],
            created if stamp is None else stamp(created),
            committed,
        )
    mark = "?" if dialect.name == "sqlite" else "%s"
    one = f"({', '.join(mark for _ in _REQUEST_COLUMNS)})"
    statement = (
        f"INSERT INTO {request_record_table.name} ({', '.join(_REQUEST_COLUMNS)}) "
        f"VALUES {', '.join(one for _ in rows)} ON CONFLICT DO NOTHING RETURNING request_id"
    )
    return {
        str(request_id) for (request_id,) in connection.exec_driver_sql(statement, tuple(values))
    }


# 12 parameters a record: far below SQLite's 32,766 parameters per statement.
REQUESTS_PER_STATEMENT = 1_000
_REQUEST_COLUMNS = (
    "request_id",
    "tenant",
    "operation",
    "status",
    "tasks",
    "customers",
    "rows",
    "key_digest",
    "request_digest",
    "response",
    "created_at",
    "committed_at",
)


def request_by_key(connection: Connection, *, key_digest: str) -> RequestRecord | None:
    """The committed request that used this Idempotency-Key digest, if any."""
    t = request_record_table.c
    row = connection.execute(select(request_record_table).where(t.key_digest == key_digest)).first()
    return None if row is None else RequestRecord(**row._mapping)


def forget_key(connection: Connection, *, key_digest: str, before: datetime) -> int:
    """Free an Idempotency-Key digest recorded before ``before`` (the key has expired and
    may name a new request); the record itself stays."""
    t = request_record_table.c
    result = connection.execute(
        update(request_record_table)
        .where(t.key_digest == key_digest, t.created_at < before)
        .values(key_digest=None)
    )
    return int(result.rowcount)


def get_request(
    session: Session, *, request_id: str, tenant: TenantScope | None = None
) -> RequestRecord | None:
    """A committed request's record (of one tenant when ``tenant`` is given)."""
    conditions = [RequestRecord.request_id == request_id]
    if tenant is not None:
        conditions.append(tenant.condition(RequestRecord.tenant))
    return session.scalars(select(RequestRecord).where(*conditions)).first()


def latest_scores(*, task: str, tenant: str | None, name: str) -> Subquery:
    """Every customer's latest score of ``task`` in a tenant as a subquery (``customer_id``,
    ``probability``), for set-based reads such as a campaign's targeting."""
    # A join on the latest ids, not ``id IN (...)``: PostgreSQL estimates the IN list at 200
    # rows and probes the index once per customer (12x slower at 1,000,000 customers).
    latest = (
        select(func.max(Score.id).label("id"))
        .where(Score.task == task, TenantScope(tenant).condition(Score.tenant))
        .group_by(Score.customer_id)
        .subquery(f"{name}_latest")
    )
    return (
        select(Score.customer_id, Score.probability)
        .join(latest, Score.id == latest.c.id)
        .subquery(name)
    )
