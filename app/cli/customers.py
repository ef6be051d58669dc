"""``cvm customers``: the lifecycle sweep, from cron."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

import typer

from app.cli.app import console, database_session, example

commands = typer.Typer(
    name="customers",
    help="The customer record: lifecycle stages as time passes.",
    no_args_is_help=True,
    epilog=example("cvm customers sweep"),
)


@commands.command("sweep", epilog=example("cvm customers sweep   # hourly, from cron"))
def sweep(
    at: Annotated[
        datetime | None,
        typer.Option(
            "--at",
            help="Sweep as if it were this instant (ISO 8601, UTC if no zone); default now.",
            metavar="WHEN",
        ),
    ] = None,
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this tenant's customers (repeatable); default every one.", metavar="TENANT"
        ),
    ] = None,
) -> None:
    """Move the lifecycle stages time alone changes: new customers past their first months
    become active, customers without activity for the configured days dormant."""
    from app.config import get_settings
    from app.customers.lifecycle import LifecycleRules
    from app.customers.service import sweep_lifecycle

    now = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    settings = get_settings()
    with database_session() as session:
        moved = sweep_lifecycle(
            session, now=now, rules=LifecycleRules.from_settings(settings), tenants=tenant
        )
    counts = Counter(f"{t.from_stage} -> {t.to_stage}" for t in moved)
    detail = ", ".join(f"{move}: {n}" for move, n in sorted(counts.items()))
    console.print(f"{len(moved)} stage change(s){': ' + detail if detail else ''}", highlight=False)
