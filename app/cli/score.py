"""``cvm score``: score a whole file (or a Dask cluster's worth) with one model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.app import console, fail, progress_bar
from app.config import get_settings
from app.scoring.manifest import Task

if TYPE_CHECKING:
    from app.alerts.service import ChurnAlerts
    from app.batch.service import BatchModel
    from app.security.pseudonyms import Pseudonymizer

commands = typer.Typer()


@commands.command()
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
                raise fail(f"no {task.value} model under {settings.models_dir}")
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
                raise fail(str(error)) from error
        if loaded.manifest.task is not task:
            raise fail(f"{model} holds a {loaded.manifest.task.value} model, not {task.value}")
        if not input_path.exists():
            raise fail(f"input not found: {input_path}")
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

            with progress_bar() as progress, dask_client(dask) as client:
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
                    raise fail(str(error)) from error
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
                    raise fail(str(error)) from error
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
                with progress_bar() as progress:
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
                raise fail(str(error)) from error
            except database_errors as error:
                from app.db.errors import describe_db_error

                raise fail(
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
