"""``cvm consume``: store the events core banking publishes on RabbitMQ."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.markup import escape

from app.cli.app import console, database_engine, example, fail
from app.config import get_settings

commands = typer.Typer()


@commands.command(
    epilog=example(
        "cvm consume --tenant bank-a --queue cvm.events.bank-a",
        "cvm consume --stop-when-idle 5   # drain the queue, then exit",
    )
)
def consume(
    queue: Annotated[
        str | None,
        typer.Option(help="The queue to read (default: the first of event_queues).", metavar="Q"),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="The tenant the queue's events belong to.", metavar="TENANT"),
    ] = None,
    batch_messages: Annotated[
        int,
        typer.Option(min=1, max=10_000, help="Messages per commit, at most.", metavar="N"),
    ] = 200,
    stop_when_idle: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Exit after this many seconds with nothing delivered.", metavar="S"
        ),
    ] = None,
) -> None:
    """Store the events published on a queue until stopped (Ctrl-C, SIGTERM).

    Each message is a body of POST /v1/events, acknowledged once its events are committed.
    A message that can never be stored goes to QUEUE.dead, the reason in its x-cvm-error header.
    The broker is the amqp_url setting (environment: CVM_AMQP_URL).
    """
    from app.customers.consumer import ConsumerOptions, ConsumerStats, EventConsumer
    from app.customers.service import IntakeRules
    from app.db.session import create_session_factory
    from app.security.pseudonyms import Pseudonymizer

    settings = get_settings()
    name = queue or settings.event_queues[0]

    def report(stats: ConsumerStats) -> None:
        console.print(
            f"{stats.messages:,} messages, {stats.new:,} new events, "
            f"{stats.duplicates:,} duplicates, {stats.dead_lettered:,} dead-lettered",
            highlight=False,
        )

    last = 0

    def progress(stats: ConsumerStats) -> None:
        nonlocal last
        if stats.messages - last >= 1000 or last == 0:
            report(stats)
            last = stats.messages

    async def run(consumer: EventConsumer) -> ConsumerStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await consumer.run(stop)

    console.print(f"consuming {escape(name)} (tenant {escape(tenant or '-')})", highlight=False)
    try:
        with database_engine() as engine:
            consumer = EventConsumer(
                url=settings.amqp_url.get_secret_value(),
                queue=name,
                tenant=tenant,
                session_factory=create_session_factory(engine),
                rules=IntakeRules.from_settings(settings),
                pseudonymizer=Pseudonymizer.from_settings(settings),
                options=ConsumerOptions(
                    batch_messages=batch_messages, stop_when_idle_s=stop_when_idle
                ),
                on_batch=progress,
            )
            stats = asyncio.run(run(consumer))
    except (OSError, TimeoutError) as error:  # aio-pika's connection errors are OSErrors
        raise fail(f"cannot reach the broker for {name}: {error}") from error
    report(stats)
