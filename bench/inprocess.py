"""CPU per call of the service taken apart in-process: no HTTP server, no load generator.

``serve_bench.py`` measures what a client sees; this script answers where the server's time
goes. It builds the app as the benchmark server does (a throw-away SQLite database, the bundled
models, authentication on, the bare POST route added last), then drives it directly through
ASGI with ``--callers`` concurrent tasks on one event loop, so that nothing else competes for
the CPU. It prints, per call, the CPU time of the event-loop thread and of the whole process
(the group-commit writer and worker threads included), and optionally:

* ``--gc``: the collector's pauses per call;
* ``--single-row``: CPU and wall time of each LightGBM single-row call, which shows how much
  more a prediction costs between requests than in a hot loop (the model falls out of cache);
* ``--table-rows N``: N score rows stored before measuring (the writer's cost per row grows
  with the table; a benchmark run's batch cases leave ~2M);
* ``--profile N``: cProfile of the event-loop thread with a CPU clock (``time.thread_time``),
  the N functions with the highest cumulative CPU; profiling inflates Python calls, so read
  the shares, not the absolute figures.

Bodies come from ``serve_bench.py`` (``var/bench/bodies/``; run it once). Usage::

    .venv/bin/python bench/inprocess.py                      # bare POST, then churn, 1 customer
    .venv/bin/python bench/inprocess.py --case churn --single-row --gc
    .venv/bin/python bench/inprocess.py --case batch --callers 4 --calls 10 --gc
    .venv/bin/python bench/inprocess.py --case churn --profile 40
    .venv/bin/python bench/inprocess.py --case churn --table-rows 2000000   # a grown table
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from serve_bench import BARE_PATH, bench_client_key, process_cpu_seconds  # this folder
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring import single_row

BODIES = Path("var/bench/bodies")
# case -> (path, bodies file)
CASES = {
    "bare": (BARE_PATH, "churn_single.jsonl"),
    "churn": ("/v1/churn/scores", "churn_single.jsonl"),
    "batch": ("/v1/churn/scores", "churn_batch.jsonl"),
    "batch_columns": ("/v1/churn/scores", "churn_batch_columns.jsonl"),
}


@dataclass
class Tally:
    """Totals of an instrumented piece: count, CPU and wall nanoseconds."""

    count: int = 0
    cpu_ns: int = 0
    wall_ns: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def per_call(self, calls: int) -> str:
        return f"{self.cpu_ns / calls / 1000:.1f} µs CPU, {self.wall_ns / calls / 1000:.1f} µs wall"


@contextmanager
def collector_pauses(tally: Tally) -> Iterator[None]:
    """Count the garbage collector's pauses (and full collections) while the block runs."""
    started = 0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter_ns()
            return
        tally.count += 1
        tally.wall_ns += time.perf_counter_ns() - started
        if info["generation"] == 2:
            tally.extra["full"] = tally.extra.get("full", 0) + 1

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


@contextmanager
def single_row_calls(tally: Tally) -> Iterator[None]:
    """Time every call of LightGBM's single-row fast path (CPU of the calling thread, wall)."""
    original: Callable[..., Any] = single_row.SingleRowPredictor.__call__

    def timed(self: single_row.SingleRowPredictor, row: Any) -> Any:
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        try:
            return original(self, row)
        finally:
            tally.count += 1
            tally.cpu_ns += time.thread_time_ns() - cpu
            tally.wall_ns += time.perf_counter_ns() - wall

    single_row.SingleRowPredictor.__call__ = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        single_row.SingleRowPredictor.__call__ = original  # type: ignore[method-assign]


def build_app(database: Path) -> tuple[Any, str]:
    """The service as serve_bench.py serves it, with its bare route, and an API key."""
    url = f"sqlite:///{database}"
    upgrade(url)
    settings = Settings(database_url=url, models_dir=Path("models"), log_level="WARNING")
    key = bench_client_key(settings) or ""
    app = create_app(settings)

    @app.post(BARE_PATH, include_in_schema=False)
    async def bare(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"ok": True, "bytes": len(body)})

    return app, key


class Driver:
    """Calls the ASGI app directly, as uvicorn would, and checks every answer is a 200."""

    def __init__(self, app: Any, key: str, path: str, bodies: list[bytes]) -> None:
        self.app = app
        self.path = path
        self.bodies = bodies
        self.headers = [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"x-api-key", key.encode()),
        ]

    async def call(self, index: int) -> None:
        body = self.bodies[index % len(self.bodies)]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        delivered = False
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"{self.path} answered {statuses}")

    async def run(self, callers: int, calls: int) -> None:
        async def caller(first: int) -> None:
            for index in range(first, first + calls):
                await self.call(index)

        await asyncio.gather(*(caller(k * calls) for k in range(callers)))


