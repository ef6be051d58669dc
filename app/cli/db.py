"""``cvm db``: database schema migrations (Alembic)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.app import console, example
from app.config import get_settings

commands = typer.Typer(
    name="db",
    help="Database schema migrations (Alembic).",
    epilog=example("cvm db upgrade", "cvm db current"),
    no_args_is_help=True,
)


@commands.command("upgrade", epilog=example("cvm db upgrade"))
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="Revision id, or head.")
    ] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from app.db.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@commands.command("downgrade", epilog=example("cvm db downgrade base"))
def db_downgrade(
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Revision id, or base.")],
) -> None:
    """Revert migrations down to REVISION (e.g. base)."""
    from app.db.migrate import downgrade

    downgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@commands.command("current", epilog=example("cvm db current"))
def db_current() -> None:
    """Print the database's current revision."""
    from app.db.migrate import current

    typer.echo(current(get_settings().database_url) or "none")
