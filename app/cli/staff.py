"""``cvm staff``: the staff directory, imported from a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.app import console, example, fail

commands = typer.Typer(
    name="staff",
    help="Staff directory: roles, branches, supervisors, authority limits.",
    no_args_is_help=True,
    epilog=example("cvm staff import staff.csv --tenant bank-a"),
)

COLUMNS = (
    "staff_id",
    "name",
    "email",
    "roles",
    "branch",
    "supervisor",
    "max_severity",
    "max_amount",
    "principal",
    "active",
)


@commands.command(
    "import",
    epilog=example(
        "cvm staff import staff.csv",
        "# staff_id,name,email,roles,branch,supervisor,max_severity,max_amount,principal",
        "# rm-042,Anna Berg,anna@bank.example,relationship_manager,north-01,bs-007,medium,5000,"
        "jwt:anna",
    ),
)
def import_staff(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV with a header row."),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="The tenant the staff belong to.", metavar="TENANT")
    ] = None,
) -> None:
    """Create or replace staff records from a CSV file: every row, or none.

    Columns: staff_id, name, email, roles (several separated by ';' or spaces), branch,
    supervisor (optional), max_severity (low, medium, high), max_amount, principal (optional:
    the API client id or 'jwt:<subject>' the person acts through), active (optional, true).
    A supervisor may be a row further down the file.
    """
    from datetime import UTC, datetime

    from app.casework.staff import read_staff_csv, store_staff
    from app.config import get_settings
    from app.db.session import create_db_engine, create_session_factory
    from app.errors import ServiceError

    try:
        rows = read_staff_csv(file.read_text(encoding="utf-8-sig"))
    except ValueError as error:
        raise fail(str(error)) from error
    engine = create_db_engine(get_settings().database_url)
    try:
        with create_session_factory(engine)() as session:
            result = store_staff(session, tenant=tenant, rows=rows, now=datetime.now(UTC))
    except ServiceError as error:
        raise fail(f"nothing imported: {error.detail}") from error
    finally:
        engine.dispose()
    console.print(f"staff: {result.created} created, {result.updated} updated")
