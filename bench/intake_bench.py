"""Event intake on PostgreSQL: events persisted per second through the real HTTP service, as a
ratio of what the table itself takes (COPY of the same rows), both measured in this run.

Issue 15's target: at least 20,000 events/s persisted, in 1,000-event calls. Per round:

* **service**: a uvicorn subprocess (``app.http.app:create_app``, authentication on, a key with
  ``events:write``) on 127.0.0.1; ``--connections`` httpx clients post pre-encoded 1,000-event
  bodies (every event id new: duplicates are not stored, so would flatter the figure) until
  ``--calls`` calls have answered; every answer must say ``new: 1000``. Events/s = events stored
  over the wall time of the round; the row count is checked against the table afterwards.
* **consumer**: the same bodies published to a RabbitMQ queue of the run's own (127.0.0.1:5672,
  guest), then drained by ``EventConsumer`` (what ``cvm consume`` runs) in ``--consumers``
  processes competing for the queue (as several ``cvm consume`` would), after the table is
  emptied; events/s = events over the time from the consumers' start to the last commit.
* **ceiling**: the same rows (the stored form, customer ids as the service stores them) written
  with COPY in 1,000-row transactions on one connection, after the table is emptied: the most
  the store takes from one writer with the same commit size.

Rounds alternate (service, ceiling) so that both see the same machine load. The client shares
the machine's cores with the service and PostgreSQL, as it does in the other benchmarks here.

Usage::

    .venv/bin/python bench/intake_bench.py                        # 3 rounds of 100 calls
    .venv/bin/python bench/intake_bench.py --rounds 5 --calls 200 --workers 2
    .venv/bin/python bench/intake_bench.py --workers 2 --consumers 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path
from typing import Any

import aio_pika
import httpx2 as httpx
import orjson
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.customers.consumer import (  # noqa: E402
    ConsumerOptions,
    ConsumerStats,
    EventConsumer,
    dead_letter_queue,
    declare_queues,
)
from app.customers.needs import DEFAULT_NEEDS, NO_NEEDS, NeedRules  # noqa: E402
from app.customers.repository import EventRow  # noqa: E402
from app.customers.service import EVENTS, IntakeRules, event_rows, record_events  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.session import create_db_engine, create_session_factory, json_text  # noqa: E402
from app.security.api_keys import create_client  # noqa: E402

DEFAULT_POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EVENTS_PER_CALL = 1_000
COLUMNS = (
    "tenant",
    "event_id",
    "customer_id",
    "type",
    "occurred_at",
    "received_at",
    "request_id",
    "payload",
    "amount",
    "direction",
)


@contextmanager
def bench_database(server_url: str, tag: str = "") -> Iterator[str]:
    """A throw-away PostgreSQL database (its name holds ``tag``), migrated, dropped afterwards."""
    server = make_url(server_url)
    name = f"cvm_bench_{tag}{'_' if tag else ''}{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = server.set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            yield url
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


START = datetime(2026, 11, 1, tzinfo=UTC)


def customer_of(call: int, i: int, customers: int | None) -> str:
    """The customer of a call's i-th event: 250 a call, new ones each call unless
    ``customers`` bounds the pool (calls then cycle through it)."""
    number = call * 250 + i % 250
    return f"C{number if customers is None else number % customers:07d}"


def event_dicts(round_no: int, call: int, customers: int | None = None) -> list[dict[str, Any]]:
    """One call's events: a month's mix of types for 250 customers, every id new."""
    start = START
    events: list[dict[str, Any]] = []
    for i in range(EVENTS_PER_CALL):
        common = {
            "event_id": f"r{round_no}-c{call}-e{i}",
            "customer_id": customer_of(call, i, customers),
            "occurred_at": (start + timedelta(minutes=i)).isoformat(),
        }
        kind = i % 10
        if kind < 6:
            events.append(
                {
                    **common,
                    "type": "transaction",
                    "amount": 12.5 + i,
                    "direction": "debit" if kind else "credit",
                    "channel": "card",
                    "category": "groceries",
                }
            )
        elif kind < 8:
            events.append({**common, "type": "digital_session", "platform": "mobile_app"})
        elif kind == 8:
            events.append(
                {**common, "type": "balance_snapshot", "product": "savings", "balance": 1e4 + i}
            )
        else:
            events.append({**common, "type": "contact", "kind": "call", "topic": "cards"})
    return events


def history_calls(customers: int, months: int) -> Iterator[list[dict[str, Any]]]:
    """1,000-event calls of the customers' past (``h`` ids, never counted as the round's): per
    customer and month before START a salary, a 30,000 EUR credit and 30 card debits; once,
    a term deposit maturing within the needs rule's window. The rules' reads then find rows,
    as on a live book (bench/needs_overhead.py's history)."""
    events: list[dict[str, Any]] = []
    for c in range(customers):
        customer = f"C{c:07d}"
        for month in range(1, months + 1):
            at = START - timedelta(days=30 * month)
            for n in range(32):
                credit = n < 2
                events.append(
                    {
                        "event_id": f"h{month}-{customer}-{n}",
                        "customer_id": customer,
                        "occurred_at": (at + timedelta(hours=n)).isoformat(),
                        "type": "transaction",
                        "amount": (2_400.0, 30_000.0)[n] if credit else 25.0 + n,
                        "direction": "credit" if credit else "debit",
                        "channel": "transfer",
                        "category": ("salary", "inheritance")[n] if credit else "groceries",
                    }
                )
        events.append(
            {
                "event_id": f"h-td-{customer}",
                "customer_id": customer,
                "occurred_at": (START - timedelta(days=30 * months)).isoformat(),
                "type": "account_opened",
                "product": "term_deposit",
                "maturity_date": (START + timedelta(days=10)).date().isoformat(),
            }
        )
        while len(events) >= EVENTS_PER_CALL:
            yield events[:EVENTS_PER_CALL]
            events = events[EVENTS_PER_CALL:]
    if events:
        yield events


def load_history(database_url: str, customers: int, months: int) -> int:
    """Store the history through the intake (rules off, as a bulk load would); events stored."""
    engine = create_db_engine(database_url)
    factory = create_session_factory(engine)
    stored = 0
    try:
        for n, events in enumerate(history_calls(customers, months)):
            now = datetime.now(UTC)
            with factory() as session:
                stored += record_events(
                    session,
                    events=EVENTS.validate_python(events, strict=False),
                    tenant="bench",
                    request_id=f"history:{n}",
                    received_at=now,
                    pseudonymizer=None,
                    needs=NO_NEEDS,
                ).new
        return stored
    finally:
        engine.dispose()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def service(
    database_url: str, *, workers: int, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """The real service in a uvicorn subprocess on 127.0.0.1; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CVM_DATABASE_URL": database_url,
        "CVM_LOG_LEVEL": "WARNING",
        "CVM_SCORE_WRITER": "thread",  # no scores here: no writer process beside each worker
        "CVM_RATE_LIMIT_PER_S": "1000000",
        "CVM_RATE_LIMIT_BURST": "100000",
        **(extra_env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.http.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


async def post_all(base: str, key: str, bodies: list[bytes], connections: int) -> float:
    """Post every body, ``connections`` at a time; the wall time of the whole round."""
    queue = list(reversed(bodies))
    headers = {"X-API-Key": key, "content-type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            response = await client.post("/v1/events", content=body, headers=headers)
            response.raise_for_status()
            if response.json()["new"] != EVENTS_PER_CALL:
                raise RuntimeError(f"a call stored {response.json()['new']} events")

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        return time.perf_counter() - started


def copy_rows(database_url: str, calls: list[list[EventRow]]) -> float:
    """COPY each call's rows in its own transaction, one after the other; the wall time."""
    engine = create_db_engine(database_url)
    tuples = [
        [
            (
                row["tenant"],
                row["event_id"],
                row["customer_id"],
                row["type"],
                row["occurred_at"],
                row["received_at"],
                row["request_id"],
                json_text(row["payload"]),
                row["amount"],
                row["direction"],
            )
            for row in rows
        ]
        for rows in calls
    ]
    statement = f"COPY customer_event ({', '.join(COLUMNS)}) FROM STDIN"
    try:
        with engine.connect() as connection:
            driver = connection.connection.dbapi_connection
            assert isinstance(driver, psycopg.Connection)
            started = time.perf_counter()
            for rows in tuples:
                with driver.cursor() as cursor, cursor.copy(statement) as copy:
                    for values in rows:
                        copy.write_row(values)
                driver.commit()
            return time.perf_counter() - started
    finally:
        engine.dispose()


def analyze(database_url: str) -> None:
    """Refresh the planner's statistics, as autovacuum does on a live server: the test server
    runs without it, and plans made for empty tables degrade as the intake fills them."""
    engine = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def stored_count(database_url: str, *, empty: bool = False) -> int:
    """The round's rows in the event table (removed afterwards when asked; the history's
    ``h`` rows stay)."""
    engine = create_engine(database_url, poolclass=NullPool)
    round_rows = "FROM customer_event WHERE event_id NOT LIKE 'h%'"
    try:
        with engine.begin() as connection:
            count = int(connection.execute(text(f"SELECT count(*) {round_rows}")).scalar_one())
            if empty:
                history = connection.execute(
                    text("SELECT count(*) FROM customer_event WHERE event_id LIKE 'h%'")
                ).scalar_one()
                # TRUNCATE when there is no history: DELETE leaves dead rows behind.
                connection.execute(
                    text(f"DELETE {round_rows}" if history else "TRUNCATE customer_event")
                )
            return count
    finally:
        engine.dispose()


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
OFF_SETTING = orjson.dumps(
    {rule: {"enabled": False} for rule in ("idle_inflow", "deposit_maturing", "first_salary")}
).decode()


async def publish(queue: str, bodies: list[bytes]) -> None:
    """Put every body on a fresh durable queue (and its dead-letter queue)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await declare_queues(channel, queue)
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )


async def delete_queues(queue: str) -> None:
    """Remove the run's queues."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (queue, dead_letter_queue(queue)):
            await channel.queue_delete(name)


def _drain(
    database_url: str,
    queue: str,
    needs: NeedRules,
    start_together: BarrierType,
    results: multiprocessing.queues.Queue[tuple[float, float, int]],
) -> None:
    """One consumer process: its start, its last commit and the events it stored, to
    ``results``. Started together with the others, so the run's time is theirs."""
    engine = create_db_engine(database_url)
    last_commit = 0.0

    def committed(_: ConsumerStats) -> None:
        nonlocal last_commit
        last_commit = time.perf_counter()

    try:
        consumer = EventConsumer(
            url=AMQP_URL,
            queue=queue,
            tenant="bench",
            session_factory=create_session_factory(engine),
            rules=IntakeRules(future_tolerance_s=300, max_events=10_000, needs=needs),
            pseudonymizer=None,
            options=ConsumerOptions(batch_messages=20, stop_when_idle_s=0.5),
            on_batch=committed,
        )
        start_together.wait()
        started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        stats = asyncio.run(consumer.run(asyncio.Event()))
        results.put((started, last_commit, stats.new))
    finally:
        engine.dispose()


def consume_all(database_url: str, bodies: list[bytes], needs: NeedRules, consumers: int) -> float:
    """Publish, then drain the queue with ``consumers`` consumer processes (competing
    consumers of one queue, as several ``cvm consume`` would be); seconds from their start to
    the last commit."""
    queue = f"cvm.bench.{secrets.token_hex(5)}"
    asyncio.run(publish(queue, bodies))
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(consumers)
    results: multiprocessing.queues.Queue[tuple[float, float, int]] = context.Queue()
    processes = [
        context.Process(target=_drain, args=(database_url, queue, needs, start_together, results))
        for _ in range(consumers)
    ]
    try:
        for process in processes:
            process.start()
        finished = [results.get(timeout=600) for _ in processes]
        for process in processes:
            process.join(30)
        stored = sum(new for _, _, new in finished)
        if stored != len(bodies) * EVENTS_PER_CALL:
            raise RuntimeError(f"the consumers stored {stored} events")
        return max(last for _, last, _ in finished) - min(start for start, _, _ in finished)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        asyncio.run(delete_queues(queue))


def main() -> None:
    """Alternate service and ceiling rounds; print each and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES_SERVER)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100, help="1,000-event calls per round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--consumers", type=int, default=1, help="consumer processes on the one queue (1)"
    )
    parser.add_argument(
        "--needs", choices=("on", "off"), default="on", help="the needs rules (default: on)"
    )
    parser.add_argument(
        "--history-months",
        type=int,
        default=0,
        help="months of past transactions stored first for each customer (0: new customers)",
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help="bound the customers (calls cycle through them; default: 250 new ones a call)",
    )
    parser.add_argument("--tag", default="", help="a word for the throw-away database's name")
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="no ANALYZE after the history and between rounds (the planner then has no "
        "statistics on a server without autovacuum)",
    )
    args = parser.parse_args()
    if args.history_months and args.customers is None:
        parser.error("--history-months needs --customers (whose history to load)")
    needs = DEFAULT_NEEDS if args.needs == "on" else NO_NEEDS
    env = {} if args.needs == "on" else {"CVM_NEEDS_RULES": OFF_SETTING}

    service_rates: list[float] = []
    consumer_rates: list[float] = []
    ceiling_rates: list[float] = []
    with bench_database(args.postgres_server, args.tag) as url:
        _, key = create_client(
            create_db_engine(url), name="bench", scopes=["events:write"], tenant="bench"
        )
        if args.history_months:
            started = time.perf_counter()
            loaded = load_history(url, args.customers, args.history_months)
            if args.analyze:
                analyze(url)
            print(
                f"history: {loaded:,} events of {args.customers:,} customers "
                f"({args.history_months} months) in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        with service(url, workers=args.workers, extra_env=env) as base:
            for round_no in range(args.rounds):
                calls = [event_dicts(round_no, call, args.customers) for call in range(args.calls)]
                bodies = [orjson.dumps({"events": events}) for events in calls]
                seconds = asyncio.run(post_all(base, key, bodies, args.connections))
                events = stored_count(url, empty=True)
                assert events == args.calls * EVENTS_PER_CALL, events
                service_rates.append(events / seconds)
                consumed_seconds = consume_all(url, bodies, needs, args.consumers)
                assert stored_count(url, empty=True) == events
                consumer_rates.append(events / consumed_seconds)
                # The same rows as the service stored them (parsed by the same models).
                now = datetime.now(UTC)
                rows = [
                    event_rows(
                        EVENTS.validate_python(events_of_call, strict=False),
                        tenant="bench",
                        request_id=f"copy:{round_no}:{i}",
                        received_at=now,
                        pseudonymizer=None,
                    )
                    for i, events_of_call in enumerate(calls)
                ]
                copy_seconds = copy_rows(url, rows)
                copied = stored_count(url, empty=True)
                assert copied == events, copied
                if args.analyze:
                    analyze(url)
                ceiling_rates.append(copied / copy_seconds)
                print(
                    f"round {round_no + 1}: service {service_rates[-1]:,.0f} events/s "
                    f"({args.calls} calls in {seconds:.2f} s), consumer "
                    f"{consumer_rates[-1]:,.0f} events/s, COPY ceiling "
                    f"{ceiling_rates[-1]:,.0f} events/s, ratio "
                    f"{service_rates[-1] / ceiling_rates[-1]:.2f}",
                    flush=True,
                )
    service_rate = statistics.median(service_rates)
    consumer_rate = statistics.median(consumer_rates)
    ceiling_rate = statistics.median(ceiling_rates)
    met = min(service_rate, consumer_rate) >= 20_000
    print(
        f"median: service {service_rate:,.0f} events/s persisted in {EVENTS_PER_CALL:,}-event "
        f"calls ({args.connections} connections, {args.workers} worker(s), needs rules "
        f"{args.needs}, {args.history_months} months of history); {args.consumers} "
        f"consumer(s) {consumer_rate:,.0f} events/s from RabbitMQ; COPY ceiling "
        f"{ceiling_rate:,.0f} events/s; ratio {service_rate / ceiling_rate:.2f}; "
        f"target 20,000 events/s: {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
