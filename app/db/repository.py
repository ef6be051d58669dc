"""Reads and writes of stored scores; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired, TypedDict

import orjson
from sqlalchemy import ColumnElement, Connection, false, func, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db.tables import Score, score_table


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


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Only rows of ``tenant``; ``None`` means rows stored without a tenant."""

    tenant: str | None

    def condition(self, column: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
        """The WHERE clause on a table's tenant column (plain equality: index friendly)."""
        return column.is_(None) if self.tenant is None else column == self.tenant


def insert_scores(target: Connection | Session, *, rows: Sequence[ScoreRow]) -> int:
    """Insert ``rows`` with one executemany INSERT (no ORM objects: hot path); returns the count."""
    if not rows:
        return 0
    connection = target.connection() if isinstance(target, Session) else target
    connection.execute(score_table.insert(), list(rows))
    return len(rows)


# Columns a COPY fills, in order (the generated id is left to the database).
_COPY_COLUMNS = (
    "request_id, task, customer_id, model_name, model_version, outputs, reasons, features, "
    "created_at"
)
BULK_EXECUTEMANY_ROWS = 5_000


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def bulk_insert_scores(connection: Connection, *, rows: Sequence[ScoreRow]) -> int:
    """Insert many rows: COPY on PostgreSQL (psycopg 3), batched executemany elsewhere."""
    if not rows:
        return 0
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        driver_connection: Any = connection.connection.driver_connection
        statement = f"COPY {score_table.name} ({_COPY_COLUMNS}) FROM STDIN"
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    (
                        row["request_id"],
                        row["task"],
                        row["customer_id"],
                        row["model_name"],
                        row["model_version"],
                        _json_text(row["outputs"]),
                        _json_text(row["reasons"]),
                        _json_text(row["features"]),
                        row["created_at"],
                    )
                )
        return len(rows)
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
