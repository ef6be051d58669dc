"""Throughput and latency of the scoring service, against a bare endpoint and MLServer, in one run.

Starts the service (uvicorn, uvloop + httptools, one worker unless told) with an extra bare
``POST /bench/bare`` route on the very same app, optionally MLServer's LightGBM runtime on the
same churn model, and drives each with wrk in interleaved rounds (bare, churn, batch, mlserver,
...) so that drift on the machine hits every case alike. Reports medians over rounds, the ratios
the issue sets targets for, and checks afterwards that every acknowledged score is in the
database. Usage::

    .venv/bin/python bench/serve_bench.py                      # SQLite file, 3 rounds of 10 s
    .venv/bin/python bench/serve_bench.py --database postgres --rounds 5
    .venv/bin/python bench/serve_bench.py --skip-mlserver --duration 5

Prerequisites: ``wrk`` on PATH (``apt-get install -y wrk``). Unless ``--skip-mlserver``, the run
calls ``bench/mlserver_setup.sh`` first: it builds MLServer's own virtualenv the first time and
points MLServer's model repositories at the churn model served here. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `app` importable without installing
    sys.path.insert(0, str(ROOT))

BENCH_VAR = ROOT / "var" / "bench"
LUA_SCRIPT = ROOT / "bench" / "wrk" / "post_bodies.lua"
DEFAULT_OUT = ROOT / "bench" / "results" / "serve.json"
MLSERVER_BIN = BENCH_VAR / "mlserver-venv" / "bin" / "mlserver"
THROWAWAY_BOOK = Path("/tmp/bench-book")
THROWAWAY_MODELS = Path("/tmp/bench-models")
DEFAULT_POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DB_PREFIX = "cvm_bench_"
TASKS = ("churn", "tier", "recommendation", "prospect")

BATCH_SIZE = 1000
SINGLE_BODIES = 1000  # distinct customers cycled through by the single-customer cases
SAMPLE_SEED = 7
BENCH_RATE_LIMIT_PER_S = 1e9
SINGLE_REASONS = 5
WARMUP_SECONDS = 2
BARE_PATH = "/bench/bare"
CHURN_PATH = "/v1/churn/scores"
SERVICE_ROUTES = (BARE_PATH, CHURN_PATH)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_WINDOW_S = 0.5
IDLE_CPU_SHARE = 0.05  # below 5% of a core over the window, with no new answer: idle

TARGETS = {
    "churn_vs_bare_rps": (">=", 0.45),
    "churn_vs_mlserver_rps": (">=", 2.5),
    "churn_vs_bare_p99": ("<=", 2.0),
    "batch_customers_per_s": (">=", 50_000.0),
    "batch_columns_customers_per_s": (">=", 50_000.0),
}
# The two 1,000-customer cases: one object per customer, or one array per feature ("columns",
# the layout the API offers callers that score many at once).
BATCH_CASES = ("batch", "batch_columns")


# --- the server under test: `serve_bench.py --serve ...` runs in the subprocess ---------------


def bench_app() -> Any:
    """The service's app with the bare route added, its settings from the environment (what
    every uvicorn worker process builds)."""
    from app.config import Settings
    from app.http.app import create_app

    app = create_app(Settings())

    @app.post(BARE_PATH, include_in_schema=False)
    async def bare(request: Request) -> JSONResponse:
        """Read the body and answer a tiny JSON: the floor of any POST on this server."""
        body = await request.body()
        return JSONResponse({"ok": True, "bytes": len(body)})

    return app


def serve(models_dir: Path, database_url: str, port: int, key_file: Path, workers: int) -> None:
    """Migrate, make the client key, and serve the app with the bare route on ``workers``
    uvicorn worker processes."""
    import uvicorn

    from app.config import Settings
    from app.db.migrate import upgrade

    upgrade(database_url)
    os.environ.update(
        CVM_DATABASE_URL=database_url, CVM_MODELS_DIR=str(models_dir), CVM_LOG_LEVEL="WARNING"
    )
    key_file.write_text(bench_client_key(Settings()) or "")
    uvicorn.run(
        "serve_bench:bench_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        workers=workers,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def bench_client_key(settings: Any) -> str | None:
    """An API key for wrk when the service requires one (None when auth is off or absent).

    Its rate limit is set out of reach: the benchmark measures capacity, not the policy; the
    limiter still runs on every request, so its cost is measured.
    """
    if not getattr(settings, "auth_enabled", False):
        return None
    from app.db.session import create_db_engine
    from app.security.api_keys import create_client

    engine = create_db_engine(settings.database_url)
    try:
        _, key = create_client(
            engine,
            name="serve-bench",
            scopes=["scores:write", "customers:read", "admin"],
            rate_limit_per_s=BENCH_RATE_LIMIT_PER_S,
        )
    finally:
        engine.dispose()
    return key


# --- models, bodies ---------------------------------------------------------------------------


def has_models(models_dir: Path) -> bool:
    """Whether every task has at least one version with a model file."""
    return all(any((models_dir / task).glob("*/model.txt")) for task in TASKS)


def ensure_models(models_dir: Path) -> tuple[Path, Path | None]:
    """The models to serve (training throw-away ones if needed) and the book they came from."""
    book = THROWAWAY_BOOK if (THROWAWAY_BOOK / "book.parquet").exists() else None
    if has_models(models_dir):
        return models_dir, book
    cvm = [str(Path(sys.executable).parent / "cvm")]
    print(f"no models in {models_dir}: using throw-away ones in {THROWAWAY_MODELS}")
    if book is None:
        synth = ["synth", "--customers", "5000", "--months", "18", "--seed", "7"]
        subprocess.run([*cvm, *synth, "--out", str(THROWAWAY_BOOK)], check=True)
        book = THROWAWAY_BOOK
    for task in TASKS:
        if not any((THROWAWAY_MODELS / task).glob("*/model.txt")):
            subprocess.run(
                [
                    *cvm,
                    "train",
                    task,
                    "--book",
                    str(book),
                    "--out",
                    str(THROWAWAY_MODELS / task / "1"),
                ],
                check=True,
            )
    return THROWAWAY_MODELS, book


def newest_version(models_dir: Path, task: str) -> Path:
    """The folder of a task's newest version (the one the registry serves unpinned)."""
    from app.scoring.manifest import Task
    from app.scoring.registry import available_versions

    return models_dir / task / available_versions(models_dir, Task(task))[-1]


