"""``cvm score``: score a whole file (or a Dask cluster's worth) with one model."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID

from app.cli.app import console, example, fail, progress_bar
from app.config import get_settings
from app.scoring.manifest import Task

if TYPE_CHECKING:
    from app.batch.run import BatchRun

commands = typer.Typer()


class ProgressDisplay:
    """A run's progress on the console: the bar appears when scoring starts (a run refused
    before then prints its error alone) and is gone before the summary or the error."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.bar: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start(self, *, label: str, total_rows: int | None) -> None:
        """Draw the bar."""
        self.progress = progress_bar()
        self.progress.start()
        self.bar = self.progress.add_task(label, total=total_rows)

    def advance(self, rows: int) -> None:
        """Move the bar on by ``rows``."""
        assert self.progress is not None and self.bar is not None
        self.progress.advance(self.bar, rows)

    def note(self, message: str) -> None:
        """Print a line above the bar."""
        console.print(escape(message))

    def warn(self, message: str) -> None:
        """Print a warning above the bar."""
        console.print(f"[yellow]warning:[/yellow] {escape(message)}")


@commands.command(
    epilog=example(
        "cvm score churn --input var/latest.parquet --output var/churn.parquet --reasons 3 "
        "--persist"
    )
)
def score(
    task: Annotated[
        Task, typer.Argument(help="Which kind of model scores the file.", metavar="TASK")
    ],
    input_path: Annotated[
        Path,
        typer.Option("--input", help="CSV or Parquet (file or folder) to score.", metavar="PATH"),
    ],
    output: Annotated[
        Path,
        typer.Option(
            help="Parquet file to write (a folder of part files with --dask).", metavar="PATH"
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="Model folder; default: the active bundled model.", metavar="DIR"),
    ] = None,
    reasons: Annotated[
        int, typer.Option(min=0, max=20, help="Top reasons per row.", metavar="N")
    ] = 3,
    id_column: Annotated[
        str | None, typer.Option("--id", help="Id column (default: manifest's).", metavar="COLUMN")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Prediction threads (default: every core; per task with --dask).",
            metavar="N",
        ),
    ] = None,
    persist: Annotated[
        bool,
        typer.Option(
            "--persist",
            help="Also save the scores to the database, one transaction per chunk (ids "
            "pseudonymised and churn alerts opened as the API does); a rerun after a crash "
            "skips the chunks already committed.",
            metavar="",
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
        int | None, typer.Option(min=1, help="Rows per chunk (default from settings).", metavar="N")
    ] = None,
) -> None:
    """Score a file with a model: id, score, band or tier, top reasons."""
    from app.batch.run import BatchRunError, run_batch

    try:
        with ProgressDisplay() as display:
            run = run_batch(
                task=task,
                input_path=input_path,
                output=output,
                settings=get_settings(),
                progress=display,
                model_dir=model,
                reasons=reasons,
                id_column=id_column,
                threads=threads,
                chunk_rows=chunk_rows,
                backend=backend,
                dask=dask,
                persist=persist,
            )
    except BatchRunError as error:
        raise fail(str(error)) from error
    print_summary(run, output=output, persist=persist)


def print_summary(run: BatchRun, *, output: Path, persist: bool) -> None:
    """What the run did, in a line (two when the scores were saved)."""
    summary = run.summary
    console.print(
        f"scored {summary.rows_scored:,} of {summary.rows_read:,} rows -> {output}; "
        f"rejected {summary.rows_rejected:,}"
        + (f" (see {summary.rejects_path})" if summary.rejects_path else "")
        + f"; {run.seconds:.1f} s, {summary.rows_read / max(run.seconds, 1e-9):,.0f} rows/s"
        + f" on {run.engine}"
    )
    if persist:
        console.print(
            f"saved {summary.rows_persisted:,} rows in {summary.chunks_persisted} chunks "
            f"(run {summary.run_id}); {summary.chunks_skipped} chunks were already saved"
        )
