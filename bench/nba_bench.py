"""Next best actions for one customer on PostgreSQL with a stored book: requests/s and
latency at 32 connections under uvicorn with wrk, against the bare POST of the same server.

Issue 18's target: p99 <= 20 ms at 32 connections. The book is the synthetic one, loaded once
through the intake path into a kept database (the score-by-id bench's, reused:
``cvm_bench_byid_<customers>x<months>``; ``--drop`` removes it at the end).

Cases, interleaved per round, each a wrk run of ``--duration`` seconds:

* **bare**: the service's bare POST: the floor.
* **nba**: ``GET /v1/customers/{id}/next-best-actions?channel=phone``, one of ``--ids``
  customers per call, round robin: the monthly history read from the aggregates, the tier
  replayed, churn and recommendation assessed through the one assessment function (nothing
  saved), the contact policy asked, the actions ranked.

Usage::

    .venv/bin/python bench/nba_bench.py                      # 1,000 customers x 12 months
    .venv/bin/python bench/nba_bench.py --customers 2000 --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from score_by_id_bench import (  # noqa: E402
    counts,
    customer_ids,
    database_url,
    drop_database,
    ensure_database,
    events_file,
    interleaved,
    load,
    medians,
    service,
)
from serve_bench import (  # noqa: E402
    BARE_PATH,
    BENCH_VAR,
    DEFAULT_POSTGRES_SERVER,
    Case,
    Run,
    Server,
    http,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "nba.json"
TARGET_P99_MS = 20.0


def write_requests(ids: list[str], folder: Path, channel: str) -> dict[str, Path]:
    """The bare bodies, and one "GET PATH" line per customer (bench/wrk/post_bodies.lua)."""
    folder.mkdir(parents=True, exist_ok=True)
    requests = {"bare": folder / "bare.jsonl", "nba": folder / "nba.txt"}
    requests["bare"].write_text('{"tasks":["churn"]}\n')
    requests["nba"].write_text(
        "".join(
            f"GET /v1/customers/{customer}/next-best-actions?channel={channel}\n"
            for customer in ids
        )
    )
    return requests


def check(server: Server, requests: dict[str, Path]) -> dict[str, object]:
    """One call of each case before measuring; the first customer's answer."""
    status, answer = http("POST", server.base_url + BARE_PATH, b"{}", api_key=server.api_key)
    if status != 200:
        raise SystemExit(f"bare: {status} {answer[:300]!r}")
    path = requests["nba"].read_text().splitlines()[0].removeprefix("GET ")
    status, answer = http("GET", server.base_url + path, api_key=server.api_key)
    if status != 200:
        raise SystemExit(f"nba: {status} {answer[:300]!r}")
    body: dict[str, object] = json.loads(answer)
    return body


def measure(
    server: Server, requests: dict[str, Path], args: argparse.Namespace, url: str
) -> list[Run]:
    """Interleaved rounds of both cases; the server's and the database's CPU per request with
    each run."""
    cases = [
        Case(
            name,
            server.base_url + BARE_PATH,
            path,
            1,
            persisted=False,
            server=server,
            api_key=server.api_key,
        )
        for name, path in requests.items()
    ]
    return interleaved(server, cases, args=args, log=BENCH_VAR / "logs" / "nba_wrk.log", url=url)


def main() -> None:
    """Prepare (or reuse) the book, serve it, measure, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ids", type=int, default=500, help="distinct customers called")
    parser.add_argument("--channel", default="phone")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES_SERVER)
    parser.add_argument("--drop", action="store_true", help="drop the book's database at the end")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    url = database_url(args.postgres_server, args.customers, args.months)
    path = events_file(args.customers, args.months, args.seed)
    created = ensure_database(args.postgres_server, url)
    stored = counts(url) if not created else {"events": 0}
    if not stored["events"]:
        rate = load(url, path)
        print(f"ingested at {rate:,.0f} events/s (in-process, one connection)")
    stored = counts(url)
    print(
        f"stored: {stored['events']:,} events, {stored['customers']:,} customers, "
        f"{stored['customer_months']:,} customer-months"
    )
    ids = customer_ids(path, args.ids, args.seed)
    requests = write_requests(ids, BENCH_VAR / "nba" / "requests", args.channel)
    try:
        with service(url) as server:
            first = check(server, requests)
            print(f"first answer: {json.dumps(first)[:400]}...")
            runs = measure(server, requests, args, url)
    finally:
        if args.drop:
            drop_database(args.postgres_server, url)
    table = medians(runs)
    print(
        f"\nMedians of {args.rounds} rounds, {args.duration:g} s each, wrk -t2 "
        f"-c{args.connections}; one uvicorn worker; PostgreSQL; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}.\n"
    )
    print("| case | requests/s | p50 ms | p99 ms | server CPU µs/request | non-2xx |")
    print("|---|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['server_cpu_us']:,.0f} | {row['non_2xx']:.0f} |"
        )
    nba = table["nba"]
    verdict = nba["p99_ms"] <= TARGET_P99_MS and nba["non_2xx"] == 0
    print(f"\ntarget (nba): p99 <= {TARGET_P99_MS:.0f} ms: {'PASS' if verdict else 'FAIL'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "stored": stored,
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
