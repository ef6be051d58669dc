"""The ``cvm`` command: generate a book, train, score files, migrate the database, serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

from app.cli.alerts import alerts_cli
from app.config import get_settings
from app.scoring.manifest import Task

if TYPE_CHECKING:
    from app.alerts.service import ChurnAlerts
    from app.batch.service import BatchModel
    from app.security.pseudonyms import Pseudonymizer

cli = typer.Typer(
    help="CVM: customer value scoring for retail banks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_cli = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
clients_cli = typer.Typer(help="API clients: keys, scopes, tenants.", no_args_is_help=True)
cli.add_typer(clients_cli, name="clients")
cli.add_typer(alerts_cli, name="alerts")
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
    dask: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS|local",
            help="Train on a Dask cluster (lightgbm.dask): scheduler address, or 'local'.",
        ),
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, help="Boosting rounds with --dask (it has no early stopping).")
    ] = 200,
) -> None:
    """Train a model and write model.txt and manifest.json (test metrics included)."""
    from app.training.byod import DataSpec, train_from_file
    from app.training.train import TrainingDataError, train_bundled

    if (book is None) == (data is None):
        raise _fail("give exactly one of --book (synthetic book) or --data (your own file)")
    if dask is not None:
        from app.batch.dask import dask_client
        from app.training.distributed import train_on_dask

        if book is None:
            raise _fail("--dask trains from a --book")
        try:
            with (
                console.status(f"Training {task.value} on Dask ({dask})"),
                dask_client(dask) as client,
            ):
                manifest = train_on_dask(
                    task, client=client, book_path=book, out_dir=out, seed=seed, rounds=rounds
                )
        except TrainingDataError as error:
            raise _fail(str(error)) from error
        console.print(f"wrote {out} ({manifest.num_trees} trees, trained on Dask)")
        return
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
    input_path: Annotated[
        Path, typer.Option("--input", help="CSV or Parquet (file or folder) to score.")
    ],
    output: Annotated[
        Path, typer.Option(help="Parquet file to write (a folder of part files with --dask).")
    ],
    model: Annotated[
        Path | None, typer.Option(help="Model folder; default: the active bundled model.")
    ] = None,
    reasons: Annotated[int, typer.Option(min=0, max=20, help="Top reasons per row.")] = 3,
    id_column: Annotated[
        str | None, typer.Option("--id", help="Id column (default: manifest's).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Prediction threads (default: every core; per task with --dask)."),
    ] = None,
    persist: Annotated[
        bool,
        typer.Option(
            "--persist",
            help="Also save the scores to the database, one transaction per chunk (ids "
            "pseudonymised and churn alerts opened as the API does); a rerun after a crash "
            "skips the chunks already committed.",
        ),
    ] = False,
    backend: Annotated[
        str | None,
        typer.Option(
            metavar="auto|lightgbm|compiled",
            help="Prediction engine: compiled (lleaves; compiled once and cached), lightgbm, "
            "or auto (compiled when already cached). Default from settings.",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS|local",
            help="Score on a Dask cluster: scheduler address, or 'local' for this machine.",
        ),
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(min=1, help="Rows per chunk (default from settings).")
    ] = None,
) -> None:
    """Score a file with a model: id, score, band or tier, top reasons."""
    import os
    import time
    from contextlib import ExitStack

    from app.scoring.lean_import import optional_packages_hidden

    with ExitStack() as scope:
        if dask is None:
            # Scoring on this machine uses neither scikit-learn nor pandas: hidden, LightGBM and
            # pyarrow do not import them, and start-up is ~1.7 s shorter (lean_import.py).
            scope.enter_context(optional_packages_hidden())
        from app.batch.service import count_rows, score_file
        from app.scoring.compiled import (
            CompiledModel,
            CompiledUnavailable,
            load_compiled_model,
            select_backend,
        )
        from app.scoring.registry import available_versions

        settings = get_settings()
        if model is None:
            versions = available_versions(settings.models_dir, task)
            if not versions:
                raise _fail(f"no {task.value} model under {settings.models_dir}")
            model = settings.models_dir / task.value / versions[-1]
        chunk_rows = chunk_rows or settings.batch_chunk_rows
        default_threads = 1 if dask is not None else (os.cpu_count() or 1)
        threads = threads or settings.batch_threads or default_threads
        choice = backend or settings.batch_backend
        loaded: BatchModel | None = None
        if dask is None and reasons == 0 and choice in ("auto", "compiled"):
            # Scores alone from a cached library that its reference vouches for: LightGBM is
            # never loaded (app/ml/compiled.py); otherwise it is, and checks the library live.
            loaded = load_compiled_model(model, cache_dir=settings.compiled_dir, threads=threads)
        if loaded is None:
            from app.scoring.model import ModelLoadError, ScoringModel

            try:
                loaded = ScoringModel.load(model, threads=threads)
            except ModelLoadError as error:
                raise _fail(str(error)) from error
        if loaded.manifest.task is not task:
            raise _fail(f"{model} holds a {loaded.manifest.task.value} model, not {task.value}")
        if not input_path.exists():
            raise _fail(f"input not found: {input_path}")
        database_url = settings.database_url if persist else None
        # Saved as the API saves: ids pseudonymised when a secret is set, churn alerts opened.
        pseudonymizer: Pseudonymizer | None = None
        alerts: ChurnAlerts | None = None
        if persist:  # imported only to save: the alert logic brings SQLAlchemy
            from app.alerts.service import ChurnAlerts
            from app.security.pseudonyms import Pseudonymizer

            pseudonymizer = Pseudonymizer.from_settings(settings)
            alerts = ChurnAlerts.from_settings(settings)
        started = time.perf_counter()
        if dask is not None:
            from app.batch.dask import dask_client, score_on_dask

            with _progress() as progress, dask_client(dask) as client:
                bar = progress.add_task("Scoring on Dask", total=count_rows(input_path))
                try:
                    summary = score_on_dask(
                        client,
                        model_dir=model,
                        input_path=input_path,
                        output_dir=output,
                        id_column=id_column,
                        reasons=reasons,
                        chunk_rows=chunk_rows,
                        threads=threads,
                        database_url=database_url,
                        pseudonymizer=pseudonymizer,
                        alerts=alerts,
                        on_partition=lambda rows: progress.advance(bar, rows),
                    )
                except ValueError as error:
                    raise _fail(str(error)) from error
            engine_name = "lightgbm"
        else:
            if not isinstance(loaded, CompiledModel):
                try:
                    status = select_backend(
                        loaded,
                        model_file=model / loaded.manifest.model_file,
                        choice=choice,
                        cache_dir=settings.compiled_dir,
                    )
                except CompiledUnavailable as error:
                    raise _fail(str(error)) from error
                if status.compile_seconds is not None:
                    console.print(f"compiled the model in {status.compile_seconds:.1f} s")
                if status.reason and choice == "compiled":
                    console.print(f"[yellow]warning:[/yellow] using LightGBM: {status.reason}")
            engine_name = loaded.backend
            engine = None
            sink = None
            database_errors: tuple[type[Exception], ...] = ()
            if database_url is not None:  # SQLAlchemy is imported only when it is used
                from sqlalchemy.exc import SQLAlchemyError

                from app.batch.persist import DatabaseChunkSink, run_id_for
                from app.db.session import create_db_engine

                database_errors = (SQLAlchemyError,)
                engine = create_db_engine(database_url)
                run_id = run_id_for(input_path=input_path, model=loaded, chunk_rows=chunk_rows)
                sink = DatabaseChunkSink(
                    engine,
                    model=loaded,
                    run_id=run_id,
                    pseudonymizer=pseudonymizer,
                    alerts=alerts,
                    model_dir=model,
                )
            try:
                with _progress() as progress:
                    bar = progress.add_task("Scoring", total=count_rows(input_path))
                    summary = score_file(
                        loaded,
                        input_path=input_path,
                        output_path=output,
                        id_column=id_column,
                        reasons=reasons,
                        chunk_rows=chunk_rows,
                        sink=sink,
                        on_chunk=lambda rows: progress.advance(bar, rows),
                    )
            except ValueError as error:
                raise _fail(str(error)) from error
            except database_errors as error:
                from app.db.errors import describe_db_error

                raise _fail(
                    f"could not save the scores ({describe_db_error(error)}); committed chunks are "
                    "kept and a rerun resumes after them (is the database migrated? cvm db upgrade)"
                ) from error
            finally:
                if engine is not None:
                    engine.dispose()
            if sink is not None:
                summary.run_id = sink.run_id
        seconds = time.perf_counter() - started
        console.print(
            f"scored {summary.rows_scored:,} of {summary.rows_read:,} rows -> {output}; "
            f"rejected {summary.rows_rejected:,}"
            + (f" (see {summary.rejects_path})" if summary.rejects_path else "")
            + f"; {seconds:.1f} s, {summary.rows_read / max(seconds, 1e-9):,.0f} rows/s"
            + f" on {engine_name}"
        )
        if persist:
            console.print(
                f"saved {summary.rows_persisted:,} rows in {summary.chunks_persisted} chunks "
                f"(run {summary.run_id}); {summary.chunks_skipped} chunks were already saved"
            )


@cli.command()
def plot(
    model: Annotated[Path, typer.Argument(help="Model folder, e.g. models/churn/1.")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
) -> None:
    """Draw a model's held-out metrics (calibration, confusion matrix or ranking) as a PNG."""
    from app.training.report import plot_model_card

    if not (model / "manifest.json").is_file():
        raise _fail(f"no manifest.json in {model}")
    console.print(f"wrote {plot_model_card(model, out)}")


