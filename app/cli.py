"""The ``cvm`` command: generate a book, train, score files, migrate the database, serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.config import get_settings
from app.ml.manifest import Task

cli = typer.Typer(
    help="CVM: customer value scoring for retail banks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_cli = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


@cli.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write book.parquet into.")],
    customers: Annotated[
        int, typer.Option(min=100, help="Customers and prospects at start.")
    ] = 100_000,
    months: Annotated[int, typer.Option(min=12, max=120, help="Monthly snapshots.")] = 18,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same book.")] = 7,
) -> None:
    """Generate a synthetic customer book (monthly snapshots, Parquet)."""
    from app.training.synth import write_book

    with _progress() as progress:
        bar = progress.add_task("Simulating months", total=months)
        path = write_book(
            out_dir=out,
            customers=customers,
            months=months,
            seed=seed,
            on_month=lambda _month: progress.advance(bar),
        )
    console.print(f"wrote {path}")


@cli.command()
def train(
    task: Annotated[Task, typer.Argument(help="Which model to train.")],
    out: Annotated[Path, typer.Option(help="Model folder, e.g. models/churn/2.")],
    book: Annotated[
        Path | None, typer.Option(help="Synthetic (or same-shaped) book: folder or Parquet.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Your own CSV or Parquet file.")] = None,
    target: Annotated[str | None, typer.Option(help="Target column (with --data).")] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="Unique id column.")] = None,
    drop: Annotated[list[str] | None, typer.Option(help="Column to leave out (repeat).")] = None,
    categorical: Annotated[
        list[str] | None, typer.Option(help="Column to treat as categorical (repeat).")
    ] = None,
    positive: Annotated[str | None, typer.Option(help="Target value meaning positive.")] = None,
    time: Annotated[
        str | None, typer.Option(help="Time column: split by time instead of at random.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits and training.")] = 7,
) -> None:
    """Train a model and write model.txt and manifest.json (test metrics included)."""
    from app.training.byod import DataSpec, train_from_file
    from app.training.train import TrainingDataError, train_bundled

    if (book is None) == (data is None):
        raise _fail("give exactly one of --book (synthetic book) or --data (your own file)")
    with _progress() as progress:
        bar = progress.add_task(f"Training {task.value}", total=None)

        def on_round(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        try:
            if book is not None:
                manifest = train_bundled(
                    task, book_path=book, out_dir=out, seed=seed, progress=on_round
                )
            else:
                assert data is not None
                if target is None or id_column is None:
                    raise _fail("--data needs --target and --id")
                spec = DataSpec(
                    target=target,
                    id_column=id_column,
                    drop=drop or [],
                    categorical=categorical or [],
                    positive=positive,
                    time_column=time,
                )
                manifest = train_from_file(
                    task, data_path=data, spec=spec, out_dir=out, seed=seed, progress=on_round
                )
        except TrainingDataError as error:
            raise _fail(str(error)) from error
    summary = {k: v for k, v in manifest.metrics["test"].items() if not isinstance(v, list)}
    console.print(f"wrote {out} ({manifest.num_trees} trees); test metrics:")
    console.print_json(json.dumps(summary))


@cli.command()
def snapshot(
    book: Annotated[Path, typer.Option(help="Monthly book: folder or Parquet file.")],
    out: Annotated[Path, typer.Option(help="Parquet file to write.")],
    month: Annotated[
        int | None, typer.Option(help="Month to take (default: the last in the book).")
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


@cli.command()
def score(
    task: Annotated[Task, typer.Argument(help="Which kind of model scores the file.")],
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet to score.")],
    output: Annotated[Path, typer.Option(help="Parquet file to write.")],
    model: Annotated[
        Path | None, typer.Option(help="Model folder; default: the active bundled model.")
    ] = None,
    reasons: Annotated[int, typer.Option(min=0, max=20, help="Top reasons per row.")] = 3,
    id_column: Annotated[
        str | None, typer.Option("--id", help="Id column (default: manifest's).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Prediction threads.")] = 2,
) -> None:
    """Score a file with a model: id, score, band or tier, top reasons."""
    from app.ml.model import ModelLoadError, ScoringModel
    from app.ml.registry import available_versions
    from app.services.batch import count_rows, score_file

    settings = get_settings()
    if model is None:
        versions = available_versions(settings.models_dir, task)
        if not versions:
            raise _fail(f"no {task.value} model under {settings.models_dir}")
        model = settings.models_dir / task.value / versions[-1]
    try:
        loaded = ScoringModel.load(model, threads=threads)
    except ModelLoadError as error:
        raise _fail(str(error)) from error
    if loaded.manifest.task is not task:
        raise _fail(f"{model} holds a {loaded.manifest.task.value} model, not {task.value}")
    if not input_path.exists():
        raise _fail(f"input not found: {input_path}")
    with _progress() as progress:
        bar = progress.add_task("Scoring", total=count_rows(input_path))
        try:
            summary = score_file(
                loaded,
                input_path=input_path,
                output_path=output,
                id_column=id_column,
                reasons=reasons,
                on_chunk=lambda rows: progress.advance(bar, rows),
            )
        except ValueError as error:
            raise _fail(str(error)) from error
    console.print(
        f"scored {summary.rows_scored:,} of {summary.rows_read:,} rows -> {output}; "
        f"rejected {summary.rows_rejected:,}"
        + (f" (see {summary.rejects_path})" if summary.rejects_path else "")
    )


@cli.command()
def models() -> None:
    """List the models on disk and their test metrics."""
    from app.ml.manifest import Manifest
    from app.ml.registry import available_versions

    settings = get_settings()
    table = Table("task", "version", "trees", "test metric", "created")
    for task in Task:
        for version in available_versions(settings.models_dir, task):
            manifest = Manifest.load(settings.models_dir / task.value / version)
            test = manifest.metrics.get("test", {})
            headline = next(
                (f"{k}={test[k]}" for k in ("roc_auc", "accuracy") if k in test),
                f"map_at_7={test.get('all_customers', {}).get('map_at_7')}",
            )
            table.add_row(
                task.value,
                version,
                str(manifest.num_trees),
                headline,
                f"{manifest.created_at:%Y-%m-%d}",
            )
    Console().print(table)


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from app.db.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (e.g. base)."""
    from app.db.migrate import downgrade

    downgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from app.db.migrate import current

    typer.echo(current(get_settings().database_url) or "none")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP service with uvicorn."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


def main() -> None:
    """Console-script entry point."""
    cli()