def churn_records(model_dir: Path, book: Path | None, count: int) -> list[dict[str, Any]]:
    """``count`` distinct customers from a synthetic book, as a core banking system sends them."""
    from app.scoring.feature_schema import FeatureKind
    from app.scoring.manifest import Manifest, Task
    from app.training.features import build_task_frame, prepare_book
    from app.training.synth import read_book, write_book

    schema = Manifest.load(model_dir).feature_schema
    with tempfile.TemporaryDirectory(prefix="cvm-bench-book-") as scratch:
        if book is None:  # bundled models: a small book of the same shape is enough for inputs
            book = write_book(out_dir=Path(scratch), customers=3000, months=15, seed=11)
        prepared = prepare_book(read_book(book).to_pandas())
    frame = build_task_frame(prepared, Task.CHURN)
    # The book as it stands at its most recent scorable month, customers in random order: the
    # mix of risk bands a daily scoring run sees (customers' own last rows would over-sample
    # those about to leave, and every high-risk score does extra alert work).
    rows = prepared.loc[frame.features.index].sample(frac=1.0, random_state=SAMPLE_SEED)
    latest = rows.sort_values("month", ascending=False, kind="stable")
    latest = latest.drop_duplicates("customer_id", keep="first")
    records: list[dict[str, Any]] = []
    for _, row in latest.iterrows():
        record: dict[str, Any] = {"customer_id": str(row["customer_id"])}
        for feature in schema.features:
            value = row[feature.name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                break  # the MLServer body is a plain FP64 tensor: keep rows without gaps
            if feature.kind is FeatureKind.BOOLEAN:
                record[feature.name] = bool(value)
            elif feature.kind is FeatureKind.INTEGER:
                record[feature.name] = int(value)
            elif feature.kind is FeatureKind.NUMBER:
                record[feature.name] = float(value)
            else:
                record[feature.name] = str(value)
        else:
            records.append(record)
        if len(records) == count:
            return records
    raise SystemExit(f"the book has only {len(records)} complete churn rows; {count} needed")


@dataclass(frozen=True)
class Bodies:
    """Files of request bodies, one JSON per line, for the wrk script."""

    single: Path
    batch: Path
    batch_columns: Path
    mlserver: Path


def write_bodies(model_dir: Path, records: list[dict[str, Any]], folder: Path) -> Bodies:
    """Single-customer bodies (reasons on), one 1,000-customer body (reasons=0), V2 tensors."""
    from app.scoring.manifest import Manifest

    schema = Manifest.load(model_dir).feature_schema
    folder.mkdir(parents=True, exist_ok=True)
    singles = records[:SINGLE_BODIES]
    bodies = Bodies(
        single=folder / "churn_single.jsonl",
        batch=folder / "churn_batch.jsonl",
        batch_columns=folder / "churn_batch_columns.jsonl",
        mlserver=folder / "mlserver_v2.jsonl",
    )
    bodies.single.write_text(
        "".join(
            json.dumps({"customers": [r], "reasons": SINGLE_REASONS}, separators=(",", ":")) + "\n"
            for r in singles
        )
    )
    batch = {"customers": records[:BATCH_SIZE], "reasons": 0}
    bodies.batch.write_text(json.dumps(batch, separators=(",", ":")) + "\n")
    names = list(records[0])
    columns = {name: [r.get(name) for r in records[:BATCH_SIZE]] for name in names}
    bodies.batch_columns.write_text(
        json.dumps({"columns": columns, "reasons": 0}, separators=(",", ":")) + "\n"
    )
    matrix = schema.encode_rows(
        [{k: v for k, v in r.items() if k != "customer_id"} for r in singles]
    )
    lines = []
    for row in matrix:
        tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64"}
        lines.append(json.dumps({"inputs": [{**tensor, "data": row.tolist()}]}) + "\n")
    bodies.mlserver.write_text("".join(lines))
    return bodies


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 30,
    api_key: str | None = None,
) -> tuple[int, bytes]:
    """Status and body of one request (errors as their status; 0 when unreachable)."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())
    except OSError:
        return 0, b""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one local process so far (whole clock ticks: 10 ms)."""
    # Fields after the parenthesised command: state ppid ... utime(12) stime(13).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Server:
    """A server process started by this script, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    api_key: str | None = None
    """The key our service made for this run (None: it requires none)."""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its live descendants so far."""
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Fields after the parenthesised command: state ppid ... utime(12) stime(13).
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                parents[pid] = int(fields[1])
                times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        tree, frontier = {self.process.pid}, [self.process.pid]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            tree.update(children)
            frontier.extend(children)
        return sum(times.get(pid, 0.0) for pid in tree)

    def wait_ready(self, path: str, timeout: float = 120) -> None:
        """Poll ``path`` until it answers 200; fail with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            if http("GET", self.base_url + path, timeout=2)[0] == 200:
                return
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> None:
        """SIGINT (graceful: drains the group-commit writer), then SIGKILL if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(
                f"{self.name} did not stop within {timeout:.0f} s; killing pid {self.process.pid}"
            )
            self.process.kill()
            self.process.wait()