def writer_process_cpu_s(writer: Any) -> float:
    """CPU seconds the score writer's child process has used (0 for the thread writer)."""
    pid = getattr(writer, "pid", None)
    if pid is None:
        return 0.0
    return process_cpu_seconds(pid)


async def measure(args: argparse.Namespace, case: str, app: Any, key: str) -> None:
    path, bodies_file = CASES[case]
    bodies = [line.encode() for line in (BODIES / bodies_file).read_text().splitlines() if line]
    driver = Driver(app, key, path, bodies)
    await driver.run(args.callers, max(1, args.calls // 4))  # warm-up
    pauses, predictions = Tally(), Tally()
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    with ExitStack() as instruments:  # only what was asked for: each costs a little
        if args.gc:
            instruments.enter_context(collector_pauses(pauses))
        if args.single_row:
            instruments.enter_context(single_row_calls(predictions))
        writer = app.state.scoring.writer
        before = writer.stats
        writer_cpu = writer_process_cpu_s(writer)
        loop_cpu, process_cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await driver.run(args.callers, args.calls)
        if profiler is not None:
            profiler.disable()
        loop_cpu = time.thread_time() - loop_cpu
        process_cpu = time.process_time() - process_cpu
        wall = time.perf_counter() - wall
        writer_cpu = writer_process_cpu_s(writer) - writer_cpu
    calls = args.callers * args.calls
    after = writer.stats
    groups = after.groups_committed - before.groups_committed
    rows = after.rows_committed - before.rows_committed
    print(
        f"{case:>13}: {calls:,} calls, {args.callers} concurrent; per call: event loop "
        f"{loop_cpu / calls * 1e6:,.0f} µs CPU, process {process_cpu / calls * 1e6:,.0f} µs "
        f"CPU, wall {wall / calls * 1e6:,.0f} µs; {rows / max(groups, 1):,.1f} rows per commit"
    )
    if writer_cpu:
        print(f"{'':>15}writer process: {writer_cpu / calls * 1e6:,.0f} µs CPU per call")
    if args.gc:
        print(
            f"{'':>15}collector: {pauses.count / calls:.2f} pauses "
            f"({pauses.extra.get('full', 0)} full in all), {pauses.wall_ns / calls / 1000:,.0f} µs"
        )
    if args.single_row and predictions.count:
        print(
            f"{'':>15}single-row predictions: {predictions.count:,}, each "
            f"{predictions.per_call(predictions.count)}"
        )
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats(os.environ.get("CVM_PROFILE_SORT", "cumulative")).print_stats(args.profile)


def prefill_scores(database: Path, rows: int) -> None:
    """Grow the score table to ``rows`` rows of the batch body's customers before measuring:
    a writer's cost per row grows with the table's indexes (bench/README.md)."""
    from persist_ceiling import churn_rows, prefill

    records = orjson.loads((BODIES / CASES["batch"][1]).read_bytes())["customers"]
    engine = create_db_engine(f"sqlite:///{database}")
    try:
        seconds = prefill(engine, churn_rows(records), rows)
    finally:
        engine.dispose()
    print(f"score table prefilled with {rows:,} rows in {seconds:.0f} s")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cvm-inprocess-") as folder:
        app, key = build_app(Path(folder) / "bench.db")
        if args.table_rows:
            prefill_scores(Path(folder) / "bench.db", args.table_rows)
        async with app.router.lifespan_context(app):
            for case in args.case:
                await measure(args, case, app, key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", choices=sorted(CASES), action="append", help="repeatable (bare, churn)"
    )
    parser.add_argument("--callers", type=int, default=32, help="concurrent callers (32)")
    parser.add_argument("--calls", type=int, default=200, help="calls per caller (200)")
    parser.add_argument("--gc", action="store_true", help="count the collector's pauses")
    parser.add_argument("--single-row", action="store_true", help="time single-row predictions")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile, top N")
    parser.add_argument(
        "--table-rows", type=int, default=0, metavar="N", help="score rows stored beforehand"
    )
    args = parser.parse_args(argv)
    args.case = args.case or ["bare", "churn"]
    needed = {*args.case, "batch"} if args.table_rows else set(args.case)
    missing = [CASES[c][1] for c in sorted(needed) if not (BODIES / CASES[c][1]).exists()]
    if missing:
        parser.error(f"no {', '.join(missing)} in {BODIES}: run bench/serve_bench.py once")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
