"""``cvm alerts``: turn the alert candidates stored with churn scores into alerts."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.app import console, database_engine, example, fail

commands = typer.Typer(
    name="alerts",
    help="Churn alerts: process the candidates that churn scores queue.",
    no_args_is_help=True,
    epilog=example("cvm alerts process", "cvm alerts process --watch"),
)


@commands.command(
    "process",
    epilog=example(
        "cvm alerts process                 # from cron",
        "cvm alerts process --watch --batch-size 200",
    ),
)
def process(
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", help="Keep processing as candidates arrive, until Ctrl-C.", metavar=""
        ),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Candidates per transaction (default: settings)."),
    ] = None,
) -> None:
    """Open, update or hold alerts for the churn scores waiting in the alert inbox.

    Safe beside the service's own processor and other `cvm alerts process` runs: each
    candidate is recorded once; with --watch it is a service of its own (set
    CVM_ALERT_PROCESSOR_IN_PROCESS=false on the API then).
    """
    import signal
    import threading

    from sqlalchemy.engine import Engine

    from app.alerts.service import ChurnAlerts, ProcessSummary, pending_candidates, process_pending
    from app.config import get_settings

    settings = get_settings()
    alerts = ChurnAlerts.from_settings(settings)
    if alerts is None:
        raise fail("churn alerts are off (CVM_CHURN_ALERTS_ENABLED=false)")
    size = batch_size or settings.alert_processor_batch_size

    def run(engine: Engine) -> ProcessSummary:
        summary = process_pending(engine, alerts=alerts, batch_size=size)
        if summary.candidates or not watch:
            console.print(
                f"candidates {summary.candidates}: opened {len(summary.opened)}, "
                f"rescored {summary.rescored}, held {summary.held}, skipped {summary.skipped}, "
                f"notifications queued {summary.messages}"
            )
        return summary

    with database_engine() as engine:
        if not watch:
            run(engine)
            console.print(f"left in the inbox: {pending_candidates(engine)}")
            return
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        console.print("processing alert candidates; Ctrl-C to stop")
        while not stop.is_set():
            run(engine)
            stop.wait(settings.alert_processor_poll_s)
        console.print("stopped")
