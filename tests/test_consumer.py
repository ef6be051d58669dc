"""`cvm consume`: events from RabbitMQ through the intake path, on the real broker.

The broker runs at 127.0.0.1:5672 (guest/guest) on every machine here, CI's included; each
test uses queues of its own, deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from app.customers.consumer import (
    ERROR_HEADER,
    ERRORS_HEADER,
    ConsumerOptions,
    ConsumerStats,
    EventConsumer,
    dead_letter_queue,
)
from app.customers.service import IntakeRules
from app.customers.tables import CustomerEvent, CustomerMonth
from app.db.session import create_db_engine, create_session_factory
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from tests.db_support import TcpProxy, migrated_postgres_database

BROKER = "amqp://guest:guest@127.0.0.1:5672/"
RULES = IntakeRules(future_tolerance_s=300, max_events=10_000)
NOW = datetime.now(UTC).replace(microsecond=0)


def transaction(event_id: str, customer: str, amount: float = 120.0) -> dict[str, Any]:
    """One valid event."""
    return {
        "event_id": event_id,
        "type": "transaction",
        "customer_id": customer,
        "occurred_at": (NOW - timedelta(days=2)).isoformat(),
        "amount": amount,
        "direction": "debit",
        "channel": "card",
        "category": "groceries",
    }


def message_of(prefix: str, index: int, events: int) -> bytes:
    """A POST /v1/events body of ``events`` events, ids unique to the message."""
    body = {
        "events": [
            transaction(f"{prefix}-{index}-{i}", f"C{index % 97:05d}") for i in range(events)
        ]
    }
    return json.dumps(body).encode()


async def _publish(queue: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(dead_letter_queue(queue), durable=True)
        await channel.declare_queue(queue, durable=True)
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )


async def _drain(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting in a queue (acknowledged: taken off it)."""
    connection = await aio_pika.connect(BROKER)
    taken = []
    async with connection:
        channel = await connection.channel()
        source = await channel.declare_queue(queue, durable=True)
        while (message := await source.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
    return taken


async def _depth(queue: str) -> int:
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        return int(declared.declaration_result.message_count or 0)


async def _delete(queues: list[str]) -> None:
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue (and its dead-letter queue) of this test's own."""
    name = f"cvm.test.{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(_delete([name, dead_letter_queue(name)]))


def stored_events(engine: Engine, tenant: str | None = None) -> int:
    """Events stored for a tenant."""
    with engine.connect() as connection:
        return int(
            connection.scalar(
                select(func.count())
                .select_from(CustomerEvent)
                .where(CustomerEvent.tenant == tenant)
            )
            or 0
        )


def consume(
    database_url: str,
    queue: str,
    tenant: str | None,
    *,
    stop_after_s: float | None = None,
    **options: Any,
) -> ConsumerStats:
    """Run a consumer in this process until the queue is idle (or stopped after a while)."""
    engine = create_db_engine(database_url)
    try:
        consumer = EventConsumer(
            url=BROKER,
            queue=queue,
            tenant=tenant,
            session_factory=create_session_factory(engine),
            rules=RULES,
            pseudonymizer=None,
            options=ConsumerOptions(stop_when_idle_s=options.pop("idle", 0.5), **options),
        )

        async def run() -> ConsumerStats:
            stop = asyncio.Event()
            if stop_after_s is not None:
                asyncio.get_running_loop().call_later(stop_after_s, stop.set)
            return await consumer.run(stop)

        return asyncio.run(run())
    finally:
        engine.dispose()


def test_malformed_messages_are_dead_lettered_with_the_reason(
    database_url: str, queue: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    bad_amount = json.loads(message_of("bad", 1, 3))
    bad_amount["events"][2]["amount"] = "lots"
    unknown_type = {"events": [{**transaction("u-1", "C1"), "type": "telepathy"}]}
    bodies = [
        message_of("ok", 1, 10),
        b"{not json",
        json.dumps(bad_amount).encode(),
        message_of("ok", 2, 10),
        message_of("ok", 1, 10),  # published twice: the second is a duplicate, harmless
        json.dumps(unknown_type).encode(),
    ]
    asyncio.run(_publish(queue, bodies))

    stats = consume(database_url, queue, tenant)

    engine = create_db_engine(database_url)
    try:
        stored = stored_events(engine, tenant)
    finally:
        engine.dispose()
    assert stored == 20  # the two good messages, once; nothing of the bad ones
    assert (stats.messages, stats.new, stats.duplicates, stats.dead_lettered) == (3, 20, 10, 3)
    dead = asyncio.run(_drain(dead_letter_queue(queue)))
    reasons = [str(m.headers[ERROR_HEADER]) for m in dead]
    assert len(reasons) == 3
    assert "JSON" in reasons[0] or "json" in reasons[0]
    assert "events[2].amount" in reasons[1]
    assert "events[0].type" in reasons[2]
    assert "telepathy" in json.loads(str(dead[2].headers[ERRORS_HEADER]))[0]["message"]
    assert json.loads(str(dead[1].headers[ERRORS_HEADER]))[0]["field"] == "events[2].amount"
    assert [m.body for m in dead] == [bodies[1], bodies[2], bodies[5]]
    assert asyncio.run(_depth(queue)) == 0


@pytest.mark.postgres
def test_database_outage_keeps_messages_until_committed(queue: str) -> None:
    bodies = [message_of("out", i, 5) for i in range(30)]
    asyncio.run(_publish(queue, bodies))
    with migrated_postgres_database() as database_url:
        direct = make_url(database_url)
        proxy = TcpProxy("127.0.0.1", direct.port or 5432)
        proxy.start()
        proxied = direct.set(port=proxy.port).render_as_string(hide_password=False)
        proxy.stop()  # the database is down from the start
        stats = consume(proxied, queue, None, stop_after_s=1.5, database_retry_s=0.1)
        # Stopped while the database was down: nothing acknowledged, all back on the queue.
        assert stats.database_retries >= 3 and stats.messages == 0
        assert asyncio.run(_depth(queue)) == 30

        proxy.start()  # the database is back: everything is stored, once
        try:
            stats = consume(proxied, queue, None)
        finally:
            proxy.stop()
        engine = create_db_engine(database_url)
        try:
            assert (stats.messages, stored_events(engine)) == (30, 150)
        finally:
            engine.dispose()
        assert asyncio.run(_depth(queue)) == 0


def _cvm_consume(
    database_url: str, queue: str, tenant: str, *extra: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CVM_DATABASE_URL": database_url, "CVM_AMQP_URL": BROKER}
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "cvm"),
            "consume",
            "--queue",
            queue,
            "--tenant",
            tenant,
            "--batch-messages",
            "5",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.postgres
def test_killed_consumer_loses_nothing_and_stores_nothing_twice(queue: str) -> None:
    """kill -9 mid-stream, restart: every event stored exactly once."""
    messages, per_message = 300, 20
    bodies = [message_of("kill", i, per_message) for i in range(messages)]
    asyncio.run(_publish(queue, bodies))
    tenant = "bank-a"
    with migrated_postgres_database() as database_url:
        engine = create_db_engine(database_url)
        try:
            first = _cvm_consume(database_url, queue, tenant)
            deadline = time.monotonic() + 60
            while stored_events(engine, tenant) < 1000 and time.monotonic() < deadline:
                assert first.poll() is None, first.stderr.read() if first.stderr else ""
                time.sleep(0.01)
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=10)
            at_kill = stored_events(engine, tenant)
            assert 0 < at_kill < messages * per_message  # killed mid-stream

            second = _cvm_consume(database_url, queue, tenant, "--stop-when-idle", "1")
            _, err = second.communicate(timeout=120)
            assert second.returncode == 0, err.decode()
            assert stored_events(engine, tenant) == messages * per_message
            with engine.connect() as connection:
                distinct = connection.scalar(
                    select(func.count(func.distinct(CustomerEvent.event_id))).where(
                        CustomerEvent.tenant == tenant
                    )
                )
            assert distinct == messages * per_message
            assert asyncio.run(_depth(queue)) == 0
            assert "dead-lettered" in err.decode()
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_two_consumers_share_a_queue_and_store_each_event_once(queue: str) -> None:
    """Consumers compete for one queue (how `cvm consume` scales out): their transactions
    overlap on customers, and every tenth message is published twice in a row, so a copy may
    be stored beside its original: each event is stored once and counted once in its month."""
    originals = [message_of("share", i, 20) for i in range(200)]
    bodies = [
        copy for i, body in enumerate(originals) for copy in [body] * (2 if i % 10 == 0 else 1)
    ]
    asyncio.run(_publish(queue, bodies))
    with migrated_postgres_database() as database_url:
        results: list[ConsumerStats] = []
        start_together = threading.Barrier(2)

        def consumer() -> None:
            start_together.wait()
            results.append(consume(database_url, queue, "bank-a", batch_messages=5, idle=1.0))

        threads = [threading.Thread(target=consumer) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(results) == 2 and all(stats.messages > 0 for stats in results)
        assert sum(stats.messages for stats in results) == len(bodies) == 220
        assert sum(stats.new for stats in results) == 4_000
        assert sum(stats.duplicates for stats in results) == 400
        engine = create_db_engine(database_url)
        try:
            assert stored_events(engine, "bank-a") == 4_000
            with engine.connect() as connection:
                counted = connection.scalar(
                    select(func.sum(CustomerMonth.transactions)).where(
                        CustomerMonth.tenant == "bank-a"
                    )
                )
            assert counted == 4_000
        finally:
            engine.dispose()
        assert asyncio.run(_depth(queue)) == 0


def test_queue_depth_is_on_metrics(
    database_url: str, settings_for: Any, registry: ModelRegistry, queue: str
) -> None:
    asyncio.run(_publish(queue, [message_of("lag", i, 1) for i in range(7)]))
    settings = settings_for(database_url, event_queue_monitor_s=0.1, event_queues=[queue])
    with TestClient(create_app(settings, registry)) as client:
        line = f'cvm_event_queue_messages{{queue="{queue}"}} 7.0'
        deadline = time.monotonic() + 5
        while line not in (text := client.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert line in text


def test_unreachable_broker_leaves_the_gauge_out(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> None:
    settings = settings_for(
        database_url, event_queue_monitor_s=0.1, amqp_url="amqp://guest:guest@127.0.0.1:1/"
    )
    with TestClient(create_app(settings, registry)) as client:
        time.sleep(0.3)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'cvm_event_queue_messages{queue="' not in metrics.text
