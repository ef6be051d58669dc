"""``cvm dispatch``: deliver alert notifications from the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.app import console, database_engine, example, fail
from app.config import get_settings

if TYPE_CHECKING:
    from app.notifications.service import DispatchReport

commands = typer.Typer()


@commands.command(
    epilog=example("cvm dispatch", "cvm dispatch --once --batch-size 100   # from cron")
)
def dispatch(
    once: Annotated[
        bool,
        typer.Option("--once", help="Deliver what is due now, then exit (for cron).", metavar=""),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Messages claimed per round (default from settings).", metavar="N"
        ),
    ] = None,
    requeue_failed: Annotated[
        bool,
        typer.Option(
            "--requeue-failed", help="First retry messages that ran out of attempts.", metavar=""
        ),
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
    from app.notifications.service import build_dispatcher

    settings = get_settings()
    if batch_size is not None:
        settings = settings.model_copy(update={"dispatch_batch_size": batch_size})
    with database_engine() as engine:
        dispatcher = build_dispatcher(settings, engine)
        if dispatcher is None:
            raise fail(
                "no notification channel is on: set CVM_EMAIL_ENABLED or CVM_WEBHOOK_ENABLED"
            )
        try:
            database = make_url(settings.database_url).render_as_string(hide_password=True)
            console.print(
                f"dispatcher {dispatcher.name}: channels {', '.join(sorted(dispatcher.channels))}"
                f"; database {database}"
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
                    f"{_summary(report)}; outbox now: pending {left.get('pending', 0)}, "
                    f"delivered {left.get('delivered', 0)}, failed {left.get('failed', 0)}, "
                    f"held (tenant without a route) {left.get('held', 0)}"
                )
                if report.retried or report.failed:
                    raise typer.Exit(code=1)
                return
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda _signum, _frame: dispatcher.request_stop())
            console.print("dispatching; Ctrl-C to stop")
            dispatcher.run(on_round=lambda report: console.log(_summary(report)))
            console.print("stopped")
        finally:
            dispatcher.stop()


def _summary(report: DispatchReport) -> str:
    """One round's deliveries on one line."""
    return (
        f"delivered {report.delivered}, retrying {report.retried}, failed {report.failed}"
        + (f", digests composed {report.digests}" if report.digests else "")
        + (f", released {report.released}" if report.released else "")
    )
