"""``cvm staff``: the staff directory, imported from a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.app import console, database_session, example, fail

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
    from app.errors import ServiceError

    try:
        rows = read_staff_csv(file.read_text(encoding="utf-8-sig"))
    except ValueError as error:
        raise fail(str(error)) from error
    try:
        with database_session() as session:
            result = store_staff(session, tenant=tenant, rows=rows, now=datetime.now(UTC))
    except ServiceError as error:
        raise fail(f"nothing imported: {error.detail}") from error
    console.print(f"staff: {result.created} created, {result.updated} updated")


def _read_password(password_stdin: bool) -> str:
    """The new password: the first line of standard input, or typed twice at a prompt."""
    import sys

    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _save_password(*, tenant: str | None, staff_id: str, password: str) -> None:
    from datetime import UTC, datetime

    from app.config import get_settings
    from app.console.service import Passwords, set_password
    from app.errors import ServiceError

    settings = get_settings()
    try:
        with database_session() as session:
            set_password(
                session,
                passwords=Passwords.from_settings(settings),
                tenant=tenant,
                staff_id=staff_id,
                password=password,
                now=datetime.now(UTC),
            )
    except ServiceError as error:
        raise fail(f"no password set: {error.detail}") from error


TenantOption = Annotated[
    str | None, typer.Option(help="The tenant the staff member belongs to.", metavar="TENANT")
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input.",
        metavar="",
    ),
]


@commands.command(
    "set-password",
    epilog=example("cvm staff set-password rm-042 --tenant bank-a"),
)
def set_password_command(
    staff_id: Annotated[str, typer.Argument(help="An existing staff member's id.")],
    tenant: TenantOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a staff member's console password (12 to 256 characters); their sessions end."""
    _save_password(tenant=tenant, staff_id=staff_id, password=_read_password(password_stdin))
    console.print(f"password set for {staff_id}")


@commands.command(
    "create",
    epilog=example(
        "cvm staff create admin-1 --name 'Li Wei' --email li.wei@bank.example "
        "--role administrator --branch head-office"
    ),
)
def create_staff(
    staff_id: Annotated[str, typer.Argument(help="The new staff member's id.")],
    name: Annotated[str, typer.Option(help="Full name.", metavar="NAME")],
    email: Annotated[str, typer.Option(help="E-mail address.", metavar="EMAIL")],
    branch: Annotated[str, typer.Option(help="Home branch code.", metavar="BRANCH")],
    role: Annotated[
        list[str],
        typer.Option(
            metavar="ROLE",
            help="A role (repeat for several): relationship_manager, branch_supervisor, "
            "complaints_team, head_office_approver, administrator.",
        ),
    ],
    tenant: TenantOption = None,
    max_severity: Annotated[
        str, typer.Option(help="low, medium or high.", metavar="SEVERITY")
    ] = "high",
    max_amount: Annotated[
        float, typer.Option(help="Largest amount at stake they may own.", metavar="AMOUNT")
    ] = 0.0,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a staff member with a console password: the first user of a new installation."""
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from app.casework.schemas import StaffRequest
    from app.casework.staff import StaffRow, store_staff
    from app.console.service import MAX_PASSWORD, MIN_PASSWORD
    from app.errors import ServiceError

    try:
        request = StaffRequest.model_validate(
            {
                "name": name,
                "email": email,
                "roles": role,
                "branch": branch,
                "max_severity": max_severity,
                "max_amount": max_amount,
            }
        )
    except ValidationError as error:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors())
        raise fail(f"invalid: {fields}") from error
    password = _read_password(password_stdin)
    # Checked before the record is stored: a refused password leaves nothing behind.
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise fail(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    try:
        with database_session() as session:
            store_staff(
                session,
                tenant=tenant,
                rows=[StaffRow(staff_id, request)],
                now=datetime.now(UTC),
            )
    except ServiceError as error:
        raise fail(f"nothing created: {error.detail}") from error
    _save_password(tenant=tenant, staff_id=staff_id, password=password)
    console.print(f"staff member {staff_id} created; they can log in at /console")
