"""Events from a message bus: ``cvm consume`` reads a RabbitMQ queue through the intake path.

Core banking systems publish each call's body (the JSON of ``POST /v1/events``) as one message.
Delivery is at least once: a message is acknowledged only after its events are committed, so
a consumer killed at any point loses nothing (the broker redelivers what was not acknowledged)
and stores nothing twice (a redelivered event's id is already stored: a duplicate). A message
that can never be stored (not JSON, an unknown event type, a bad field) goes to the queue's
dead-letter queue ``<queue>.dead`` with the reason in its ``x-cvm-error`` header, and is then
acknowledged; a database outage instead keeps the messages unacknowledged and retries.

The API watches the queues' depth (the consumer's lag) for ``/metrics``: ``QueueDepthMonitor``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, DeliveryMode
from sqlalchemy.orm import Session, sessionmaker

from app.customers.schemas import EventBase, IntakeResult
from app.customers.service import IntakeRules, parse_events, record_events
from app.errors import BatchTooLarge, DatabaseUnavailable, InvalidInput
from app.observability import time_ordered_id
from app.security.pseudonyms import Pseudonymizer

log = structlog.get_logger("cvm.consumer")

DEAD_LETTER_SUFFIX = ".dead"
ERROR_HEADER = "x-cvm-error"
ERRORS_HEADER = "x-cvm-errors"
# Longest reason kept in a header: AMQP headers travel with every delivery of the message.
_MAX_ERROR_HEADER = 4096


def dead_letter_queue(queue: str) -> str:
    """Where a queue's malformed messages go."""
    return f"{queue}{DEAD_LETTER_SUFFIX}"


async def declare_queues(channel: AbstractChannel, queue: str) -> AbstractQueue:
    """The durable events queue and its dead-letter queue (idempotent)."""
    await channel.declare_queue(dead_letter_queue(queue), durable=True)
    return await channel.declare_queue(queue, durable=True)


@dataclass
class ConsumerStats:
    """What a consumer has done since it started."""

    messages: int = 0
    events: int = 0
    new: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    commits: int = 0
    database_retries: int = 0

    def add(self, result: IntakeResult, messages: int) -> None:
        """Count one committed batch."""
        self.messages += messages
        self.events += result.received
        self.new += result.new
        self.duplicates += result.duplicates
        self.commits += 1


@dataclass(frozen=True)
class ConsumerOptions:
    """How a consumer batches and retries."""

    batch_messages: int = 200
    batch_wait_s: float = 0.05
    database_retry_s: float = 1.0
    # Stop after this long with nothing delivered (None: run until stopped).
    stop_when_idle_s: float | None = None


