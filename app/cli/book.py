"""``cvm synth`` and ``cvm snapshot``: the synthetic book and a month of it ready to score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.app import console, example, progress_bar

commands = typer.Typer()


@commands.command(
    epilog=example(
        "cvm synth --customers 100000 --months 18 --seed 7 --out var/book",
        "cvm synth --customers 1000 --out var/book --events var/events.parquet",
    )
)
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write book.parquet into.", metavar="DIR")],
    customers: Annotated[
        int, typer.Option(min=100, help="Customers and prospects at start.", metavar="N")
    ] = 100_000,
    months: Annotated[
        int, typer.Option(min=12, max=120, help="Monthly snapshots.", metavar="N")
    ] = 18,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same book.", metavar="N")
    ] = 7,
    events: Annotated[
        Path | None,
        typer.Option(
            help="Also write the book's behaviour trail as events, for `cvm ingest` (.parquet "
            "or .csv).",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Generate a synthetic customer book (monthly snapshots, Parquet), and its trail of
    events if asked."""
    from app.training.synth import write_book

    if events is not None and events.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise typer.BadParameter("expected a .parquet or .csv file name", param_hint="--events")
    with progress_bar() as progress:
        bar = progress.add_task("Simulating months", total=months)
        path = write_book(
            out_dir=out,
            customers=customers,
            months=months,
            seed=seed,
            on_month=lambda _month: progress.advance(bar),
        )
    console.print(f"wrote {path}")
    if events is not None:
        import pandas as pd

        from app.training.trail import write_events

        book = pd.read_parquet(path)
        with progress_bar() as progress:
            bar = progress.add_task("Writing events", total=None)
            written = write_events(book, events, on_chunk=lambda n: progress.advance(bar, n))
        console.print(f"wrote {written:,} events to {events}")


@commands.command(epilog=example("cvm snapshot --book var/book --out var/latest.parquet"))
def snapshot(
    book: Annotated[
        Path, typer.Option(help="Monthly book: folder or Parquet file.", metavar="PATH")
    ],
    out: Annotated[Path, typer.Option(help="Parquet file to write.", metavar="FILE")],
    month: Annotated[
        int | None, typer.Option(help="Month to take (default: the last in the book).", metavar="N")
    ] = None,
) -> None:
    """Write one month of the book with every model feature derived, ready for `cvm score`."""
    from app.training.features import month_snapshot
    from app.training.synth import read_book

    with console.status("Deriving features"):
        table = month_snapshot(read_book(book).to_pandas(), month)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    console.print(f"wrote {len(table):,} customers of month {int(table['month'].iloc[0])} to {out}")
