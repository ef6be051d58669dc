"""``cvm rewards``: the nightly points expiry."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer

from app.cli.app import console, database_session, example

commands = typer.Typer(
    name="rewards",
    help="Rewards: the nightly expiry of points.",
    no_args_is_help=True,
    epilog=example("cvm rewards expire", "cvm rewards expire --as-of 2027-01-01"),
)


@commands.command(
    "expire",
    epilog=example(
        "cvm rewards expire                      # points whose last day was before today",
        "cvm rewards expire --as-of 2027-01-01   # as the night of 1 January would",
    ),
)
def expire(
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="Expire lots whose last day is before this date (default: today, UTC).",
            metavar="DATE",
        ),
    ] = None,
) -> None:
    """Close every lot past its last day with an expiry entry, oldest first; running it
    again for the same date changes nothing."""
    from datetime import UTC

    from app.rewards.service import expire as expire_points

    now = datetime.now(UTC)
    day: date = as_of.date() if as_of else now.date()
    with database_session() as session:
        run = expire_points(session, as_of=day, now=now)
    typer.echo(f"{'as_of':<12} {'customers':>10} {'entries':>10} {'points':>12}")
    typer.echo(
        f"{run.as_of.isoformat():<12} {run.customers:>10} {run.entries:>10} {run.points:>12}"
    )
    console.print(f"expired {run.points} points in {run.entries} lots of {run.customers} customers")
