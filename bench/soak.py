"""Soak: minutes of steady scoring at twice the nominal load, PostgreSQL restarted midway.

What it proves (issue 20, item 7): every score the service acknowledged is stored, none is
stored twice, and no call fails with a 5xx outside the restart window. It runs:

* a PostgreSQL cluster of its own (initdb in a temporary folder, a free port), so that the
  restart disturbs nothing else on the machine (needs root or the ``postgres`` user);
* the service as deployed: uvicorn, one worker, the score writer in its own process,
  authentication on;
* an open-loop load: ``--rate`` times ``--factor`` single-customer churn calls per second, each
  at its scheduled time whatever the previous ones do (a closed loop would slow down with the
  server and hide the outage). Each customer id is new; each call carries an Idempotency-Key,
  and a call that fails (5xx, or no answer) is retried under the same key, as a client should,
  until acknowledged or ``--give-up-s`` has passed;
* at the middle, ``pg_ctl stop -m fast``, ``--outage-s`` seconds down, then start again.

At the end it counts, per customer id, the rows in the score table. Usage::

    .venv/bin/python bench/soak.py                          # 10 minutes, 2 x 100 calls/s
    .venv/bin/python bench/soak.py --duration 60 --outage-s 5   # a short rehearsal

Results: printed, and written to var/bench/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from sqlalchemy import text

from app.db.migrate import upgrade
from app.db.session import create_db_engine
from app.security.api_keys import create_client

ROOT = Path(__file__).resolve().parents[1]
BODIES = ROOT / "var" / "bench" / "bodies" / "churn_single.jsonl"
OUT = ROOT / "var" / "bench" / "soak.json"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
ID_PREFIX = "SOAK"
# After the database is back, calls may still fail while the pool reconnects: inside the
# window too.
RECOVERY_GRACE_S = 10.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throw-away PostgreSQL cluster in a temporary folder, on a port of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True)

    def create(self) -> None:
        """initdb with trust authentication (the folder handed to the postgres user)."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, user="postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "postgres.log")
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"
        )

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, as in a failover or a restart for maintenance."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A running private cluster, stopped and removed at the end."""
    with tempfile.TemporaryDirectory(prefix="cvm-soak-") as folder:
        pg = Cluster(Path(folder))
        pg.create()
        pg.start()
        try:
            yield pg
        finally:
            with suppress(subprocess.CalledProcessError):
                pg.stop()


@contextmanager
def service(database_url: str) -> Iterator[tuple[str, str]]:
    """The service in uvicorn (writer process on, as deployed); base URL and an API key."""
    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        _, key = create_client(
            engine, name="soak", scopes=["scores:write", "scores:read"], rate_limit_per_s=1e9
        )
    finally:
        engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CVM_DATABASE_URL": database_url,
        "CVM_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.http.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    log = ROOT / "var" / "bench" / "logs" / "soak-service.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start; see {log}")
            time.sleep(0.2)
        yield base, key
    finally:
        process.terminate()
        process.wait(timeout=60)


@dataclass
class Call:
    """One customer's call and its retries."""

    customer_id: str
    attempts: list[tuple[float, int]] = field(default_factory=list)  # (time, status; 0: none)
    acknowledged_at: float | None = None
    latency_s: float | None = None


@dataclass
class Outage:
    """When the database was stopped and started again (monotonic seconds from the start)."""

    stopped_at: float | None = None
    started_at: float | None = None

    def covers(self, moment: float) -> bool:
        """Whether a failure at ``moment`` falls in the restart window."""
        if self.stopped_at is None:
            return False
        end = (self.started_at or float("inf")) + RECOVERY_GRACE_S
        return self.stopped_at - 1.0 <= moment <= end


async def one_call(
    client: httpx.AsyncClient,
    in_flight: asyncio.Semaphore,
    call: Call,
    body: bytes,
    started: float,
    give_up_s: float,
) -> None:
    """Post until acknowledged (retrying 5xx and lost answers under the same key). Latency
    counts from the scheduled time: time spent waiting for a connection is the service's."""
    headers = {"Idempotency-Key": f"soak-{call.customer_id}", "content-type": "application/json"}
    first = time.monotonic()
    while time.monotonic() - first < give_up_s:
        try:
            # At most --connections calls wait on the server; the others wait here, in
            # order (httpx's own pool slows down badly with thousands of waiters).
            async with in_flight:
                response = await client.post("/v1/churn/scores", content=body, headers=headers)
            status = response.status_code
        except httpx.TransportError:
            status = 0
        call.attempts.append((time.monotonic() - started, status))
        if status == 200:
            call.acknowledged_at = time.monotonic() - started
            call.latency_s = time.monotonic() - first
            return
        if 400 <= status < 500 and status not in (408, 409, 429):
            return  # a client error: never retried
        await asyncio.sleep(0.5)


