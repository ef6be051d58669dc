"""Alembic environment: the URL and the table metadata come from the application itself."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

import app.tables  # noqa: F401  (registers every domain's tables on Base.metadata)
from app.db.base import Base
from app.db.session import create_db_engine

config = context.config
target_metadata = Base.metadata

# Only the `alembic` command line reads logging from alembic.ini; in-process callers
# (app/db/migrate.py, tests) keep their own logging untouched.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.config import get_settings

    return get_settings().database_url


def _run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # create_db_engine makes SQLite emit a real BEGIN, so DDL there is transactional too:
        # a failed migration leaves the schema as it was on either backend.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL script instead of running it (``alembic upgrade --sql``)."""
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a connection handed over by the caller, or one opened from the URL."""
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_with(connection)
        return
    engine = create_db_engine(_database_url())
    try:
        with engine.connect() as new_connection:
            _run_with(new_connection)
            new_connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
