"""``cvm train`` and ``cvm plot``: fit a model into a folder, draw its model card."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.app import console, example, fail, progress_bar
from app.scoring.manifest import Task

if TYPE_CHECKING:
    from app.training.panel import PanelSpec

commands = typer.Typer()
_YEAR_CYCLE_TASKS = frozenset({"churn", "prospect", "tier"})  # the tasks `--data` trains directly


class Trainable(StrEnum):
    """What ``cvm train`` fits: the four served tasks, and the tier-movement model."""

    TIER = Task.TIER.value
    RECOMMENDATION = Task.RECOMMENDATION.value
    CHURN = Task.CHURN.value
    PROSPECT = Task.PROSPECT.value
    TIER_MOVEMENT = "tier-movement"


@commands.command(
    epilog=example(
        "cvm train churn --book var/book --out models/churn/2",
        "cvm train churn --data my.csv --target left --id cust_no --out models/churn/3",
        "cvm train tier-movement --book var/book --out var/tier-movement/1",
    )
)
def train(
    trainable: Annotated[
        Trainable,
        typer.Argument(
            help="Which model to train: tier, recommendation, churn, prospect or "
            "tier-movement (down/stay/up next month; trained, not served).",
            metavar="TASK",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Model folder, e.g. models/churn/2.", metavar="DIR")],
    book: Annotated[
        Path | None,
        typer.Option(help="Synthetic (or same-shaped) book: folder or Parquet.", metavar="PATH"),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Your own CSV or Parquet file.", metavar="FILE")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column (with --data).", metavar="COLUMN")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option("--id", help="Unique id column.", metavar="COLUMN")
    ] = None,
    drop: Annotated[
        list[str] | None, typer.Option(help="Column to leave out (repeat).", metavar="COLUMN")
    ] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option(help="Column to treat as categorical (repeat).", metavar="COLUMN"),
    ] = None,
    positive: Annotated[
        str | None, typer.Option(help="Target value meaning positive.", metavar="VALUE")
    ] = None,
    time: Annotated[
        str | None,
        typer.Option(help="Time column: split by time instead of at random.", metavar="COLUMN"),
    ] = None,
    year_cycle: Annotated[
        tuple[str, str] | None,
        typer.Option(
            help="With --data: a month column and a day-of-month column; the date's place in "
            "the year becomes two derived features (sine and cosine), computed when serving too.",
            metavar="MONTH DAY",
        ),
    ] = None,
    product: Annotated[
        list[str] | None,
        typer.Option(
            help="Recommendation from a monthly panel (--data, --time): a 0/1 product "
            "ownership column (repeat).",
            metavar="COLUMN",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits and training.", metavar="N")] = 7,
    dask: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS|local",
            help="Train on a Dask cluster (lightgbm.dask): scheduler address, or 'local'.",
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Boosting rounds with --dask (it has no early stopping).", metavar="N"
        ),
    ] = 200,
    trials: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --data or tier-movement: configurations the search tries inside the "
            "training window "
            "(1: the house configuration only).",
            metavar="N",
        ),
    ] = 6,  # app.training.tuning.TRIALS (training is imported only when a command runs)
    indices: Annotated[
        bool,
        typer.Option(
            "--indices",
            help="Churn from --book: also read the satisfaction and loyalty indices.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Train a model and write model.txt and manifest.json (test metrics included)."""
    from app.training.byod import DataSpec, train_from_file
    from app.training.panel import PanelSpec
    from app.training.train import TrainingDataError, train_bundled
    from app.training.tuning import TuningOptions

    if year_cycle is not None and (data is None or trainable.value not in _YEAR_CYCLE_TASKS):
        raise fail(
            "--year-cycle reads two columns of your own file: churn, prospect or tier --data"
        )
    if trainable is Trainable.TIER_MOVEMENT:
        if book is None or data is not None or dask is not None or indices:
            raise fail("tier-movement trains from a --book alone")
        _train_tier_movement(book=book, out=out, seed=seed, trials=trials)
        return
    task = Task(trainable.value)
    if task is Task.RECOMMENDATION and data is not None:
        if not (id_column and time and product) or dask is not None:
            raise fail("recommendation from --data needs --id, --time and --product (a panel)")
        panel = PanelSpec(
            id_column=id_column,
            month_column=time,
            products=product,
            drop=drop or [],
            categorical=categorical or [],
        )
        _train_panel(data=data, spec=panel, out=out, seed=seed, trials=trials)
        return
    if (book is None) == (data is None):
        raise fail("give exactly one of --book (synthetic book) or --data (your own file)")
    if indices and (task is not Task.CHURN or book is None or dask is not None):
        raise fail("--indices trains churn from a --book (without --dask)")
    if dask is not None:
        from app.batch.dask import dask_client
        from app.training.distributed import train_on_dask

        if book is None:
            raise fail("--dask trains from a --book")
        try:
            with (
                console.status(f"Training {task.value} on Dask ({dask})"),
                dask_client(dask) as client,
            ):
                manifest = train_on_dask(
                    task, client=client, book_path=book, out_dir=out, seed=seed, rounds=rounds
                )
        except TrainingDataError as error:
            raise fail(str(error)) from error
        console.print(f"wrote {out} ({manifest.num_trees} trees, trained on Dask)")
        return
    with progress_bar() as progress:
        bar = progress.add_task(f"Training {task.value}", total=None)

        def on_round(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        try:
            if book is not None:
                manifest = train_bundled(
                    task,
                    book_path=book,
                    out_dir=out,
                    seed=seed,
                    progress=on_round,
                    indices=indices,
                )
            else:
                assert data is not None
                if target is None or id_column is None:
                    raise fail("--data needs --target and --id")
                spec = DataSpec(
                    target=target,
                    id_column=id_column,
                    drop=drop or [],
                    categorical=categorical or [],
                    positive=positive,
                    time_column=time,
                    year_cycle=year_cycle,
                )
                manifest = train_from_file(
                    task,
                    data_path=data,
                    spec=spec,
                    out_dir=out,
                    seed=seed,
                    progress=on_round,
                    tuning=TuningOptions(trials=trials),
                )
        except TrainingDataError as error:
            raise fail(str(error)) from error
    summary = {k: v for k, v in manifest.metrics["test"].items() if not isinstance(v, list)}
    console.print(f"wrote {out} ({manifest.num_trees} trees); test metrics:")
    console.print_json(json.dumps(summary))


def _train_panel(*, data: Path, spec: PanelSpec, out: Path, seed: int, trials: int) -> None:
    from app.training.panel import train_recommendation_panel
    from app.training.train import TrainingDataError
    from app.training.tuning import TuningOptions

    try:
        with console.status("Training recommendation on the panel"):
            manifest = train_recommendation_panel(
                data_path=data,
                spec=spec,
                out_dir=out,
                seed=seed,
                tuning=TuningOptions(trials=trials),
            )
    except TrainingDataError as error:
        raise fail(str(error)) from error
    test = manifest.metrics["test"]
    summary = {
        group: {k: v for k, v in test[group].items() if k != "map_at_7_interval"} for group in test
    }
    console.print(f"wrote {out} ({manifest.num_trees} trees); test month MAP@7:")
    console.print_json(json.dumps(summary))


def _train_tier_movement(*, book: Path, out: Path, seed: int, trials: int) -> None:
    from app.training.movement import train_tier_movement
    from app.training.train import TrainingDataError
    from app.training.tuning import TuningOptions

    try:
        with console.status("Training tier-movement"):
            manifest = train_tier_movement(
                book_path=book, out_dir=out, seed=seed, options=TuningOptions(trials=trials)
            )
    except TrainingDataError as error:
        raise fail(str(error)) from error
    test = manifest.metrics["test"]
    summary = {
        "rows": test["rows"],
        "accuracy": test["accuracy"],
        "persistence_accuracy": test["persistence"]["accuracy"],
        "log_loss": test["log_loss"],
        "persistence_log_loss": test["persistence"]["log_loss"],
    }
    console.print(
        f"wrote {out} ({manifest.num_trees} trees; not served: keep it out of models/tier)"
    )
    console.print_json(json.dumps(summary))


@commands.command(epilog=example("cvm plot models/churn/1 --out var/churn.png"))
def plot(
    model: Annotated[
        Path, typer.Argument(help="Model folder, e.g. models/churn/1.", metavar="MODEL_DIR")
    ],
    out: Annotated[Path, typer.Option(help="PNG file to write.", metavar="FILE")],
) -> None:
    """Draw a model's held-out metrics (calibration, confusion matrix or ranking) as a PNG."""
    from app.training.report import plot_model_card

    if not (model / "manifest.json").is_file():
        raise fail(f"no manifest.json in {model}")
    console.print(f"wrote {plot_model_card(model, out)}")