async def load(
    base: str, key: str, bodies: list[dict[str, Any]], args: argparse.Namespace, pg: Cluster
) -> tuple[list[Call], Outage]:
    """The open-loop load with the restart at the middle."""
    rate = args.rate * args.factor
    total = int(rate * args.duration)
    calls: list[Call] = []
    tasks: list[asyncio.Task[None]] = []
    outage = Outage()
    in_flight = asyncio.Semaphore(args.connections)
    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections
    )
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=30
    ) as client:
        started = time.monotonic()

        async def restart() -> None:
            await asyncio.sleep(args.duration / 2)
            outage.stopped_at = time.monotonic() - started
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(args.outage_s)
            await asyncio.to_thread(pg.start)
            outage.started_at = time.monotonic() - started

        restarter = asyncio.create_task(restart())
        for n in range(total):
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            record = dict(bodies[n % len(bodies)])
            customer = record["customers"][0] | {"customer_id": f"{ID_PREFIX}{n:09d}"}
            body = json.dumps({**record, "customers": [customer]}).encode()
            call = Call(customer["customer_id"])
            calls.append(call)
            tasks.append(
                asyncio.create_task(
                    one_call(client, in_flight, call, body, started, args.give_up_s)
                )
            )
            if n % int(rate * 30) == 0 and n:
                done = sum(c.acknowledged_at is not None for c in calls)
                elapsed = time.monotonic() - started
                print(f"  {elapsed:5.0f} s: {n:,} calls sent, {done:,} acknowledged")
        await asyncio.gather(*tasks)
        await restarter
    return calls, outage


def stored_counts(database_url: str) -> dict[str, int]:
    """Rows per soak customer id in the score table."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT customer_id, count(*) FROM score WHERE customer_id LIKE :prefix "
                    "GROUP BY customer_id"
                ),
                {"prefix": f"{ID_PREFIX}%"},
            )
            return {str(customer): int(count) for customer, count in rows}
    finally:
        engine.dispose()


def report(
    calls: list[Call], outage: Outage, stored: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """The figures: what was acknowledged, stored, duplicated; 5xx inside and outside."""
    acknowledged = {c.customer_id for c in calls if c.acknowledged_at is not None}
    failures = [(t, s) for c in calls for t, s in c.attempts if s == 0 or s >= 500]
    outside = [(t, s) for t, s in failures if not outage.covers(t)]
    latencies = sorted(c.latency_s for c in calls if c.latency_s is not None)
    steady = sorted(
        c.latency_s
        for c in calls
        if c.latency_s is not None
        and c.acknowledged_at is not None
        and not outage.covers(c.acknowledged_at)
    )

    def quantile(values: list[float], q: float) -> float | None:
        return None if not values else values[min(len(values) - 1, int(q * len(values)))]

    statuses: dict[str, int] = {}
    for _, status in failures:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "duration_s": args.duration,
        "rate_per_s": args.rate * args.factor,
        "nominal_rate_per_s": args.rate,
        "calls": len(calls),
        "acknowledged": len(acknowledged),
        "not_acknowledged": len(calls) - len(acknowledged),
        "acknowledged_missing": len(acknowledged - stored.keys()),
        "duplicated": sum(1 for count in stored.values() if count > 1),
        "stored_not_acknowledged": len(stored.keys() - acknowledged),
        "retried_calls": sum(1 for c in calls if len(c.attempts) > 1),
        "failed_attempts_in_window": len(failures) - len(outside),
        "failed_attempts_outside_window": len(outside),
        "failed_statuses": statuses,
        "outage": {"stopped_at_s": outage.stopped_at, "started_at_s": outage.started_at},
        "latency_s": {
            "p50": quantile(latencies, 0.5),
            "p99": quantile(latencies, 0.99),
            "steady_p99": quantile(steady, 0.99),
            "mean": statistics.fmean(latencies) if latencies else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; exit 1 if a promise was broken."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--rate", type=float, default=100, help="nominal calls per second")
    parser.add_argument("--factor", type=float, default=2, help="load = rate x factor")
    parser.add_argument("--outage-s", type=float, default=10, help="seconds the database is down")
    parser.add_argument("--give-up-s", type=float, default=120, help="a client's retry budget")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    # Stopped from outside: still stop the private cluster and the service (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not BODIES.exists():
        raise SystemExit(f"{BODIES} is missing: run bench/serve_bench.py once to write it")
    bodies = [json.loads(line) for line in BODIES.read_text().splitlines() if line]
    with cluster() as pg, service(pg.url) as (base, key):
        print(
            f"soak: {args.duration:.0f} s at {args.rate * args.factor:.0f} calls/s, database "
            f"down for {args.outage_s:.0f} s at {args.duration / 2:.0f} s"
        )
        calls, outage = asyncio.run(load(base, key, bodies, args, pg))
        time.sleep(2)  # the last group commits
        stored = stored_counts(pg.url)
    figures = report(calls, outage, stored, args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    broken = (
        figures["acknowledged_missing"]
        or figures["duplicated"]
        or figures["failed_attempts_outside_window"]
        or figures["not_acknowledged"]
    )
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
