"""``cvm casework``: the complaint deadline sweep, the retention purge and the reports."""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.app import console, database_session, example, fail

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.casework.schemas import CaseworkReport, ComplaintsReturn
    from app.casework.service import Casework

commands = typer.Typer(
    name="casework",
    help="Complaints: deadline warnings and escalations, retention.",
    no_args_is_help=True,
    epilog=example(
        "cvm casework tick",
        "cvm casework digest",
        "cvm casework purge",
        "cvm casework report --half 2026H1 --format csv",
    ),
)


@commands.command("tick", epilog=example("cvm casework tick   # every few minutes, from cron"))
def tick(
    at: Annotated[
        datetime | None,
        typer.Option(
            "--at",
            help="Sweep as if it were this instant (ISO 8601, UTC if no zone); default now.",
            metavar="WHEN",
        ),
    ] = None,
) -> None:
    """Warn owners at 60% of a complaint's time, supervisors at 80%, escalate at 100%; route
    new churn alerts; give alerts not accepted in time to the assignee's supervisor.

    Each fires once per clock, however many sweeps run, at once or again.
    """
    from app.casework.routing import RoutingPolicy, route_new_alerts, sweep_acceptance
    from app.casework.service import sweep_deadlines
    from app.config import get_settings

    now = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    settings = get_settings()
    policy = RoutingPolicy.from_settings(settings)
    with database_session() as session:
        summary = sweep_deadlines(session, now=now)
        routed = route_new_alerts(session, policy=policy, now=now)
        timed_out = sweep_acceptance(session, policy=policy, now=now)
    console.print(
        f"checked {summary.checked}: owner warnings {len(summary.owner_warnings)}, "
        f"supervisor warnings {len(summary.supervisor_warnings)}, "
        f"escalations {len(summary.escalations)}"
    )
    via = ", ".join(f"{k.value} {v}" for k, v in sorted(routed.routed.items())) or "none"
    console.print(
        f"alerts routed {routed.total_routed} ({via}), accepted elsewhere {routed.accepted}, "
        f"closed {routed.closed}; not accepted in time: to a supervisor or the central queue "
        f"{timed_out.escalated}, stayed {timed_out.stayed}"
    )


@commands.command("digest", epilog=example("cvm casework digest   # daily, in the morning"))
def digest(
    at: Annotated[
        datetime | None,
        typer.Option(
            "--at",
            help="Compose as if it were this instant (ISO 8601, UTC if no zone); default now.",
            metavar="WHEN",
        ),
    ] = None,
) -> None:
    """Queue one e-mail per staff member listing the churn alerts routed to them and still
    open; once per person and day, however often it runs (`cvm dispatch` sends them)."""
    from app.casework.routing import compose_digests

    now = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    with database_session() as session:
        queued = compose_digests(session, now=now)
    console.print(f"digests queued: {queued}")


@commands.command("purge", epilog=example("cvm casework purge   # daily"))
def purge() -> None:
    """Delete complaints closed longer ago than the retention (default 3 years) with their
    audit trail; open complaints are never deleted."""
    from app.casework.service import purge_expired
    from app.config import get_settings

    settings = get_settings()
    with database_session() as session:
        from datetime import timedelta

        gone = purge_expired(
            session,
            now=datetime.now(UTC),
            retention=timedelta(days=settings.casework_retention_days),
        )
    console.print(f"complaints deleted: {gone}")


class ReportFormat(StrEnum):
    """How `cvm casework report` writes its report."""

    JSON = "json"
    CSV = "csv"


RETURN_COLUMNS = ("received", "closed", "upheld", "upheld_share", "redress_total", "outstanding")
CASE_COLUMNS = ("received", "closed", "closed_on_time", "deadline_hit_rate")