def start_process(
    name: str,
    command: list[str],
    log: Path,
    cwd: Path,
    base_url: str,
    env: dict[str, str] | None = None,
) -> Server:
    """Start a server with stdout and stderr to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env or os.environ.copy()
        )
    return Server(name=name, process=process, base_url=base_url, log=log)


def start_service(
    models_dir: Path, database_url: str, port: int, log: Path, workers: int = 1
) -> Server:
    """Our service (with the bare route), migrated, ready to score, with its API key if any."""
    # One OpenMP thread, as `cvm serve` sets: a request is one row.
    env = {**os.environ, "CVM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    env.setdefault("OMP_NUM_THREADS", "1")
    key_file = BENCH_VAR / "api-key"
    key_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    command += ["--models-dir", str(models_dir), "--database-url", database_url]
    command += ["--port", str(port), "--key-file", str(key_file), "--workers", str(workers)]
    server = start_process("cvm", command, log, ROOT, f"http://127.0.0.1:{port}", env)
    server.wait_ready("/readyz")
    server.api_key = key_file.read_text().strip() or None
    key_file.unlink()
    return server


def prepare_mlserver(models_dir: Path, churn_dir: Path) -> None:
    """Refresh MLServer's repositories from the served churn model (builds its venv once)."""
    if not MLSERVER_BIN.exists():
        print("building the MLServer virtualenv (once): bench/mlserver_setup.sh")
    subprocess.run([str(ROOT / "bench" / "mlserver_setup.sh"), str(models_dir)], check=True)
    for repository in ("mlserver-inproc", "mlserver-default"):
        served = BENCH_VAR / repository / "churn" / "model.txt"
        if served.read_bytes() != (churn_dir / "model.txt").read_bytes():
            raise SystemExit(f"{served} is not the churn model we serve ({churn_dir})")


def start_mlserver(repository: Path) -> Server:
    """``mlserver start`` on a repository made by mlserver_setup.sh, once the model is ready."""
    settings = json.loads((repository / "settings.json").read_text())
    for key in ("http_port", "grpc_port", "metrics_port"):
        if key in settings and port_in_use(int(settings[key])):
            raise SystemExit(f"port {settings[key]} ({key} of {repository.name}) is already in use")
    base_url = f"http://127.0.0.1:{settings['http_port']}"
    log = BENCH_VAR / "logs" / f"{repository.name}.log"
    # cwd under var/: MLServer writes a .metrics folder into its working directory.
    # The same single OpenMP thread as our service, so neither side is slowed by spinning.
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")
    server = start_process(
        repository.name,
        [str(MLSERVER_BIN), "start", str(repository)],
        log,
        BENCH_VAR,
        base_url,
        env,
    )
    server.wait_ready("/v2/models/churn/ready")
    return server


