"""``cvm outcomes import`` and ``cvm backtest``: what became of customers, and how the stored
scores did against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from app.cli.app import console, example, fail
from app.scoring.manifest import Task

outcomes = typer.Typer(
    name="outcomes",
    help="Outcomes reported by the bank (who left, who converted), for backtests.",
    no_args_is_help=True,
    epilog=example("cvm outcomes import left.csv --task churn --observed-through 2026-06-30"),
)
commands = typer.Typer()


@outcomes.command(
    "import",
    epilog=example(
        "cvm outcomes import left.csv --task churn --observed-through 2026-06-30",
        "# customer_id,occurred_at",
        "# C000123,2026-03-14",
    ),
)
def import_outcomes(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV with a header row."),
    ],
    task: Annotated[
        Task,
        typer.Option(help="churn (left) or prospect (became a customer).", metavar="TASK"),
    ],
    observed_through: Annotated[
        str,
        typer.Option(
            metavar="DATE",
            help="The day the file is complete through: customers not in it stayed (or did "
            "not convert) until then.",
        ),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="The tenant the customers belong to.", metavar="TENANT")
    ] = None,
) -> None:
    """Store outcomes from a CSV (customer_id, occurred_at): every row, or none."""
    from datetime import UTC, datetime

    from app.cli.models import _run
    from app.modelops.backtest import import_outcomes as store
    from app.modelops.backtest import parse_instant, read_outcomes_csv

    try:
        rows = read_outcomes_csv(file.read_text(encoding="utf-8-sig"))
        through = parse_instant(observed_through, field="--observed-through")
    except ValueError as error:
        raise fail(f"nothing imported: {error}") from error
    result = _run(
        lambda session, _: store(
            session,
            task=task,
            rows=rows,
            observed_through=through,
            tenant=tenant,
            source=file.name,
            now=datetime.now(UTC),
        )
    )
    console.print(
        f"{task.value} outcomes: {result.inserted} stored, {result.already_stored} already there"
    )


@commands.command(epilog=example("cvm backtest churn", "cvm backtest churn --version 2 --json"))
def backtest(
    task: Annotated[Task, typer.Argument(help="churn or prospect.", metavar="TASK")],
    version: Annotated[
        str | None, typer.Option(help="Only this version's scores.", metavar="VERSION")
    ] = None,
    resamples: Annotated[
        int, typer.Option(min=20, max=1000, help="Bootstrap resamples.", metavar="N")
    ] = 200,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.", metavar="")
    ] = False,
) -> None:
    """Stored scores against imported outcomes, per month: AUC, Brier, observed/expected and
    top-decile lift with 95% intervals."""
    from app.cli.models import _run
    from app.modelops.backtest import backtest as run

    report = _run(
        lambda session, _: run(
            session, task=task, version=version, tenant=None, resamples=resamples
        )
    )
    if as_json:
        console.print_json(json.dumps(report.model_dump(mode="json")))
        return
    table = Table("month", "rows", "left" if task is Task.CHURN else "converted")
    names = ("roc_auc", "brier", "observed_over_expected", "top_decile_lift")
    for name in names:
        table.add_column(name.replace("_", " "))
    for month in [*report.months, *filter(None, [report.overall])]:
        cells = []
        for name in names:
            e = month.metrics[name]
            cells.append("-" if e.value is None else f"{e.value:.3f} [{e.ci_low}, {e.ci_high}]")
        table.add_row(month.month, str(month.rows), str(month.positives), *cells)
    console.print(table)
    console.print(
        f"outcome: {report.outcome} within {report.horizon_days} days; outcomes complete through "
        f"{report.observed_through:%Y-%m-%d}"
    )