def _return_csv(report: ComplaintsReturn) -> str:
    """One line per product, then the total; one column per closed-within bucket."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["half", "product", *RETURN_COLUMNS, *(f"within_{b}" for b in report.buckets)])
    for line in [*report.by_product, report.total]:
        values: dict[str, Any] = line.model_dump()
        writer.writerow(
            [
                report.half,
                line.product,
                *(values[c] for c in RETURN_COLUMNS),
                *(line.closed_within[b] for b in report.buckets),
            ]
        )
    return out.getvalue()


def _casework_csv(report: CaseworkReport) -> str:
    """The totals, then one line per branch and per owner."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "key", *CASE_COLUMNS])
    writer.writerow(["total", "all", *(getattr(report, c) for c in CASE_COLUMNS)])
    for group, lines in (("branch", report.by_branch), ("owner", report.by_owner)):
        for line in lines:
            writer.writerow([group, line.key, *(getattr(line, c) for c in CASE_COLUMNS)])
    return out.getvalue()


@commands.command(
    "report",
    epilog=example(
        "cvm casework report --tenant bank-a --from 2026-01-01 --to 2026-07-01",
        "cvm casework report --tenant bank-a --half 2026H1 --format csv > return.csv",
    ),
)
def report(
    tenant: Annotated[
        str | None, typer.Option(help="The tenant reported on (none: untagged).", metavar="TENANT")
    ] = None,
    half: Annotated[
        str | None,
        typer.Option(help="The half-yearly complaints return of this half-year.", metavar="HALF"),
    ] = None,
    bucket: Annotated[
        list[str] | None,
        typer.Option(
            help="Closed-within mark of the return (3bd, 15d, 8w), repeatable; default 3bd, 8w.",
            metavar="MARK",
        ),
    ] = None,
    date_from: Annotated[
        datetime | None,
        typer.Option(
            "--from", help="First day included (UTC).", formats=["%Y-%m-%d"], metavar="DAY"
        ),
    ] = None,
    date_to: Annotated[
        datetime | None,
        typer.Option("--to", help="First day excluded (UTC).", formats=["%Y-%m-%d"], metavar="DAY"),
    ] = None,
    branch: Annotated[str | None, typer.Option(help="Only this branch.", metavar="BRANCH")] = None,
    output: Annotated[
        ReportFormat, typer.Option("--format", help="json or csv.", metavar="FORMAT")
    ] = ReportFormat.JSON,
) -> None:
    """Print the casework report (volumes, deadlines, root causes, retention) or, with --half,
    the regulator-style complaints return, to standard output."""
    from app.casework.service import Casework
    from app.config import get_settings
    from app.errors import ServiceError

    settings = get_settings()
    try:
        with database_session(writes=False) as session:  # reads only: no write lock held
            text = _report_text(
                session,
                casework=Casework.from_settings(settings),
                tenant=tenant,
                half=half,
                buckets=bucket,
                window=(
                    date_from.date() if date_from else None,
                    date_to.date() if date_to else None,
                ),
                branch=branch,
                output=output,
            )
    except ServiceError as error:
        raise fail(error.detail) from error
    sys.stdout.write(text)


def _report_text(
    session: Session,
    *,
    casework: Casework,
    tenant: str | None,
    half: str | None,
    buckets: list[str] | None,
    window: tuple[date | None, date | None],
    branch: str | None,
    output: ReportFormat,
) -> str:
    """The report asked for, as text in the format asked for."""
    from app.casework import reports

    if half is not None:
        result = reports.complaints_return(
            session,
            tenant=tenant,
            half=reports.parse_half(half, field="--half"),
            clock=casework.clock,
            buckets=reports.parse_buckets(buckets or reports.DEFAULT_BUCKETS, field="--bucket"),
        )
        if output is ReportFormat.CSV:
            return _return_csv(result)
        return result.model_dump_json(indent=2) + "\n"
    casework_report = reports.casework_report(
        session, tenant=tenant, branch=branch, date_from=window[0], date_to=window[1]
    )
    if output is ReportFormat.CSV:
        return _casework_csv(casework_report)
    return casework_report.model_dump_json(indent=2) + "\n"
