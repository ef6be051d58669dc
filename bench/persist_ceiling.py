"""How fast can the score table take 1,000-customer calls at all, before HTTP or scoring?

``serve_bench.py``'s batch case runs everything a call does on the same two cores: HTTP,
validation, prediction, encoding, alert bookkeeping, and the durable write. This script runs
only the last: 1,000-row groups of real churn rows (the benchmark's customers, stored as the
service stores them for ``reasons: 0``) inserted through ``insert_scores`` and committed with
the service's durability (SQLite: WAL, ``synchronous=FULL``, the writer's connection settings;
PostgreSQL: COPY and a synchronous commit), one group after another, into a table holding
``--sizes`` rows already. It prints, per group:

* insert and commit: wall time and CPU of this process (SQLite does its work in-process);
* on SQLite, the log written by each commit (frames are pages; every dirty page is one frame)
  and the CPU of the checkpoint that moves it into the database file, which the service's
  checkpoint thread pays later in the same process;
* on PostgreSQL, the CPU of the server process that did the work (read from /proc);
* the ceiling: 1,000 rows over insert + commit wall time. The service commits one group at a
  time, so no scoring call can be persisted faster than this, whatever the rest costs.

Usage::

    .venv/bin/python bench/persist_ceiling.py                        # SQLite: 0 and 1M rows
    .venv/bin/python bench/persist_ceiling.py --database postgres --sizes 0,1000000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from serve_bench import (
    DEFAULT_POSTGRES_SERVER,
    bench_database,
    churn_records,
    ensure_models,
    newest_version,
    process_cpu_seconds,
)
from sqlalchemy import Connection, Engine

from app.db.checkpoint import WalCheckpointer
from app.db.migrate import upgrade
from app.db.session import create_db_engine
from app.scoring.repository import EncodedScore, ScoreRow, encode_scores, insert_scores

GROUP_ROWS = 1_000
PREFILL_GROUP_ROWS = 20_000  # prefill in larger transactions: only the measured groups matter


@dataclass
class Group:
    """One measured 1,000-row group."""

    insert_wall: float
    insert_cpu: float
    commit_wall: float
    commit_cpu: float
    log_frames: int = 0
    log_bytes: int = 0
    checkpoint_cpu: float = 0.0


def churn_rows(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(customer id, features) of each benchmark customer, as the service stores them."""
    return [
        (str(r["customer_id"]), {k: v for k, v in r.items() if k != "customer_id"}) for r in records
    ]


def group_rows(customers: list[tuple[str, dict[str, Any]]], at: datetime) -> list[EncodedScore]:
    """One call's rows: the same customers each call, as the serve benchmark sends them."""
    request_id = uuid.uuid4().hex
    rows = [
        ScoreRow(
            request_id=request_id,
            task="churn",
            customer_id=customer_id,
            model_name="churn",
            model_version="bench",
            outputs={"probability": 0.031415, "risk_band": "low"},
            reasons=[],
            features=features,
            created_at=at,
            tenant=None,
            source="api",
            stage="existing",
            probability=0.031415,
            band="low",
            alert=False,
        )
        for customer_id, features in customers
    ]
    return encode_scores(rows)


@contextmanager
def timed() -> Iterator[list[float]]:
    """[wall seconds, CPU seconds of this thread] of the block."""
    result = [0.0, 0.0]
    wall, cpu = time.perf_counter(), time.thread_time()
    yield result
    result[0], result[1] = time.perf_counter() - wall, time.thread_time() - cpu


def checkpoint(connection: Connection) -> tuple[int, float]:
    """Move the whole log into the database file; (frames moved, CPU seconds)."""
    with timed() as took:
        busy, frames, _moved = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        # Then empty the log, so that the next commit's frames are counted from zero.
        busy += connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
    if busy:
        raise RuntimeError("the checkpoint was blocked: is another process using the database?")
    return int(frames), took[1]


def prefill(engine: Engine, customers: list[tuple[str, dict[str, Any]]], rows: int) -> float:
    """Grow the table to ``rows`` rows of the same customers; seconds taken."""
    started = time.perf_counter()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    done = 0
    while done < rows:
        batch: list[EncodedScore] = []
        while len(batch) < min(PREFILL_GROUP_ROWS, rows - done):
            batch += group_rows(customers, at)[: rows - done - len(batch)]
            at += timedelta(seconds=1)
        with engine.begin() as connection:
            insert_scores(connection, rows=batch)
        done += len(batch)
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                checkpoint(connection)
        print(f"\r  prefilled {done:,} rows", end="", flush=True)
    print()
    return time.perf_counter() - started


