"""CPU per 1,000-event intake call, ours and PostgreSQL's: what bounds the intake on a machine
whose cores are all busy, measured so that the other jobs on it matter little.

Wall-clock figures on the shared 2-core machine move by 2x from minute to minute with the
other engineers' jobs; CPU seconds spent per call move much less. Per call this script reads
the thread CPU of this process (``parse_events`` and ``record_events``, in process, one
connection) and the CPU of the PostgreSQL backend serving the connection (``/proc/<pid>/stat``
of ``pg_backend_pid()``: the server must run on this machine, readable by this user). Then
the same for COPY of the same rows in 1,000-row transactions (``intake_bench.py``'s ceiling).

Loads: the intake bench's calls (250 new customers a call, the needs rules on), and
``needs_overhead.py``'s history-heavy calls with the rules on and off. With C cores wholly for
the intake, (client + server) CPU per call bounds it at C x 1,000 / that many events a second
(HTTP adds its own, see ``intake_bench.py``).

Usage::

    .venv/bin/python bench/intake_cpu.py [--calls 20] [--tag WORD]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake_bench import (  # noqa: E402  (this folder)
    COLUMNS,
    DEFAULT_POSTGRES_SERVER,
    bench_database,
    event_dicts,
)
from needs_overhead import history, timed_call  # noqa: E402  (this folder)

from app.customers.needs import DEFAULT_NEEDS, NO_NEEDS, NeedRules  # noqa: E402
from app.customers.service import (  # noqa: E402
    EVENTS,
    IntakeRules,
    event_rows,
    parse_events,
    record_events,
)
from app.db.session import create_db_engine, create_session_factory, json_text  # noqa: E402

RULES = IntakeRules(future_tolerance_s=300, max_events=10_000)
TICKS = os.sysconf("SC_CLK_TCK")
# (client CPU, server CPU, wall) seconds per call
Costs = list[tuple[float, float, float]]


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a PostgreSQL backend has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def intake_costs(url: str, bodies: list[bytes], needs: NeedRules) -> Costs:
    """Each body parsed and stored on one connection, with what each call cost."""
    engine = create_db_engine(url)
    factory = create_session_factory(engine)
    costs: Costs = []
    try:
        for n, body in enumerate(bodies):
            now = datetime.now(UTC)
            with factory() as session:
                pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                client, server, wall = time.thread_time(), backend_cpu(pid), time.perf_counter()
                record_events(
                    session,
                    events=parse_events(body, rules=RULES, now=now),
                    tenant="bench",
                    request_id=f"cpu-{n}",
                    received_at=now,
                    pseudonymizer=None,
                    needs=needs,
                )
                costs.append(
                    (
                        time.thread_time() - client,
                        backend_cpu(pid) - server,
                        time.perf_counter() - wall,
                    )
                )
        return costs
    finally:
        engine.dispose()


def copy_costs(url: str, calls: list[list[dict[str, Any]]]) -> Costs:
    """The same rows written with COPY in 1,000-row transactions, with what each cost."""
    engine = create_db_engine(url)
    statement = f"COPY customer_event ({', '.join(COLUMNS)}) FROM STDIN"
    costs: Costs = []
    now = datetime.now(UTC)
    try:
        with engine.connect() as connection:
            driver = connection.connection.dbapi_connection
            assert isinstance(driver, psycopg.Connection)
            pid = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
            connection.commit()
            for n, events in enumerate(calls):
                rows = event_rows(
                    EVENTS.validate_python(events, strict=False),
                    tenant="bench",
                    request_id=f"copy-{n}",
                    received_at=now,
                    pseudonymizer=None,
                )
                client, server, wall = time.thread_time(), backend_cpu(pid), time.perf_counter()
                with driver.cursor() as cursor, cursor.copy(statement) as copy:
                    for row in rows:
                        values: dict[str, Any] = {**row, "payload": json_text(row["payload"])}
                        copy.write_row(tuple(values[name] for name in COLUMNS))
                driver.commit()
                costs.append(
                    (
                        time.thread_time() - client,
                        backend_cpu(pid) - server,
                        time.perf_counter() - wall,
                    )
                )
        return costs
    finally:
        engine.dispose()


def line(label: str, costs: Costs) -> str:
    """Means of the CPU figures, median of the wall times, and the bound on 2 cores."""
    client = statistics.mean(c for c, _, _ in costs) * 1e3
    server = statistics.mean(s for _, s, _ in costs) * 1e3
    wall = statistics.median(w for _, _, w in costs) * 1e3
    return (
        f"{label:40s} client CPU {client:6.1f} ms + server CPU {server:6.1f} ms = "
        f"{client + server:6.1f} ms a call (2 cores: <= {2e6 / (client + server):,.0f} "
        f"events/s); wall median {wall:6.1f} ms"
    )


def main() -> None:
    """New customers, then the history-heavy load with the rules on and off, then COPY."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES_SERVER)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--tag", default="", help="a word for the throw-away database's name")
    args = parser.parse_args()
    calls = args.calls
    lines = []
    with bench_database(args.postgres_server, args.tag) as url:
        new = [orjson.dumps({"events": event_dicts(0, c)}) for c in range(calls + 3)]
        intake_costs(url, new[calls:], DEFAULT_NEEDS)  # warm-up
        lines.append(line("new customers, rules on", intake_costs(url, new[:calls], DEFAULT_NEEDS)))
        lines.append(
            line(
                "COPY of the same rows", copy_costs(url, [event_dicts(1, c) for c in range(calls)])
            )
        )
    with bench_database(args.postgres_server, args.tag) as url:
        engine = create_db_engine(url)
        factory = create_session_factory(engine)
        for n, events in enumerate(history(250, 3)):
            now = datetime.now(UTC)
            with factory() as session:
                record_events(
                    session,
                    events=parse_events(orjson.dumps({"events": events}), rules=RULES, now=now),
                    tenant="bench",
                    request_id=f"history-{n}",
                    received_at=now,
                    pseudonymizer=None,
                )
        engine.dispose()
        timed = [orjson.dumps({"events": timed_call(250, 3, c)}) for c in range(2 * calls + 2)]
        intake_costs(url, timed[2 * calls :], DEFAULT_NEEDS)  # warm-up
        lines.append(
            line(
                "history (needs bench), rules on",
                intake_costs(url, timed[0 : 2 * calls : 2], DEFAULT_NEEDS),
            )
        )
        lines.append(
            line(
                "history (needs bench), rules off",
                intake_costs(url, timed[1 : 2 * calls : 2], NO_NEEDS),
            )
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
