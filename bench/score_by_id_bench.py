"""Score by customer id on PostgreSQL with a stored book: requests/s and latency at 32
connections, against the bare POST of the same server in the same run.

Issue 15's target: at least 1,000 requests/s with p99 at most 50 ms at 32 connections, with
100,000 customers x 12 months of events stored. The book is the synthetic one (`cvm synth
--events`), loaded once through the intake path itself (``ingest_file``: the events, their
customer-month aggregates and stages) into a database of its own that later runs reuse
(``cvm_bench_byid_<customers>x<months>``; ``--drop`` removes it at the end).

Cases, interleaved per round, each a wrk run of ``--duration`` seconds:

* **bare**: the service's bare POST (reads the body, answers a tiny JSON): the floor.
* **by_id_churn**: ``POST /v1/customers/{id}/assessment`` with ``{"tasks": ["churn"]}``,
  one of ``--ids`` customers per call, round robin: features read from the stored aggregates,
  assessed, saved before answering.
* **by_id_all**: the same with no body: every model the customer's stage calls for.

Background re-assessment is off in the server (the load is the measured calls alone).

Usage::

    .venv/bin/python bench/score_by_id_bench.py                    # 100k x 12 months
    .venv/bin/python bench/score_by_id_bench.py --customers 10000 --duration 5 --rounds 2
    .venv/bin/python bench/score_by_id_bench.py --workers 2          # two uvicorn workers
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import (  # noqa: E402
    BARE_PATH,
    BENCH_VAR,
    CLOCK_TICKS,
    DEFAULT_POSTGRES_SERVER,
    Case,
    Run,
    Server,
    free_port,
    http,
    run_wrk,
    start_service,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "score_by_id.json"
TARGET_RPS = 1000.0
TARGET_P99_MS = 50.0
IDLE_CPU_SHARE = 0.05


def database_url(server_url: str, customers: int, months: int, name: str | None = None) -> str:
    """The kept database of one book size (``name``: another one's)."""
    server = make_url(server_url)
    name = name or f"cvm_bench_byid_{customers}x{months}"
    return server.set(database=name).render_as_string(hide_password=False)


def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to the database (``/proc``:
    the server runs on this machine). A backend that exits between two readings takes its
    CPU with it: the pool's overflow connections make the figure a lower bound."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            pids = connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            return {pid: process_cpu(pid) for pid in pids}
    finally:
        engine.dispose()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def ensure_database(server_url: str, url: str) -> bool:
    """Create the database if it does not exist; whether it was created now."""
    name = make_url(url).database
    admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if exists is None:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            return exists is None
    finally:
        admin.dispose()


def vacuum_analyze(url: str) -> None:
    """Planner statistics and a visibility map for the loaded book, as autovacuum would give a
    live server (this one runs without it: with no statistics the reads plan badly)."""
    engine = create_engine(make_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


def drop_database(server_url: str, url: str) -> None:
    """Remove a kept database."""
    name = make_url(url).database
    admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def counts(url: str) -> dict[str, int]:
    """What the book stored: events, customers and customer-months."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {
                "events": int(connection.scalar(text("SELECT count(*) FROM customer_event")) or 0),
                "customers": int(
                    connection.scalar(
                        text("SELECT count(DISTINCT customer_id) FROM customer_month")
                    )
                    or 0
                ),
                "customer_months": int(
                    connection.scalar(text("SELECT count(*) FROM customer_month")) or 0
                ),
            }
    finally:
        engine.dispose()


def events_file(customers: int, months: int, seed: int) -> Path:
    """The synthetic book's trail, written once per size."""
    folder = BENCH_VAR / "byid" / f"{customers}x{months}s{seed}"
    path = folder / "events.parquet"
    if not path.exists():
        cvm = str(Path(sys.executable).parent / "cvm")
        command = [cvm, "synth", "--customers", str(customers), "--months", str(months)]
        command += ["--seed", str(seed), "--out", str(folder / "book"), "--events", str(path)]
        subprocess.run(command, check=True)
    return path


def load(url: str, path: Path) -> float:
    """Store the trail through the intake path (as `cvm ingest` does); events/s."""
    from rich.progress import Progress

    from app.config import Settings
    from app.customers.ingest import ingest_file, open_event_file
    from app.customers.service import IntakeRules
    from app.db.migrate import upgrade
    from app.db.session import create_db_engine, create_session_factory
    from app.security.pseudonyms import Pseudonymizer

    upgrade(url)
    settings = Settings(database_url=url)
    engine = create_db_engine(url)
    file = open_event_file(path)
    started = time.perf_counter()
    try:
        with Progress() as progress:
            bar = progress.add_task("Ingesting the book's events", total=file.rows)
            summary = ingest_file(
                file,
                session_factory=create_session_factory(engine),
                rules=IntakeRules.from_settings(settings),
                tenant=None,
                pseudonymizer=Pseudonymizer.from_settings(settings),
                chunk_rows=10_000,
                on_chunk=lambda rows: progress.advance(bar, rows),
            )
    finally:
        engine.dispose()
    if summary.rejected:
        raise SystemExit(f"{summary.rejected} events of {path} were rejected")
    return summary.new / (time.perf_counter() - started)


def customer_ids(path: Path, count: int, seed: int) -> list[str]:
    """``count`` customers of the book who hold a product (prospects have nothing to score)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["customer_id", "type"])
    holders = pc.unique(
        table.filter(pc.equal(table["type"], "account_opened"))["customer_id"]
    ).to_pylist()
    random.Random(seed).shuffle(holders)
    return [str(customer) for customer in holders[:count]]


def write_bodies(ids: list[str], folder: Path) -> dict[str, Path]:
    """One "PATH<TAB>BODY" line per customer per by-id case, and the bare bodies."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies = {
        "bare": folder / "bare.jsonl",
        "by_id_churn": folder / "by_id_churn.jsonl",
        "by_id_all": folder / "by_id_all.jsonl",
    }
    bodies["bare"].write_text('{"tasks":["churn"]}\n')
    for case, body in (("by_id_churn", '{"tasks":["churn"]}'), ("by_id_all", "{}")):
        bodies[case].write_text(
            "".join(f"/v1/customers/{customer}/assessment\t{body}\n" for customer in ids)
        )
    return bodies


def wait_quiet(server: Server, timeout: float = 120) -> None:
    """Until the service uses almost no CPU: what wrk left in flight is answered and saved."""
    deadline = time.monotonic() + timeout
    previous = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.cpu_seconds()
        if (now - previous) / 0.5 < IDLE_CPU_SHARE:
            return
        previous = now
    raise RuntimeError(f"{server.name} still busy {timeout:.0f} s after the load stopped")


@contextmanager
def service(url: str, workers: int = 1) -> Iterator[Server]:
    """The service on the kept database, background re-assessment off."""
    os.environ["CVM_RESCORE_IN_PROCESS"] = "false"
    log = BENCH_VAR / "logs" / "score_by_id_service.log"
    server = start_service(ROOT / "models", url, free_port(), log, workers)
    try:
        yield server
    finally:
        server.stop()


def check(server: Server, case: Case) -> None:
    """One call per case before measuring: the bodies are valid."""
    line = case.bodies.read_text().splitlines()[0]
    path, _, body = line.rpartition("\t")
    status, answer = http(
        "POST", server.base_url + (path or BARE_PATH), body.encode(), api_key=server.api_key
    )
    if status != 200:
        raise SystemExit(f"{case.name}: {status} {answer[:300]!r}")


def measure(
    server: Server, bodies: dict[str, Path], args: argparse.Namespace, url: str
) -> list[Run]:
    """Interleaved rounds of every case; the server's CPU per request with each run."""
    cases = [
        Case(
            name,
            server.base_url + BARE_PATH,
            path,
            1,
            persisted=name != "bare",
            server=server,
            api_key=server.api_key,
        )
        for name, path in bodies.items()
    ]
    for case in cases:
        check(server, case)
    log = BENCH_VAR / "logs" / "score_by_id_wrk.log"
    return interleaved(server, cases, args=args, log=log, url=url)


def interleaved(
    server: Server, cases: list[Case], *, args: argparse.Namespace, log: Path, url: str
) -> list[Run]:
    """``args.rounds`` rounds of every case in turn under wrk, each run with the server's and
    the database's CPU per request (the server left to drain its writes between runs)."""
    runs: list[Run] = []
    log.parent.mkdir(parents=True, exist_ok=True)
    for round_ in range(1, args.rounds + 1):
        for case in cases:
            cpu, database = server.cpu_seconds(), backend_cpu(url)
            run = run_wrk(
                case,
                seconds=args.duration,
                connections=args.connections,
                threads=2,
                round_=round_,
                log=log,
            )
            wait_quiet(server)
            run.server_cpu_us_per_request = (server.cpu_seconds() - cpu) / max(run.ok, 1) * 1e6
            after = backend_cpu(url)
            used = sum(after[pid] - database.get(pid, 0.0) for pid in after)
            run.database_cpu_us_per_request = used / max(run.ok, 1) * 1e6
            runs.append(run)
            print(
                f"round {round_} {case.name:>12}: {run.rps:8,.0f} req/s  p50 {run.p50_ms:7.2f} ms"
                f"  p99 {run.p99_ms:7.2f} ms  non-2xx {run.non_2xx}  errors {run.socket_errors}"
                f"  load {run.load_avg_1m:.1f}"
            )
    return runs


def medians(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Per case: the medians of its rounds (non-2xx summed)."""
    table: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(run.case for run in runs):
        mine = [run for run in runs if run.case == name]
        table[name] = {
            "rps": statistics.median(run.rps for run in mine),
            "p50_ms": statistics.median(run.p50_ms for run in mine),
            "p99_ms": statistics.median(run.p99_ms for run in mine),
            "non_2xx": sum(run.non_2xx for run in mine),
            "server_cpu_us": statistics.median(
                run.server_cpu_us_per_request or 0.0 for run in mine
            ),
            "database_cpu_us": statistics.median(
                run.database_cpu_us_per_request or 0.0 for run in mine
            ),
        }
    return table


def summary(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Medians per case, and the ratios against bare."""
    table = medians(runs)
    for row in table.values():
        row["rps_vs_bare"] = row["rps"] / table["bare"]["rps"]
    return table


def main() -> None:
    """Prepare (or reuse) the book, serve it, measure, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ids", type=int, default=5000, help="distinct customers called")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES_SERVER)
    parser.add_argument("--database", help="the kept database's name (default by book size)")
    parser.add_argument("--drop", action="store_true", help="drop the book's database at the end")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    url = database_url(args.postgres_server, args.customers, args.months, args.database)
    path = events_file(args.customers, args.months, args.seed)
    created = ensure_database(args.postgres_server, url)
    stored = counts(url) if not created else {"events": 0}
    ingest_rate = None
    if not stored["events"]:
        ingest_rate = load(url, path)
        print(f"ingested at {ingest_rate:,.0f} events/s (in-process, one connection)")
        vacuum_analyze(url)
    stored = counts(url)
    print(
        f"stored: {stored['events']:,} events, {stored['customers']:,} customers, "
        f"{stored['customer_months']:,} customer-months"
    )
    bodies = write_bodies(customer_ids(path, args.ids, args.seed), BENCH_VAR / "byid" / "bodies")
    try:
        with service(url, args.workers) as server:
            runs = measure(server, bodies, args, url)
    finally:
        if args.drop:
            drop_database(args.postgres_server, url)
    table = summary(runs)
    print(
        f"\nMedians of {args.rounds} rounds, {args.duration:g} s each, wrk -t2 "
        f"-c{args.connections}; {args.workers} uvicorn worker(s); PostgreSQL; "
        f"{os.cpu_count()} CPUs.\n"
    )
    print(
        "| case | requests/s | vs bare | p50 ms | p99 ms | server CPU µs/request "
        "| PostgreSQL CPU µs/request | non-2xx |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['rps']:,.0f} | {row['rps_vs_bare']:.2f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['server_cpu_us']:,.0f} | {row['database_cpu_us']:,.0f} "
            f"| {row['non_2xx']:.0f} |"
        )
    churn = table["by_id_churn"]
    verdict = churn["rps"] >= TARGET_RPS and churn["p99_ms"] <= TARGET_P99_MS
    print(
        f"\ntarget (churn by id): >= {TARGET_RPS:,.0f} req/s and p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{'PASS' if verdict else 'FAIL'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "stored": stored,
                "ingest_events_per_s": ingest_rate,
                "cases": table,
                "runs": [asdict(run) for run in runs],
                "load_avg": os.getloadavg(),
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