@cli.command()
def models() -> None:
    """List the models on disk and their test metrics."""
    from app.scoring.manifest import Manifest
    from app.scoring.registry import available_versions

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
def dispatch(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit (for cron).")
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Messages claimed per round (default from settings).")
    ] = None,
    requeue_failed: Annotated[
        bool,
        typer.Option("--requeue-failed", help="First retry messages that ran out of attempts."),
    ] = False,
) -> None:
    """Deliver alert notifications from the outbox (e-mail, webhook), retrying until they land.

    Runs until Ctrl-C or SIGTERM, finishing the message in hand. Several may run at once.
    With --once the exit code is 1 when any attempt failed (it will be retried).
    """
    import signal

    from sqlalchemy.engine import make_url

    from app.alerts.repository import outbox_counts
    from app.alerts.repository import requeue_failed as requeue
    from app.alerts.service import utc_now
    from app.db.session import create_db_engine
    from app.notifications.service import DispatchReport, build_dispatcher

    settings = get_settings()
    if batch_size is not None:
        settings = settings.model_copy(update={"dispatch_batch_size": batch_size})
    engine = create_db_engine(settings.database_url)
    dispatcher = build_dispatcher(settings, engine)
    if dispatcher is None:
        engine.dispose()
        raise _fail("no notification channel is on: set CVM_EMAIL_ENABLED or CVM_WEBHOOK_ENABLED")

    def summary(report: DispatchReport) -> str:
        return (
            f"delivered {report.delivered}, retrying {report.retried}, failed {report.failed}"
            + (f", digests composed {report.digests}" if report.digests else "")
            + (f", released {report.released}" if report.released else "")
        )

    try:
        database = make_url(settings.database_url).render_as_string(hide_password=True)
        console.print(
            f"dispatcher {dispatcher.name}: channels {', '.join(sorted(dispatcher.channels))}; "
            f"database {database}"
        )
        if requeue_failed:
            with engine.begin() as connection:
                console.print(f"requeued {requeue(connection, now=utc_now())} failed messages")
        if once:
            with console.status("Delivering"):
                report = dispatcher.drain()
            with engine.connect() as connection:
                left = outbox_counts(connection)
            console.print(
                f"{summary(report)}; outbox now: pending {left.get('pending', 0)}, "
                f"delivered {left.get('delivered', 0)}, failed {left.get('failed', 0)}"
            )
            if report.retried or report.failed:
                raise typer.Exit(code=1)
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: dispatcher.request_stop())
        console.print("dispatching; Ctrl-C to stop")
        dispatcher.run(on_round=lambda report: console.log(summary(report)))
        console.print("stopped")
    finally:
        dispatcher.stop()
        engine.dispose()


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP service with uvicorn."""
    import os

    import uvicorn

    # One request is one row: OpenMP threads would only contend with the event loop. Must be
    # set before LightGBM loads (the app factory imports it).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = get_settings()
    uvicorn.run(
        "app.http.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@clients_cli.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. core-banking.")],
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scopes",
            help="scores:write, scores:read, alerts:read, alerts:write, models:read, admin "
            "(repeat, or comma-separated).",
        ),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Limit the client to this tenant's data.")
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(min=0.001, help="Requests per second (default from settings)."),
    ] = None,
) -> None:
    """Create a client and print its API key once: only its hash is stored."""
    from app.db.session import create_db_engine
    from app.security.api_keys import create_client

    wanted = [s for item in scopes for s in item.replace(",", " ").split()]
    engine = create_db_engine(get_settings().database_url)
    try:
        info, key = create_client(
            engine, name=name, scopes=wanted, tenant=tenant, rate_limit_per_s=rate_limit
        )
    except ValueError as error:
        raise _fail(str(error)) from error
    finally:
        engine.dispose()
    console.print(
        f"created client {info.id} ({info.name}; scopes {' '.join(info.scopes)}"
        + (f"; tenant {info.tenant}" if info.tenant else "")
        + "). Its API key, shown this once:"
    )
    typer.echo(key)


@clients_cli.command("revoke")
def clients_revoke(
    client_id: Annotated[str, typer.Argument(help="The client's id (cl_...).")],
) -> None:
    """Revoke a client's key; every replica refuses it within the auth cache TTL."""
    from app.db.session import create_db_engine
    from app.security.api_keys import revoke_client

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    try:
        revoked = revoke_client(engine, client_id=client_id)
    finally:
        engine.dispose()
    if not revoked:
        raise _fail(f"no active client {client_id}")
    console.print(f"revoked {client_id}; refused everywhere within {settings.auth_cache_ttl_s:g} s")


@clients_cli.command("list")
def clients_list(
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked clients.")] = False,
) -> None:
    """List clients: id, name, key prefix, scopes, tenant (never a key)."""
    from app.db.session import create_db_engine
    from app.security.api_keys import list_clients

    engine = create_db_engine(get_settings().database_url)
    try:
        clients = list_clients(engine, include_revoked=revoked)
    finally:
        engine.dispose()
    table = Table("id", "name", "key", "scopes", "tenant", "rate/s", "created", "revoked")
    for c in clients:
        table.add_row(
            c.id,
            c.name,
            c.key_prefix + "...",
            " ".join(c.scopes),
            c.tenant or "",
            "" if c.rate_limit_per_s is None else f"{c.rate_limit_per_s:g}",
            f"{c.created_at:%Y-%m-%d %H:%M}",
            "" if c.revoked_at is None else f"{c.revoked_at:%Y-%m-%d %H:%M}",
        )
    Console(width=200).print(table)


def main() -> None:
    """Console-script entry point."""
    cli()
