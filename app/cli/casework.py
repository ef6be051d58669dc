"""``cvm casework``: the complaint deadline sweep and the retention purge, from cron."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from app.cli.app import console, example

commands = typer.Typer(
    name="casework",
    help="Complaints: deadline warnings and escalations, retention.",
    no_args_is_help=True,
    epilog=example("cvm casework tick", "cvm casework digest", "cvm casework purge"),
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
    from app.db.session import create_db_engine, create_session_factory

    now = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    settings = get_settings()
    policy = RoutingPolicy.from_settings(settings)
    engine = create_db_engine(settings.database_url)
    try:
        with create_session_factory(engine)() as session:
            summary = sweep_deadlines(session, now=now)
            routed = route_new_alerts(session, policy=policy, now=now)
            timed_out = sweep_acceptance(session, policy=policy, now=now)
    finally:
        engine.dispose()
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
    from app.config import get_settings
    from app.db.session import create_db_engine, create_session_factory

    now = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
    engine = create_db_engine(get_settings().database_url)
    try:
        with create_session_factory(engine)() as session:
            queued = compose_digests(session, now=now)
    finally:
        engine.dispose()
    console.print(f"digests queued: {queued}")


@commands.command("purge", epilog=example("cvm casework purge   # daily"))
def purge() -> None:
    """Delete complaints closed longer ago than the retention (default 3 years) with their
    audit trail; open complaints are never deleted."""
    from app.casework.service import purge_expired
    from app.config import get_settings
    from app.db.session import create_db_engine, create_session_factory

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    try:
        with create_session_factory(engine)() as session:
            from datetime import timedelta

            gone = purge_expired(
                session,
                now=datetime.now(UTC),
                retention=timedelta(days=settings.casework_retention_days),
            )
    finally:
        engine.dispose()
    console.print(f"complaints deleted: {gone}")
