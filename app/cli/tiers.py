"""``cvm tiers``: re-tier the book under the bank's tier policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.app import console, database_session, example, fail

commands = typer.Typer(
    name="tiers",
    help="The bank's tier policy: see what a policy change moves, and apply it to the book.",
    no_args_is_help=True,
    epilog=example(
        "cvm tiers apply --policy new_policy.json --dry-run",
        "cvm tiers apply",
    ),
)


@commands.command(
    "apply",
    epilog=example(
        "cvm tiers apply --policy new_policy.json --dry-run   # how many customers it moves",
        "cvm tiers apply --tenant bank-a                       # store the movements",
    ),
)
def apply(
    policy: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="A tier policy file (default: the setting tier_policy_file).",
            metavar="FILE",
        ),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="The tenant whose book to re-tier.", metavar="TENANT")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the movements; store nothing.", metavar="")
    ] = False,
) -> None:
    """Re-tier every customer with a trail under the policy: a table of customers moved
    from one tier to another on stdout, and (unless --dry-run) one movement row each."""
    from datetime import UTC, datetime

    from app.config import get_settings
    from app.value.policy import InvalidPolicy, load_policy
    from app.value.service import apply_tiers

    settings = get_settings()
    path = policy or settings.tier_policy_file
    try:
        loaded = load_policy(path)
    except InvalidPolicy as error:
        raise fail(f"{path}: invalid tier policy at {error}; nothing changed") from error
    with database_session() as session:
        result = apply_tiers(
            session, policy=loaded, tenant=tenant, dry_run=dry_run, now=datetime.now(UTC)
        )
    typer.echo(f"{'from':<20} {'to':<20} {'customers':>10}")
    for flow in result.flows:
        typer.echo(f"{flow.from_tier or '-':<20} {flow.to_tier:<20} {flow.customers:>10}")
    verb = "would move" if dry_run else "moved"
    console.print(
        f"policy {result.policy_version}: {verb} {result.moved} of {result.customers} customers"
        + ("" if dry_run else f" (run {result.run_id})")
    )
