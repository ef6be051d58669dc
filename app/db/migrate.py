"""Run the Alembic migrations from code (the ``cvm db`` commands and the tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.config import PROJECT_ROOT
from app.db.session import create_db_engine

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def _alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolates '%': a URL-encoded password must be escaped to survive.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _run(url: str, action: str, revision: str) -> None:
    config = _alembic_config(url)
    engine = create_db_engine(url)
    try:
        # One transaction for the whole run: on PostgreSQL and SQLite alike, a failed
        # migration leaves the schema as it was.
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            if action == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    _run(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops everything)."""
    _run(url, "downgrade", revision)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None when it was never migrated."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision in ``migrations/versions`` (what ``upgrade`` reaches by default)."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
