"""Engine and session factories, built by the caller (never at import time)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from app.db.errors import describe_db_error

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5_000
POSTGRES_CONNECT_TIMEOUT_S = 5
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 10
REACHABILITY_TIMEOUT_MS = 2_000


def json_bytes(value: Any) -> bytes:
    """A stored JSON document, UTF-8: the engines' serializer and the fast insert path."""
    # orjson is several times faster than json.dumps and understands numpy scalars/arrays,
    # which is what model outputs and feature vectors are made of.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def json_text(value: Any) -> str:
    """``json_bytes`` as text (SQLAlchemy's JSON serializer returns text)."""
    return json_bytes(value).decode()


def create_db_engine(
    url: str, *, pool_size: int = POSTGRES_POOL_SIZE, max_overflow: int = POSTGRES_MAX_OVERFLOW
) -> Engine:
    """An engine tuned for the backend named in ``url`` (SQLite file/memory or PostgreSQL);
    ``pool_size`` and ``max_overflow`` size a PostgreSQL pool."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(sa_url)
    connect_args: dict[str, Any] = {}
    if sa_url.get_backend_name() == "postgresql" and "connect_timeout" not in sa_url.query:
        # Fail fast when the server is unreachable instead of hanging a request.
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(
        sa_url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args=connect_args,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        # Row values are customer data: keep them out of exception text and logs.
        hide_parameters=True,
    )


def _create_sqlite_engine(sa_url: URL) -> Engine:
    database = sa_url.database or ""
    in_memory = database in ("", ":memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        sa_url,
        connect_args={
            "check_same_thread": False,
            # sqlite3's timeout is SQLite's busy timeout: wait for another writer's lock.
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        },
        # An in-memory database lives in one connection; share it across threads.
        poolclass=StaticPool if in_memory else None,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        # Row values are customer data: keep them out of exception text and logs.
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (below): sqlite3's legacy mode skips BEGIN before
        # DDL and SAVEPOINT, which would make migrations and nested transactions non-atomic.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                # WAL: readers never block the writer; FULL: a commit survives power loss.
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once (SQLITE_BUSY, no
        # busy wait) when another connection committed in between; a unit of work that will
        # write asks for the write lock up front instead (see ``writing``).
        immediate = connection.get_execution_options().get(IMMEDIATE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


IMMEDIATE_OPTION = "cvm_sqlite_immediate"


def writing(session: Session) -> Session:
    """Declare ``session`` a unit of work that will write: on SQLite each transaction it begins
    from now on (at its first statement, and again after each commit) takes the write lock
    first, waiting out another writer within the busy timeout, rather than failing when its
    first write finds the database changed since its first read; elsewhere a no-op. Declare
    before the session's first statement: a transaction already begun stays as it began."""
    bind = session.get_bind()
    if not bind.get_execution_options().get(IMMEDIATE_OPTION, False):
        session.bind = bind.execution_options(**{IMMEDIATE_OPTION: True})
    return session


def reading(engine: Engine) -> Connection:
    """A connection for reads whose statements commit on their own: on PostgreSQL a read pays
    no BEGIN and ROLLBACK round trips (each statement sees its own snapshot, as under READ
    COMMITTED already); SQLite keeps its transaction (its reads take no round trip)."""
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (no lazy reloads)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def database_is_reachable(engine: Engine) -> bool:
    """Whether a ``SELECT 1`` succeeds within a short timeout; never raises."""
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql(
                    f"SET LOCAL statement_timeout = {REACHABILITY_TIMEOUT_MS}"
                )
            connection.execute(text("SELECT 1")).scalar_one()
    except Exception as exc:
        # No traceback: health probes repeat every few seconds during an outage.
        logger.warning("database unreachable: %s", describe_db_error(exc))
        return False
    return True
