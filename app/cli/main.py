"""The ``cvm`` command: one module per command group, wired onto the root app here."""

from __future__ import annotations

from app.cli import (
    alerts,
    backtest,
    book,
    campaigns,
    casework,
    clients,
    consume,
    customers,
    db,
    dispatch,
    ingest,
    models,
    rewards,
    score,
    serve,
    staff,
    tiers,
    train,
)
from app.cli.app import cli

# Groups without a name add their commands at the top level (cvm synth); named ones nest (cvm db).
cli.add_typer(book.commands)
cli.add_typer(train.commands)
cli.add_typer(score.commands)
cli.add_typer(ingest.commands)
cli.add_typer(consume.commands)
cli.add_typer(models.commands)
cli.add_typer(dispatch.commands)
cli.add_typer(serve.commands)
cli.add_typer(db.commands)
cli.add_typer(clients.commands)
cli.add_typer(alerts.commands)
cli.add_typer(staff.commands)
cli.add_typer(casework.commands)
cli.add_typer(customers.commands)
cli.add_typer(backtest.outcomes)
cli.add_typer(backtest.commands)
cli.add_typer(tiers.commands)
cli.add_typer(rewards.commands)
cli.add_typer(campaigns.commands)

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli()