def measure(
    engine: Engine, customers: list[tuple[str, dict[str, Any]]], groups: int
) -> tuple[list[Group], float]:
    """``groups`` 1,000-row groups, each in its own durable transaction, and the PostgreSQL
    server's CPU seconds per group (0 on SQLite; /proc counts in ticks, so over the run)."""
    sqlite = engine.dialect.name == "sqlite"
    measured = []
    at = datetime(2027, 1, 1, tzinfo=UTC)
    with engine.connect() as connection:
        backend = (
            None
            if sqlite
            else int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        )
        connection.commit()
        server_before = 0.0 if backend is None else process_cpu_seconds(backend)
        for _ in range(groups):
            rows = group_rows(customers, at)
            at += timedelta(seconds=1)
            with timed() as inserting:
                connection.begin()
                insert_scores(connection, rows=rows)
            with timed() as committing:
                connection.commit()
            group = Group(inserting[0], inserting[1], committing[0], committing[1])
            if sqlite:
                group.log_frames, group.checkpoint_cpu = checkpoint(connection)
                page_size = int(connection.exec_driver_sql("PRAGMA page_size").scalar_one())
                group.log_bytes = group.log_frames * (page_size + 24)
                connection.commit()
            measured.append(group)
        server = 0.0 if backend is None else process_cpu_seconds(backend) - server_before
    return measured, server / groups


def report(size: int, groups: list[Group], server_cpu: float, sqlite: bool) -> dict[str, float]:
    """Medians of the measured groups, one line."""

    def median_ms(attribute: str) -> float:
        return float(statistics.median(getattr(g, attribute) for g in groups)) * 1e3

    figures = {
        "table_rows": float(size),
        "insert_ms": median_ms("insert_wall"),
        "insert_cpu_ms": median_ms("insert_cpu"),
        "commit_ms": median_ms("commit_wall"),
        "commit_cpu_ms": median_ms("commit_cpu"),
    }
    if sqlite:
        figures["log_frames"] = statistics.median(g.log_frames for g in groups)
        figures["log_mb"] = statistics.median(g.log_bytes for g in groups) / 1e6
        figures["checkpoint_cpu_ms"] = median_ms("checkpoint_cpu")
    else:
        figures["server_cpu_ms"] = server_cpu * 1e3
    figures["ceiling_rows_per_s"] = GROUP_ROWS / (
        (figures["insert_ms"] + figures["commit_ms"]) / 1e3
    )
    extra = (
        f"log {figures['log_frames']:,.0f} frames ({figures['log_mb']:.1f} MB), "
        f"checkpoint CPU {figures['checkpoint_cpu_ms']:.1f} ms"
        if sqlite
        else f"server CPU {figures['server_cpu_ms']:.1f} ms"
    )
    print(
        f"{size:>10,} rows in table | insert {figures['insert_ms']:.1f} ms "
        f"(CPU {figures['insert_cpu_ms']:.1f}) | commit {figures['commit_ms']:.1f} ms "
        f"(CPU {figures['commit_cpu_ms']:.1f}) | {extra} | "
        f"ceiling {figures['ceiling_rows_per_s']:,.0f} rows/s"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES_SERVER)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--sizes", default="0,1000000", help="table sizes to measure at, rows, comma-separated"
    )
    parser.add_argument("--groups", type=int, default=40, help="measured groups per size")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    models_dir, book = ensure_models(args.models_dir)
    customers = churn_rows(churn_records(newest_version(models_dir, "churn"), book, GROUP_ROWS))
    row_bytes = statistics.mean(
        sum(len(v) for v in row[5:8]) for row in group_rows(customers, datetime.now(UTC))
    )
    print(f"{GROUP_ROWS:,} distinct customers per group; JSON per row {row_bytes:,.0f} bytes")
    with bench_database(args.database, args.postgres_server) as url:
        upgrade(url)
        engine = create_db_engine(url)
        if WalCheckpointer.applies_to(engine):
            WalCheckpointer(engine)  # the writer's connection settings; checkpoints are ours
        try:
            in_table = 0
            for size in sizes:
                if size > in_table:
                    seconds = prefill(engine, customers, size - in_table)
                    print(f"  in {seconds:.0f} s")
                    in_table = size
                groups, server_cpu = measure(engine, customers, args.groups)
                report(size, groups, server_cpu, args.database == "sqlite")
                in_table += args.groups * GROUP_ROWS
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
