"""``cvm ingest``: load a file of customer events through the intake path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from app.cli.app import console, database_engine, example, fail, progress_bar
from app.config import get_settings

commands = typer.Typer()


@commands.command(
    epilog=example(
        "cvm ingest var/events.parquet --tenant bank-a",
        "cvm ingest events.csv --chunk-rows 5000 --rejects var/events.rejects.csv",
    )
)
def ingest(
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV or Parquet file, one event per row, columns named as in the columns "
            "form of POST /v1/events (event_id, type, customer_id, occurred_at, amount...).",
            metavar="FILE",
        ),
    ],
    tenant: Annotated[
        str | None,
        typer.Option(help="The tenant the events belong to (an API client's).", metavar="TENANT"),
    ] = None,
    chunk_rows: Annotated[
        int,
        typer.Option(min=1, max=100_000, help="Rows per chunk: one transaction.", metavar="N"),
    ] = 10_000,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Where bad rows go, with their first problem (default: FILE.rejects.csv).",
            metavar="PATH",
        ),
    ] = None,
) -> None:
    """Store a file's events in chunks; a rerun after a crash stores nothing twice."""
    from app.customers.ingest import EventFileError, ingest_file, open_event_file, write_rejects
    from app.customers.service import IntakeRules
    from app.db.session import create_session_factory
    from app.errors import DatabaseUnavailable
    from app.security.pseudonyms import Pseudonymizer

    settings = get_settings()
    try:
        events_file = open_event_file(path)
        with database_engine() as engine, progress_bar() as progress:
            bar = progress.add_task("Ingesting events", total=events_file.rows)
            summary = ingest_file(
                events_file,
                session_factory=create_session_factory(engine),
                rules=IntakeRules.from_settings(settings),
                tenant=tenant,
                pseudonymizer=Pseudonymizer.from_settings(settings),
                chunk_rows=chunk_rows,
                on_chunk=lambda rows: progress.advance(bar, rows),
            )
    except EventFileError as error:
        raise fail(str(error)) from error
    except DatabaseUnavailable as error:
        raise fail(f"{path}: {error.detail}; rerun to resume") from error
    if summary.rejects:
        write_rejects(summary, rejects or path.with_name(path.name + ".rejects.csv"))
    console.print(
        escape(
            f"{summary.rows:,} events read from {path}: {summary.new:,} new, "
            f"{summary.duplicates:,} duplicates, {summary.rejected:,} rejected"
            + (f" (see {summary.rejects_path})" if summary.rejects_path else "")
        ),
        soft_wrap=True,
    )