@dataclass
class EventConsumer:
    """Reads one queue of one tenant and stores its events, one commit per batch of messages."""

    url: str
    queue: str
    tenant: str | None
    session_factory: sessionmaker[Session]
    rules: IntakeRules
    pseudonymizer: Pseudonymizer | None
    options: ConsumerOptions = field(default_factory=ConsumerOptions)
    on_batch: Callable[[ConsumerStats], None] | None = None
    stats: ConsumerStats = field(default_factory=ConsumerStats)

    async def run(self, stop: asyncio.Event) -> ConsumerStats:
        """Consume until ``stop`` is set (or the queue stays idle, when asked to)."""
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()  # publisher confirms: dead letters are safe
            # Enough in flight to fill a batch while the previous one commits.
            await channel.set_qos(prefetch_count=2 * self.options.batch_messages)
            queue = await declare_queues(channel, self.queue)
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(inbox.put)
            while not stop.is_set():
                batch = await self._next_batch(inbox, stop)
                if batch is None:
                    break
                if batch:
                    await self._handle(channel, batch, stop)
        return self.stats

    async def _next_batch(
        self, inbox: asyncio.Queue[AbstractIncomingMessage], stop: asyncio.Event
    ) -> list[AbstractIncomingMessage] | None:
        """The messages delivered so far, up to a batch; None when idle for long enough."""
        idle_limit = self.options.stop_when_idle_s
        waited = 0.0
        while inbox.empty():
            if stop.is_set():
                return []
            if idle_limit is not None and waited >= idle_limit:
                return None
            await asyncio.sleep(0.05)
            waited += 0.05
        batch = [inbox.get_nowait()]
        deadline = asyncio.get_running_loop().time() + self.options.batch_wait_s
        while len(batch) < self.options.batch_messages:
            if inbox.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(inbox.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(inbox.get_nowait())
        return batch

    async def _handle(
        self,
        channel: AbstractChannel,
        batch: Sequence[AbstractIncomingMessage],
        stop: asyncio.Event,
    ) -> None:
        """Dead-letter the malformed messages; commit the others' events, then acknowledge."""
        now = datetime.now(UTC)
        events: list[EventBase] = []
        stored: list[AbstractIncomingMessage] = []
        for message in batch:
            try:
                events.extend(parse_events(message.body, rules=self.rules, now=now))
            except (InvalidInput, BatchTooLarge) as error:
                await self._dead_letter(channel, message, error)
                continue
            stored.append(message)
        if not stored:
            return
        result = await self._commit(events, stop)
        if result is None:  # stopped during an outage: the broker redelivers them
            return
        # Every message up to the batch's last is settled: dead letters were acknowledged one
        # by one, the others are committed.
        await stored[-1].ack(multiple=True)
        self.stats.add(result, len(stored))
        if self.on_batch is not None:
            self.on_batch(self.stats)

    async def _commit(
        self, events: Sequence[EventBase], stop: asyncio.Event
    ) -> IntakeResult | None:
        """Store the events, retrying while the database is down; None if stopped first."""
        request_id = time_ordered_id()
        while True:
            try:
                return await asyncio.to_thread(self._store, events, request_id)
            except DatabaseUnavailable as error:
                self.stats.database_retries += 1
                log.warning("consumer.database_unavailable", queue=self.queue, error=error.detail)
                try:
                    await asyncio.wait_for(stop.wait(), self.options.database_retry_s)
                except TimeoutError:
                    continue
                return None

    def _store(self, events: Sequence[EventBase], request_id: str) -> IntakeResult:
        with self.session_factory() as session:
            return record_events(
                session,
                events=events,
                tenant=self.tenant,
                request_id=f"amqp-{request_id}",
                received_at=datetime.now(UTC),
                pseudonymizer=self.pseudonymizer,
                material_outflow=self.rules.material_outflow,
                lifecycle=self.rules.lifecycle,
                needs=self.rules.needs,
            )

    async def _dead_letter(
        self,
        channel: AbstractChannel,
        message: AbstractIncomingMessage,
        error: InvalidInput | BatchTooLarge,
    ) -> None:
        """Publish the message to the dead-letter queue with the reason, then acknowledge it."""
        errors = error.extra.get("errors") if error.extra else None
        headers = dict(message.headers or {})
        headers[ERROR_HEADER] = error.detail[:_MAX_ERROR_HEADER]
        if errors:
            headers[ERRORS_HEADER] = json.dumps(errors)[:_MAX_ERROR_HEADER]
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                delivery_mode=DeliveryMode.PERSISTENT,
            ),
            routing_key=dead_letter_queue(self.queue),
        )
        await message.ack()
        self.stats.dead_lettered += 1
        log.info("consumer.dead_lettered", queue=self.queue, error=error.detail)


class QueueDepthMonitor:
    """Polls the events queues' depth (messages not yet consumed) for ``/metrics``."""

    def __init__(self, url: str, queues: Sequence[str], interval_s: float) -> None:
        self.url = url
        self.queues = list(queues)
        self.interval_s = interval_s
        self.depths: dict[str, float] = {}
        self.up = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether it polls at all (an interval of 0 switches it off)."""
        return self.interval_s > 0

    def read(self) -> dict[str, float]:
        """Ready messages per queue; absent while the broker cannot be asked."""
        return dict(self.depths) if self.up else {}

    def start(self) -> None:
        """Poll in the background of the running event loop (when enabled)."""
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        """Stop polling (within a second, even if a connection attempt swallows the cancel)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)

    async def _poll(self) -> None:
        while not self._stopping:
            try:
                await self._watch()
            except (aio_pika.exceptions.AMQPError, OSError, TimeoutError) as error:
                if self.up:
                    log.warning("queue_monitor.broker_unavailable", error=str(error))
                self.up = False
            await asyncio.sleep(self.interval_s)

    async def _watch(self) -> None:
        """One connection, asked for each queue's depth every interval until it fails."""
        connection = await aio_pika.connect(self.url, timeout=5)
        async with connection:
            while not self._stopping:
                depths = {}
                for name in self.queues:
                    # A channel per question: asking for a queue that does not exist (no
                    # consumer has declared it yet) closes the channel that asked.
                    channel = await connection.channel(publisher_confirms=False)
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                        count = queue.declaration_result.message_count
                        depths[name] = float(count or 0)
                    except aio_pika.exceptions.ChannelClosed:
                        continue
                    finally:
                        if not channel.is_closed:
                            await channel.close()
                self.depths, self.up = depths, True
                await asyncio.sleep(self.interval_s)
