"""``cvm outcomes import``, ``cvm backtest`` and ``cvm monitor``: what became of customers, how
the stored scores did against it, and how far the served inputs drifted. Each computed report is
stored: the console shows the stored ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from app.cli.app import console, example, fail
from app.scoring.manifest import Task

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
        f"{task.value} outcomes: {result.inserted} stored, {result.already_stored} already "
        f"there; {result.backtests} stored backtest(s) recomputed"
    )


@commands.command(
    epilog=example(
        "cvm backtest churn",
        "cvm backtest churn --version 2 --json",
        "cvm backtest churn --version 2 --tenant bank-a --resamples 100",
    )
)
def backtest(
    task: Annotated[Task, typer.Argument(help="churn or prospect.", metavar="TASK")],
    version: Annotated[
        str | None, typer.Option(help="Only this version's scores.", metavar="VERSION")
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            help="Only this tenant's scores and outcomes (default: all).", metavar="TENANT"
        ),
    ] = None,
    resamples: Annotated[
        int, typer.Option(min=20, max=1000, help="Bootstrap resamples.", metavar="N")
    ] = 200,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.", metavar="")
    ] = False,
) -> None:
    """Stored scores against imported outcomes, per month: AUC, Brier, observed/expected and
    top-decile lift with 95% intervals; the report is stored (the console shows it)."""
    from datetime import UTC, datetime

    from app.cli.models import _run
    from app.modelops.backtest import store_backtest
    from app.scoring.repository import TenantScope

    report = _run(
        lambda session, _: store_backtest(
            session,
            task=task,
            version=version,
            tenant=None if tenant is None else TenantScope(tenant),
            resamples=resamples,
            now=datetime.now(UTC),
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


@commands.command(
    epilog=example("cvm monitor churn --tenant bank-a", "cvm monitor churn --version 2 --rows 5000")
)
def monitor(
    task: Annotated[Task, typer.Argument(help="The model's task.", metavar="TASK")],
    version: Annotated[
        str | None, typer.Option(help="Default: the champion.", metavar="VERSION")
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="Only this tenant's stored rows (default: all).", metavar="TENANT"),
    ] = None,
    rows: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Newest stored rows compared.", metavar="N")
    ] = 5000,
) -> None:
    """PSI per feature and of the score of the newest stored rows against the training bins;
    the run is stored (the console shows the latest)."""
    from datetime import UTC, datetime

    from app.cli.models import _run
    from app.modelops.monitoring import monitor as compute
    from app.modelops.monitoring import record_run
    from app.modelops.schemas import MonitoringReport
    from app.scoring.repository import TenantScope

    scope = None if tenant is None else TenantScope(tenant)

    def run(session: Session, _: object) -> MonitoringReport:
        report = compute(session, task=task, version=version, since=None, limit=rows, tenant=scope)
        record_run(session, report=report, tenant=scope, now=datetime.now(UTC))
        return report

    report = _run(run)
    table = Table("feature", "psi", "band", "flagged")
    for row in [*filter(None, [report.score]), *report.features]:
        table.add_row(row.name, f"{row.psi:.4f}", row.band, "yes" if row.flagged else "no")
    console.print(table)
    console.print(
        f"{task.value} version {report.version}: {report.current_rows} stored rows against "
        f"{report.reference_rows} training rows"
    )