# --- databases --------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(kind: str, postgres_server: str) -> Iterator[str]:
    """A throw-away database: a SQLite file in a temporary folder, or a PostgreSQL database."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="cvm-bench-db-") as folder:
            yield f"sqlite:///{Path(folder) / 'cvm.db'}"
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    server = make_url(postgres_server)
    name = f"{BENCH_DB_PREFIX}{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def stored_rows(database_url: str) -> dict[str, int]:
    """Rows in the score table, per task."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            result = connection.execute(text("SELECT task, count(*) FROM score GROUP BY task"))
            return {str(task): int(n) for task, n in result}
    finally:
        engine.dispose()


def counter(metrics_text: str, name: str, **labels: str) -> int:
    """Sum of a Prometheus counter's samples whose labels include ``labels``."""
    total = 0.0
    for match in re.finditer(r"^" + re.escape(name) + r"\{([^}]*)\}\s+(\S+)$", metrics_text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return int(total)


def wait_idle(server: Server, timeout: float = 300) -> str:
    """Wait until the service has answered everything wrk left in flight; its final metrics.

    wrk stops listening when its time is up, but the server still finishes (and saves) the
    requests it had accepted: a run must not start while the previous one's backlog drains.
    Idle means no answer and almost no CPU time for a while (a batch call takes seconds under
    load, so an unchanged counter alone proves nothing).
    """
    deadline = time.monotonic() + timeout
    previous: tuple[int, float] | None = None
    while time.monotonic() < deadline:
        text = http("GET", server.base_url + "/metrics")[1].decode()
        answered = sum(
            counter(text, "cvm_http_requests_total", route=route) for route in SERVICE_ROUTES
        )
        cpu = server.cpu_seconds()
        if previous is not None:
            busy = (cpu - previous[1]) / IDLE_WINDOW_S
            if answered == previous[0] and busy < IDLE_CPU_SHARE:
                return text
        previous = (answered, cpu)
        time.sleep(IDLE_WINDOW_S)
    raise RuntimeError(f"{server.name} still busy {timeout:.0f} s after the load stopped")


# --- wrk --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run against one case."""

    case: str
    round: int
    duration_s: float
    requests: int
    non_2xx: int
    socket_errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    load_avg_1m: float
    server_ok: int | None = None
    """200s the service itself counted for this run, including those wrk left in flight."""
    server_cpu_us_per_request: float | None = None
    """Server CPU time (all its threads and worker processes) per answered request."""
    database_cpu_us_per_request: float | None = None
    """CPU time of the database's server processes (PostgreSQL backends) per answered request."""
    drain_s: float = 0.0
    """Time the service took, after wrk stopped, to answer what was still in flight."""

    @property
    def ok(self) -> int:
        """Responses with a 2xx status: what the client saw acknowledged."""
        return self.requests - self.non_2xx


@dataclass(frozen=True)
class Case:
    """A URL, its request bodies and what one successful response stands for."""

    name: str
    url: str
    bodies: Path
    customers_per_request: int
    persisted: bool
    note: str = ""
    server: Server | None = None
    """The server behind ``url``: its CPU time is measured per run."""
    counted: bool = False
    """Whether the server is our service, whose metrics count answers (drained after a run)."""
    api_key: str | None = None


def run_wrk(
    case: Case, *, seconds: float, connections: int, threads: int, round_: int, log: Path
) -> Run:
    """One bounded wrk run (127.0.0.1 only); the numbers come from the Lua done() line."""
    if not case.url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing to load anything but 127.0.0.1: {case.url}")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "60s",
        "-s",
        str(LUA_SCRIPT),
        case.url,
        "--",
        str(case.bodies),
        case.api_key or "",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    with log.open("a") as sink:
        sink.write(f"### round {round_} {case.name}: {' '.join(command)}\n")
        sink.write(completed.stdout + completed.stderr + "\n")
    line = next((x for x in completed.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed on {case.name}:\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["errors"]
    latency = data["latency_us"]
    duration = data["duration_us"] / 1e6
    return Run(
        case=case.name,
        round=round_,
        duration_s=duration,
        requests=data["requests"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        rps=data["requests"] / duration,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        load_avg_1m=os.getloadavg()[0],
    )


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """Medians over rounds of one case."""

    case: str
    rounds: int
    rps: float
    rps_min: float
    rps_max: float
    customers_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_cpu_us_per_request: float | None
    non_2xx: int
    socket_errors: int
    note: str = ""


@dataclass
class Accounting:
    """Responses of the persisted cases (warm-ups and checks included), client and server side."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    rows_acknowledged: int = 0
    rows_answered: int = 0

    def add(self, case: Case, *, acknowledged: int, answered: int) -> None:
        """Count responses wrk saw (``acknowledged``) and the service sent (``answered``)."""
        if not case.persisted:
            return
        self.acknowledged[case.name] = self.acknowledged.get(case.name, 0) + acknowledged
        self.answered[case.name] = self.answered.get(case.name, 0) + answered
        self.rows_acknowledged += acknowledged * case.customers_per_request
        self.rows_answered += answered * case.customers_per_request


def summarise(case: Case, runs: list[Run]) -> Summary:
    """Medians (and the spread of requests/s) over the rounds of one case."""
    rps = [r.rps for r in runs]
    median_rps = statistics.median(rps)
    return Summary(
        case=case.name,
        rounds=len(runs),
        rps=median_rps,
        rps_min=min(rps),
        rps_max=max(rps),
        customers_per_s=median_rps * case.customers_per_request,
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p90_ms=statistics.median(r.p90_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        server_cpu_us_per_request=None
        if any(r.server_cpu_us_per_request is None for r in runs)
        else statistics.median(r.server_cpu_us_per_request or 0.0 for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        note=case.note,
    )


def ratios(summaries: dict[str, Summary], runs: list[Run]) -> dict[str, dict[str, Any]]:
    """The issue's ratios from the medians, with the per-round ratios for their spread."""

    def per_round(numerator: str, denominator: str, attr: str) -> list[float]:
        by_round: dict[int, dict[str, Run]] = {}
        for run in runs:
            by_round.setdefault(run.round, {})[run.case] = run
        return [
            getattr(r[numerator], attr) / getattr(r[denominator], attr)
            for r in by_round.values()
            if numerator in r and denominator in r
        ]

    out: dict[str, dict[str, Any]] = {}

    def put(name: str, value: float, rounds: list[float], what: str) -> None:
        op, target = TARGETS[name]
        passed = value >= target if op == ">=" else value <= target
        out[name] = {
            "value": value,
            "per_round": rounds,
            "target": f"{op} {target:g}",
            "pass": passed,
            "what": what,
        }

    churn, bare = summaries["churn"], summaries["bare"]
    put(
        "churn_vs_bare_rps",
        churn.rps / bare.rps,
        per_round("churn", "bare", "rps"),
        "churn requests/s (reasons + persisted) / bare POST requests/s, same server",
    )
    if "mlserver" in summaries:
        put(
            "churn_vs_mlserver_rps",
            churn.rps / summaries["mlserver"].rps,
            per_round("churn", "mlserver", "rps"),
            "churn requests/s / MLServer LightGBM (parallel_workers=0) requests/s",
        )
    put(
        "churn_vs_bare_p99",
        churn.p99_ms / bare.p99_ms,
        per_round("churn", "bare", "p99_ms"),
        "churn p99 / bare p99 at the same concurrency",
    )
    for case_name, layout in zip(BATCH_CASES, ("objects", "columns"), strict=True):
        name = f"{case_name}_customers_per_s"
        put(
            name,
            summaries[case_name].customers_per_s,
            [r.rps * BATCH_SIZE for r in runs if r.case == case_name],
            f"1,000-customer calls as {layout} (reasons=0, persisted): requests/s x 1000",
        )
        # wrk counts only calls answered before it stops; with calls taking seconds that
        # undercounts. The service's own count over the run plus its drain is unbiased.
        served = [
            (r.server_ok or 0) * BATCH_SIZE / (r.duration_s + r.drain_s)
            for r in runs
            if r.case == case_name
        ]
        out[name]["service_side"] = statistics.median(served)
        out[name]["service_side_per_round"] = served
    return out


def markdown(
    summaries: dict[str, Summary], found: dict[str, dict[str, Any]], config: dict[str, Any]
) -> str:
    """The results as markdown tables."""
    lines = [
        f"Medians of {config['rounds']} interleaved rounds, {config['duration_s']:g} s each; wrk "
        f"-t{config['threads']} -c{config['connections']}; one uvicorn worker; "
        f"database {config['database']}; {config['cpus']} CPUs.",
        "",
        "| case | requests/s (min-max) | customers/s | p50 ms | p90 ms | p99 ms "
        "| server CPU µs/request | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries.values():
        cpu = "-" if s.server_cpu_us_per_request is None else f"{s.server_cpu_us_per_request:,.0f}"
        lines.append(
            f"| {s.case} | {s.rps:,.0f} ({s.rps_min:,.0f}-{s.rps_max:,.0f}) | "
            f"{s.customers_per_s:,.0f} | {s.p50_ms:.2f} | {s.p90_ms:.2f} | {s.p99_ms:.2f} | "
            f"{cpu} | {s.non_2xx + s.socket_errors} |"
        )
    lines += ["", "| ratio | measured | per round | target | |", "|---|---|---|---|---|"]
    for name, r in found.items():
        fmt = "{:,.0f}" if name.endswith("customers_per_s") else "{:.2f}"
        rounds = ", ".join(fmt.format(v) for v in r["per_round"])
        mark = "pass" if r["pass"] else "FAIL"
        lines.append(f"| {name} | {fmt.format(r['value'])} | {rounds} | {r['target']} | {mark} |")
    counted = {
        case_name: found[f"{case_name}_customers_per_s"]["service_side"]
        for case_name in BATCH_CASES
        if f"{case_name}_customers_per_s" in found
    }
    if counted:
        figures = ", ".join(f"{name} {served:,.0f}" for name, served in counted.items())
        lines += [
            "",
            f"Batch, counted by the service over each run and its drain (calls wrk left in "
            f"flight included), customers/s: {figures}.",
        ]
    notes = [s for s in summaries.values() if s.note]
    if notes:
        lines.append("")
        lines += [f"- {s.case}: {s.note}" for s in notes]
    return "\n".join(lines)


def check_bodies(cases: list[Case], accounting: Accounting) -> None:
    """One request per case before measuring: the bodies are valid and the answers complete."""
    for case in cases:
        body = case.bodies.read_text().splitlines()[0].encode()
        status, answer = http("POST", case.url, body, timeout=60, api_key=case.api_key)
        if status != 200:
            raise RuntimeError(f"{case.name}: {status} {answer[:500]!r}")
        accounting.add(case, acknowledged=1, answered=1)
        data = json.loads(answer)
        if case.name == "churn":
            reasons = data["results"][0]["explanation"]["reasons"]
            assert data["saved"] and reasons, "churn answered without reasons or unsaved"
        if case.name in BATCH_CASES:
            assert len(data["results"]) == BATCH_SIZE and data["saved"]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_avg_before": os.getloadavg(),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that set the figures."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "lightgbm",
        "sqlalchemy",
        "psycopg",
        "orjson",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    found["wrk"] = (wrk.stdout or wrk.stderr).split(" [")[0].removeprefix("wrk ").strip()
    return found


def service_cases(service: Server, bodies: Bodies) -> list[Case]:
    """The bare endpoint, single-customer churn and the 1,000-customer batch, on our service."""
    # name, path, bodies, customers per call, persisted, note
    table: list[tuple[str, str, Path, int, bool, str]] = [
        (
            "bare",
            BARE_PATH,
            bodies.single,
            1,
            False,
            "same app and middleware; reads the body, answers a tiny JSON",
        ),
        (
            "churn",
            CHURN_PATH,
            bodies.single,
            1,
            True,
            f"1 customer, {SINGLE_REASONS} reasons, saved before answering",
        ),
        (
            "batch",
            CHURN_PATH,
            bodies.batch,
            BATCH_SIZE,
            True,
            f"{BATCH_SIZE:,} customers per call, reasons=0, saved before answering",
        ),
        (
            "batch_columns",
            CHURN_PATH,
            bodies.batch_columns,
            BATCH_SIZE,
            True,
            f"the same {BATCH_SIZE:,} customers as columns (one array per feature)",
        ),
    ]
    return [
        Case(
            name,
            service.base_url + path,
            body_file,
            customers,
            persisted=persisted,
            note=note,
            server=service,
            counted=True,
            api_key=service.api_key,
        )
        for name, path, body_file, customers, persisted, note in table
    ]


MLSERVER_NOTES = {
    "mlserver": "MLServer 1.7.1 LightGBM runtime in-process (parallel_workers=0): "
    "probability only, no reasons, writes nothing",
    "mlserver_pool": "MLServer 1.7.1 with its default inference worker pool (another process): "
    "probability only, no reasons, writes nothing",
}


def mlserver_repositories(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The MLServer configurations to measure, by case name."""
    chosen = []
    if not args.skip_mlserver:
        chosen.append(("mlserver", BENCH_VAR / "mlserver-inproc"))
    if args.mlserver_defaults:
        chosen.append(("mlserver_pool", BENCH_VAR / "mlserver-default"))
    return chosen


def mlserver_case(name: str, server: Server, bodies: Bodies) -> Case:
    """V2 inference of one customer's feature row on an MLServer."""
    url = server.base_url + "/v2/models/churn/infer"
    note = MLSERVER_NOTES[name]
    return Case(name, url, bodies.mlserver, 1, persisted=False, note=note, server=server)


def answered_by_service(case: Case) -> int | None:
    """200s our service has sent on the case's route so far (None for other servers)."""
    if not case.counted or case.server is None:
        return None
    metrics = http("GET", case.server.base_url + "/metrics")[1].decode()
    route = case.url.removeprefix(case.server.base_url)
    return counter(metrics, "cvm_http_requests_total", route=route, status="200")


def measure_once(
    case: Case, args: argparse.Namespace, seconds: float, round_: int, log: Path
) -> Run:
    """One wrk run, then the drain of what wrk left in flight, and the server's CPU time."""
    connections = args.batch_connections if case.name in BATCH_CASES else args.connections
    before = answered_by_service(case)
    cpu_before = case.server.cpu_seconds() if case.server is not None else 0.0
    run = run_wrk(
        case,
        seconds=seconds,
        connections=connections,
        threads=args.threads,
        round_=round_,
        log=log,
    )
    answered = run.requests
    if case.counted and case.server is not None:
        drain_started = time.monotonic()
        wait_idle(case.server)
        run.drain_s = time.monotonic() - drain_started
        after = answered_by_service(case)
        assert before is not None and after is not None
        run.server_ok = answered = after - before
    else:
        time.sleep(0.5)  # at most `connections` small requests were still in flight
    if case.server is not None and answered:
        cpu = case.server.cpu_seconds() - cpu_before
        run.server_cpu_us_per_request = cpu * 1e6 / answered
    return run


def measure(
    cases: list[Case], args: argparse.Namespace, accounting: Accounting, log: Path
) -> list[Run]:
    """A warm-up per case, then interleaved rounds: every case once per round, in order."""
    print(f"warming up each case for {WARMUP_SECONDS} s")
    for case in cases:
        run = measure_once(case, args, WARMUP_SECONDS, 0, log)
        accounting.add(case, acknowledged=run.ok, answered=run.server_ok or 0)
    runs: list[Run] = []
    for round_ in range(1, args.rounds + 1):
        for case in cases:
            run = measure_once(case, args, args.duration, round_, log)
            accounting.add(case, acknowledged=run.ok, answered=run.server_ok or 0)
            runs.append(run)
            print(
                f"round {round_} {case.name:>13}: {run.rps:9,.0f} req/s  "
                f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                f"non-2xx {run.non_2xx}  socket errors {run.socket_errors}  "
                f"load {run.load_avg_1m:.1f}"
            )
    return runs


def profile_churn(case: Case, args: argparse.Namespace, accounting: Accounting, log: Path) -> None:
    """Where the service's time goes under single-customer churn load (not part of the figures):
    py-spy's collapsed stacks per thread, and the functions most often on them."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() or case.server is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    stacks = args.out.parent / "churn-stacks.txt"
    stacks.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(case.server.process.pid), "--rate", "250"]
    command += ["--duration", f"{args.py_spy:.0f}", "--nonblocking", "--threads", "--gil"]
    command += ["--format", "raw", "--output", str(stacks)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy:
        time.sleep(1)  # attach before the load starts
        run = measure_once(case, args, args.py_spy, -1, log)
        accounting.add(case, acknowledged=run.ok, answered=run.server_ok or 0)
        _, errors = spy.communicate(timeout=args.py_spy + 60)
    if spy.returncode != 0:
        print(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
        return
    print(f"py-spy samples holding the GIL during {run.requests:,} churn calls: {stacks}")
    print("share of samples in which a function is on the stack:")
    for name, share in functions_on_stack(stacks)[:40]:
        print(f"  {share:6.1%}  {name}")


def functions_on_stack(stacks: Path) -> list[tuple[str, float]]:
    """Each function's share of samples (inclusive), from py-spy's collapsed stacks."""
    counts: dict[str, int] = {}
    total = 0
    for line in stacks.read_text().splitlines():
        path, _, count_text = line.rpartition(" ")
        if not path:
            continue
        count = int(count_text)
        total += count
        for name in {frame.split(" (")[0] for frame in path.split(";")}:
            counts[name] = counts.get(name, 0) + count
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return [(name, count / max(total, 1)) for name, count in ranked]


def verify(rows: dict[str, int], accounting: Accounting, scored: int) -> dict[str, Any]:
    """Every acknowledged score is stored, and the stored rows match the service's own count.

    wrk stops listening when its time is up; the requests it had sent are still scored, saved
    and answered. Those rows are expected too: they are counted on the service side.
    """
    stored = sum(rows.values())
    acknowledged = accounting.acknowledged
    answered = accounting.answered
    in_flight = {name: answered[name] - acknowledged.get(name, 0) for name in answered}
    lost = stored < accounting.rows_acknowledged
    exact = stored == accounting.rows_answered == scored
    text = (
        f"verification: {stored:,} rows in the database; acknowledged to wrk: "
        f"{acknowledged.get('churn', 0):,} churn x 1 + "
        f"{sum(acknowledged.get(name, 0) for name in BATCH_CASES):,} batch "
        f"x {BATCH_SIZE:,} = {accounting.rows_acknowledged:,} rows (warm-ups and checks "
        f"included); plus calls answered after wrk stopped listening: "
        f"{in_flight.get('churn', 0)} churn + "
        f"{sum(in_flight.get(name, 0) for name in BATCH_CASES)} batch -> "
        f"{accounting.rows_answered:,} expected; service counter: {scored:,}. "
        + ("ACKNOWLEDGED SCORES ARE MISSING" if lost else "Nothing acknowledged was lost")
        + ("; exact match." if exact else "; MISMATCH.")
    )
    return {
        "rows_in_database": stored,
        "rows_by_task": rows,
        "acknowledged_calls": acknowledged,
        "answered_calls": answered,
        "answered_after_wrk_stopped": in_flight,
        "rows_expected_from_acknowledged": accounting.rows_acknowledged,
        "rows_expected_from_answered": accounting.rows_answered,
        "service_counter_customers_saved": scored,
        "nothing_acknowledged_lost": not lost,
        "exact": exact,
        "text": text,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the benchmark (or, with --serve, be the server)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--batch-connections",
        type=int,
        help="connections for the 1,000-customer case (default: --connections)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-server",
        default=DEFAULT_POSTGRES_SERVER,
        help="server on which a throw-away database is created and dropped",
    )
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument(
        "--mlserver-defaults",
        action="store_true",
        help="also measure MLServer with its default worker pool",
    )
    parser.add_argument(
        "--py-spy",
        type=float,
        metavar="SECONDS",
        help="after the rounds, record the service with py-spy during a churn run this long",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.models_dir, args.database_url, args.port, args.key_file, args.workers)
        return 0
    args.batch_connections = args.batch_connections or args.connections
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: apt-get install -y wrk")

    models_dir, book = ensure_models(args.models_dir.resolve())
    churn_dir = newest_version(models_dir, "churn")
    if mlserver_repositories(args):
        prepare_mlserver(models_dir, churn_dir)
    bodies = write_bodies(
        churn_dir, churn_records(churn_dir, book, BATCH_SIZE), BENCH_VAR / "bodies"
    )
    wrk_log = BENCH_VAR / "logs" / "wrk.log"
    wrk_log.parent.mkdir(parents=True, exist_ok=True)
    wrk_log.write_text("")
    config = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": args.connections,
        "batch_connections": args.batch_connections,
        "threads": args.threads,
        "database": args.database,
        "models_dir": str(models_dir),
        "churn_model": str(churn_dir),
        "batch_size": BATCH_SIZE,
        "single_reasons": SINGLE_REASONS,
        "uvicorn": "1 worker, loop=uvloop, http=httptools, access_log off, CVM_LOG_LEVEL=WARNING",
        **machine(),
    }

    servers: list[Server] = []
    with bench_database(args.database, args.postgres_server) as database_url:
        try:
            service = start_service(
                models_dir, database_url, free_port(), BENCH_VAR / "logs" / "cvm.log"
            )
            servers.append(service)
            config["api_key_auth"] = service.api_key is not None
            cases = service_cases(service, bodies)
            for name, repository in mlserver_repositories(args):
                mlserver = start_mlserver(repository)
                servers.append(mlserver)
                cases.append(mlserver_case(name, mlserver, bodies))
            accounting = Accounting()
            check_bodies(cases, accounting)
            runs = measure(cases, args, accounting, wrk_log)
            if args.py_spy:
                profile_churn(cases[1], args, accounting, wrk_log)
            final_metrics = wait_idle(service)
        finally:
            for server in reversed(servers):
                server.stop()
        rows = stored_rows(database_url)

    summaries = {c.name: summarise(c, [r for r in runs if r.case == c.name]) for c in cases}
    found = ratios(summaries, runs)
    config["versions"] = versions()
    config["load_avg_after"] = os.getloadavg()
    verification = verify(
        rows, accounting, counter(final_metrics, "cvm_scores_total", task="churn")
    )
    table = markdown(summaries, found, config)
    print(f"\n{table}\n\n{verification['text']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "summary": {name: asdict(s) for name, s in summaries.items()},
        "ratios": found,
        "verification": verification,
        "runs": [asdict(r) for r in runs],
        "markdown": table,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if verification["nothing_acknowledged_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
