"""Console page timings with 1,000,000 customers on PostgreSQL (issue 19 item 5: <= 300 ms).

One tenant's book is loaded once with COPY into a kept bench database (``cvm_bench_console``
on the test server, never the test database): per customer a tier of record (plus upgrades
and downgrades spread over the months), its latest balances, a churn score of the champion
model, a profile event (branch, relationship manager) and two transactions; a quarter of
them are prospects with a prospect score; 20,000 open churn alerts (routed), 10,000
complaints, 1,000,000 audit lines, churn outcomes for 5% of the book (the backtest), and a
launched model-targeted campaign of 20,000 members with their responses in the trail; with
them what the app stores beside such rows (each prospect's row of ``prospect``, the
pyramid's totals that ``cvm tiers apply`` stores).

The app is then built on that database, staff log in through the real login form (a
relationship manager, a branch supervisor, a model owner, an administrator), and each page
is requested ``--requests`` times in process (Starlette's TestClient: no network, no
uvicorn), timed with ``time.perf_counter`` around the request: the server time of the page,
rendering included. One table per page: p50, p95 and max in milliseconds.

    python bench/console_pages.py                    # 1,000,000 customers, 20 requests a page
    python bench/console_pages.py --customers 100000 --requests 5
    python bench/console_pages.py --database cvm_bench_console_mybranch --only queue

Each table also gives the SQL statements one request of the page sends through the console's
own session (counted on an engine of the console's alone, so the app's background threads are
not counted; the next-best-action service's reads on the customer page use the app's
engine and are not counted either).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.casework.schemas import StaffRequest  # noqa: E402
from app.casework.staff import StaffRow, store_staff  # noqa: E402
from app.config import Settings  # noqa: E402
from app.console.service import Passwords, set_password  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.session import create_db_engine, create_session_factory  # noqa: E402
from app.http.app import create_app  # noqa: E402
from app.modelops.backtest import (  # noqa: E402
    IMPORT_RESAMPLES,
    latest_backtest,
    store_backtest,
)
from app.modelops.monitoring import latest_run, monitor, record_run  # noqa: E402
from app.modelops.service import champions  # noqa: E402
from app.scoring.manifest import Task  # noqa: E402
from app.scoring.repository import TenantScope  # noqa: E402
from app.value.service import store_pyramid  # noqa: E402
from tests.db_support import postgres_server_url  # noqa: E402

DATABASE = "cvm_bench_console"
TENANT = "bench-console"
PASSWORD = "bench console password"
TIERS = ("mass", "emerging_affluent", "affluent", "high_net_worth", "private")
TIER_SHARES = (0.6, 0.25, 0.1, 0.04, 0.01)
MONTHS = [f"2026-{m:02d}" for m in range(1, 12)]
BRANCHES = 50
MANAGERS = 500
ALERTS = 20_000
COMPLAINTS = 10_000
AUDIT_LINES = 1_000_000
CAMPAIGN_MEMBERS = 20_000
CAMPAIGN_CODE = "bench-retention"
STAFF = {
    "rm000": (["relationship_manager"], "b00"),
    "sup00": (["branch_supervisor"], "b00"),
    "owner": (["model_owner"], "b00"),
    "admin": (["administrator"], "b00"),
}
BUDGET_MS = 300.0
PROSPECTS_FROM_SCORES = """
INSERT INTO prospect (tenant, customer_id, value_if_converted, income, expected_value,
    conversion_probability, expected_known, conversion_rank, model_version, scored_at)
SELECT tenant, customer_id, (outputs->>'value_if_converted')::float,
    (features->>'income')::float, (outputs->>'expected_value')::float,
    (outputs->>'conversion_probability')::float, outputs->>'expected_value' IS NOT NULL,
    coalesce((outputs->>'conversion_probability')::float, 0), model_version, created_at
FROM score WHERE tenant = %s AND task = 'prospect' AND stage = 'prospect'
"""


def bench_url(database: str = DATABASE) -> str:
    """The kept bench database on the test server, created when missing, migrated."""
    server = postgres_server_url()
    admin = server.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if found is None:
            connection.execute(f'CREATE DATABASE "{database}"')
    url = server.set(database=database).render_as_string(hide_password=False)
    upgrade(url)
    return url


def customer_id(i: int) -> str:
    """The stored id of customer ``i``."""
    return f"CON{i:08d}"


def manager_of(i: int) -> str:
    """Customer ``i``'s relationship manager (500 of them, rm000 to rm499)."""
    return f"rm{i % MANAGERS:03d}"


def branch_of(i: int) -> str:
    """Customer ``i``'s branch (b00 to b49)."""
    return f"b{i % BRANCHES:02d}"


def _copy(
    connection: psycopg.Connection[Any], statement: str, rows: Iterator[tuple[Any, ...]]
) -> None:
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _features(rng: np.random.Generator, names: list[str]) -> str:
    values: dict[str, Any] = {}
    for name in names:
        if name == "occupation":
            values[name] = "employed"
        elif name == "region":
            values[name] = "north"
        elif name.startswith("has_") or name == "open_complaint":
            values[name] = int(rng.integers(0, 2))
        else:
            values[name] = round(float(rng.gamma(2.0, 500.0)), 2)
    return json.dumps(values)


def _book(
    connection: psycopg.Connection[Any], customers: int, churn_version: str, names: list[str]
) -> None:
    """Tiers, balances, churn scores, events and prospects of every customer."""
    rng = np.random.default_rng(19)
    tier = rng.choice(len(TIERS), customers, p=TIER_SHARES)
    balance = rng.gamma(1.5, 20_000.0, customers)
    churn = rng.beta(2, 5, customers)
    scored = rng.integers(0, 180, customers)  # days before 2026-12-01
    start = datetime(2026, 12, 1, tzinfo=UTC)
    moved = rng.random(customers) < 0.1
    _copy(
        connection,
        "COPY tier_movement (tenant, customer_id, from_tier, to_tier, reason, policy_version,"
        " month, run_id, moved_at) FROM STDIN",
        (
            (
                TENANT,
                customer_id(i),
                None,
                TIERS[tier[i]],
                "initial",
                "bench",
                MONTHS[0],
                "b0",
                start,
            )
            for i in range(customers)
        ),
    )
    # A tenth of the book moved later, a month each: the pyramid's movements over time.
    _copy(
        connection,
        "COPY tier_movement (tenant, customer_id, from_tier, to_tier, reason, policy_version,"
        " month, run_id, moved_at) FROM STDIN",
        (
            (
                TENANT,
                customer_id(i),
                TIERS[tier[i]],
                TIERS[min(tier[i] + 1, 4)] if i % 2 else TIERS[max(tier[i] - 1, 0)],
                "upgrade" if i % 2 else "downgrade",
                "bench",
                MONTHS[1 + i % 10],
                f"b{1 + i % 10}",
                start,
            )
            for i in np.flatnonzero(moved).tolist()
        ),
    )
    _copy(
        connection,
        "COPY customer_month_latest (tenant, customer_id, month, kind, key, occurred_at, number)"
        " FROM STDIN",
        (
            (TENANT, customer_id(i), 24322, "balance", "savings", start, float(balance[i]))
            for i in range(customers)
        ),
    )
    # Churn scores, oldest first (ids in time order); the newest 10,000 carry their features
    # (what drift monitoring reads), the rest an empty document (the bench keeps the load small).
    order = np.argsort(-scored, kind="stable")
    featured = set(order[-10_000:].tolist())
    _copy(
        connection,
        "COPY score (request_id, task, customer_id, model_name, model_version, outputs, reasons,"
        " features, created_at, tenant, source, stage, probability, band) FROM STDIN",
        (
            (
                "bench",
                "churn",
                customer_id(i),
                "churn",
                churn_version,
                json.dumps({"churn_probability": float(churn[i])}),
                json.dumps([{"feature": "savings_balance", "contribution": -0.1}]),
                _features(rng, names) if i in featured else "{}",
                start - timedelta(days=int(scored[i])),
                TENANT,
                "batch",
                "existing",
                float(churn[i]),
                "low",
            )
            for i in order.tolist()
        ),
    )
    prospects = range(0, customers, 4)
    value = rng.gamma(2.0, 60.0, customers)
    income = rng.gamma(2.0, 25_000.0, customers)
    conversion = rng.beta(2, 8, customers)
    _copy(
        connection,
        "COPY score (request_id, task, customer_id, model_name, model_version, outputs, reasons,"
        " features, created_at, tenant, source, stage, probability) FROM STDIN",
        (
            (
                "bench",
                "prospect",
                customer_id(i),
                "prospect",
                "1",
                json.dumps(
                    {
                        "conversion_probability": float(conversion[i]),
                        "value_if_converted": float(value[i]),
                        "expected_value": float(conversion[i] * value[i]),
                    }
                ),
                "[]",
                json.dumps({"income": float(income[i])}),
                start - timedelta(days=3),
                TENANT,
                "batch",
                "prospect",
                float(conversion[i]),
            )
            for i in prospects
        ),
    )
    _copy(
        connection,
        "COPY customer_event (tenant, event_id, customer_id, type, occurred_at, received_at,"
        " request_id, payload) FROM STDIN",
        _events(customers, start),
    )


def _events(customers: int, start: datetime) -> Iterator[tuple[Any, ...]]:
    for i in range(customers):
        customer = customer_id(i)
        profile = {"branch": branch_of(i), "relationship_manager": manager_of(i)}
        yield (
            TENANT,
            f"{customer}-p",
            customer,
            "customer_profile",
            start - timedelta(days=400),
            start,
            "bench",
            json.dumps(profile),
        )
        for k in (1, 2):
            payload = {"amount": 25.0 * k, "direction": "debit", "channel": "card"}
            yield (
                TENANT,
                f"{customer}-t{k}",
                customer,
                "transaction",
                start - timedelta(days=10 * k),
                start,
                "bench",
                json.dumps(payload),
            )


def _casework(connection: psycopg.Connection[Any], customers: int) -> None:
    """Open churn alerts (routed to their managers), complaints, audit lines, outcomes."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    step = max(customers // ALERTS, 1)
    alerted = list(range(0, customers, step))[:ALERTS]
    _copy(
        connection,
        "COPY alert (customer_id, status, risk_band, probability, peak_probability,"
        " above_threshold, reasons, actions, model_version, score_count, opened_request_id,"
        " last_request_id, opened_at, last_scored_at, updated_at, owner, acknowledged_at, tenant,"
        " reason) FROM STDIN",
        (
            (
                customer_id(i),
                "acknowledged" if n % 10 == 0 else "open",
                "high",
                0.8,
                0.8,
                True,
                "[]",
                "[]",
                "1",
                1,
                "bench",
                "bench",
                start - timedelta(minutes=n),
                start,
                start,
                f"staff:{manager_of(i)}" if n % 10 == 0 else None,
                start if n % 10 == 0 else None,
                TENANT,
                "churn",
            )
            for n, i in enumerate(alerted)
        ),
    )
    connection.execute(
        "INSERT INTO alert_assignment (tenant, alert_id, customer_id, reason, status, branch,"
        " assignee_id, routed_via, assigned_at, accept_by, updated_at)"
        " SELECT tenant, id, customer_id, reason, 'assigned',"
        " 'b' || lpad(((substr(customer_id, 4)::int) %% %s)::text, 2, '0'),"
        " 'rm' || lpad(((substr(customer_id, 4)::int) %% %s)::text, 3, '0'),"
        " 'relationship_manager', opened_at, opened_at + interval '1 day', opened_at"
        " FROM alert WHERE tenant = %s",
        (BRANCHES, MANAGERS, TENANT),
    )
    _copy(
        connection,
        "COPY complaint (tenant, customer_id, channel, category, product, severity,"
        " amount_at_stake, description, implicated, status, branch, received_by, owner_id,"
        " escalation_level, profile, received_at, clock_started_at, due_at, ceiling_at,"
        " milestones, complex_case, extensions, paused_s, updated_at) FROM STDIN",
        (
            (
                TENANT,
                customer_id(i * 97 % customers),
                "branch",
                "fees",
                "current_account",
                "low",
                50.0,
                "bench complaint",
                "[]",
                "closed" if n % 3 == 0 else "received",
                branch_of(n),
                manager_of(n),
                manager_of(n),
                0,
                "uk_disp",
                start - timedelta(hours=n),
                start - timedelta(hours=n),
                start + timedelta(days=56) - timedelta(hours=n),
                start + timedelta(days=90) - timedelta(hours=n),
                "{}",
                False,
                0,
                0.0,
                start,
            )
            for n, i in enumerate(range(COMPLAINTS))
        ),
    )
    _copy(
        connection,
        "COPY audit_record (at, tenant, client, auth, method, route, status, outcome,"
        " request_id, details) FROM STDIN",
        (
            (
                start - timedelta(seconds=AUDIT_LINES - n),
                TENANT,
                f"staff:{manager_of(n)}",
                "console",
                "GET",
                "/console/customers/{customer_id}",
                200,
                "ok",
                f"r{n}",
                json.dumps({"customer": customer_id(n % customers), "view": "customer"}),
            )
            for n in range(AUDIT_LINES)
        ),
    )
    _copy(
        connection,
        "COPY model_outcome (tenant, task, customer_id, occurred_at, observed_through, source,"
        " imported_at) FROM STDIN",
        (
            (TENANT, "churn", customer_id(i), start - timedelta(days=20), start, "bench", start)
            for i in range(0, customers, 20)
        ),
    )


def _campaign(connection: psycopg.Connection[Any], customers: int) -> None:
    """A launched retention campaign ranked by churn score: 20,000 members (5% held out), every
    treated member contacted, 8% of the treated and 5% of the held out accepting."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    launched = start - timedelta(days=30)
    inserted = connection.execute(
        "INSERT INTO campaign (tenant, code, name, action, channel, purpose, target,"
        " priority_task, starts_at, ends_at, period, control_rate, volume_cap, budget,"
        " cost_per_contact, baseline_rate, minimum_lift, status, created_by, created_at,"
        " launched_at) VALUES (%s, %s, 'Bench retention', 'retention_call', 'phone',"
        " 'retention', '{}', 'churn', %s, NULL, '2026-11', 0.05, NULL, NULL, 2.5, 0.05, 0.01,"
        " 'launched', 'staff:sup00', %s, %s) RETURNING id",
        (TENANT, CAMPAIGN_CODE, launched, launched, launched),
    ).fetchone()
    assert inserted is not None
    campaign_id = inserted[0]
    rng = np.random.default_rng(23)
    step = max(customers // CAMPAIGN_MEMBERS, 1)
    members = list(range(0, customers, step))[:CAMPAIGN_MEMBERS]
    scores = np.sort(rng.beta(2, 5, len(members)))[::-1]
    held = [n % 20 == 0 for n in range(len(members))]
    _copy(
        connection,
        "COPY campaign_member (campaign_id, customer_id, arm, rank, score) FROM STDIN",
        (
            (
                campaign_id,
                customer_id(i),
                "control" if held[n] else "treatment",
                n + 1,
                float(scores[n]),
            )
            for n, i in enumerate(members)
        ),
    )
    accepted = rng.random(len(members)) < np.where(held, 0.05, 0.08)

    def responses() -> Iterator[tuple[Any, ...]]:
        for n, i in enumerate(members):
            said = (["contacted"] if not held[n] else []) + (["accepted"] if accepted[n] else [])
            for k, response in enumerate(said):
                yield (
                    TENANT,
                    f"{customer_id(i)}-c{k}",
                    customer_id(i),
                    "campaign_response",
                    launched + timedelta(days=1 + k, minutes=n % 1000),
                    launched + timedelta(days=1 + k),
                    "bench",
                    json.dumps({"campaign_id": CAMPAIGN_CODE, "response": response}),
                )

    _copy(
        connection,
        "COPY customer_event (tenant, event_id, customer_id, type, occurred_at, received_at,"
        " request_id, payload) FROM STDIN",
        responses(),
    )


def campaign_of(url: str) -> int:
    """The bench campaign's id."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection:
        found = connection.execute(
            "SELECT id FROM campaign WHERE tenant = %s AND code = %s", (TENANT, CAMPAIGN_CODE)
        ).fetchone()
    if found is None:
        raise SystemExit("the bench campaign is missing: drop the database and load again")
    return int(found[0])


def load(url: str, customers: int, churn_version: str, names: list[str]) -> float:
    """Load the book once (kept between runs); seconds taken (0 when already there)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection:
        have = connection.execute(
            "SELECT count(*) FROM tier_movement WHERE tenant = %s AND reason = 'initial'",
            (TENANT,),
        ).fetchone()
        if have is not None and have[0] == customers:
            return 0.0
        started = time.perf_counter()
        for table in ("campaign_report", "campaign_member"):
            connection.execute(
                f"DELETE FROM {table} WHERE campaign_id IN"
                " (SELECT id FROM campaign WHERE tenant = %s)",
                (TENANT,),
            )
        for table in (
            "campaign",
            "alert_assignment",
            "alert",
            "complaint",
            "audit_record",
            "model_outcome",
            "customer_event",
            "score",
            "customer_month_latest",
            "tier_movement",
            "prospect",
            "tier_total",
            "tier_movement_month",
        ):
            connection.execute(f"DELETE FROM {table} WHERE tenant = %s", (TENANT,))
        _book(connection, customers, churn_version, names)
        _casework(connection, customers)
        # What storing each prospect score writes beside it (app/value/prospect_book.py).
        connection.execute(PROSPECTS_FROM_SCORES, (TENANT,))
        _campaign(connection, customers)
        connection.commit()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def store_model_reports(app: Any, churn_version: str) -> None:
    """The champion's backtest on the tenant's outcomes (what an outcome import stores; the
    bench's outcomes are copied in, not imported) and a drift run (what ``cvm monitor``
    stores), unless stored and current; each timed once."""
    scope = TenantScope(TENANT)
    with app.state.session_factory() as session:
        stored = latest_backtest(session, task=Task.CHURN, version=churn_version, tenant=scope)
        if stored is None or stored.stale:
            started = time.perf_counter()
            store_backtest(
                session,
                task=Task.CHURN,
                version=churn_version,
                tenant=scope,
                resamples=IMPORT_RESAMPLES,
                now=datetime.now(UTC),
            )
            print(f"backtest computed and stored once: {time.perf_counter() - started:.1f} s")
        if latest_run(session, task=Task.CHURN, version=churn_version, tenant=scope) is None:
            started = time.perf_counter()
            report = monitor(
                session,
                task=Task.CHURN,
                version=churn_version,
                since=None,
                limit=5000,
                tenant=scope,
            )
            record_run(session, report=report, tenant=scope, now=datetime.now(UTC))
            print(f"drift run computed and stored once: {time.perf_counter() - started:.1f} s")


def add_staff(app: Any) -> None:
    """The bench's staff members, each with the bench password."""
    now = datetime.now(UTC)
    rows = [
        StaffRow(
            staff_id,
            StaffRequest.model_validate(
                {
                    "name": f"Bench {staff_id}",
                    "email": f"{staff_id}@bank.example",
                    "roles": roles,
                    "branch": branch,
                    "max_severity": "high",
                    "max_amount": 10000,
                    "principal": f"staff:{staff_id}",
                }
            ),
        )
        for staff_id, (roles, branch) in STAFF.items()
    ]
    with app.state.session_factory() as session:
        store_staff(session, tenant=TENANT, rows=rows, now=now)
        for staff_id in STAFF:
            set_password(
                session,
                passwords=Passwords.from_settings(app.state.settings),
                tenant=TENANT,
                staff_id=staff_id,
                password=PASSWORD,
                now=now,
            )


def logged_in(app: Any, staff_id: str) -> TestClient:
    """A browser session of ``staff_id``, logged in through the login form."""
    client = TestClient(app, base_url="https://testserver")
    page = client.get("/console/login").text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/console/login",
        data={"csrf_token": token, "tenant": TENANT, "staff_id": staff_id, "password": PASSWORD},
        follow_redirects=False,
    )
    if response.status_code != 303:
        raise SystemExit(f"login of {staff_id} failed: {response.status_code}")
    return client


def timed(get: Callable[[int], Any], requests: int) -> list[float]:
    """Milliseconds of ``requests`` requests (after one warm-up, whose time is printed: a
    stored report computed on first view shows there); each must answer 200."""
    started = time.perf_counter()
    get(0)
    print(f"\nwarm-up request: {(time.perf_counter() - started) * 1000:.0f} ms", end="")
    spent = []
    for n in range(requests):
        started = time.perf_counter()
        response = get(n)
        spent.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{response.request.url}: {response.status_code}")
    return spent


class StatementCounter:
    """The console's pages on an engine of their own, counting the statements they send."""

    def __init__(self, app: Any, url: str) -> None:
        (mounted,) = [r.app for r in app.routes if getattr(r, "path", "") == "/console"]
        self.engine = create_db_engine(url)
        self.sent = 0
        event.listen(self.engine, "before_cursor_execute", self._count)
        console = mounted.state.console
        mounted.state.console = replace(
            console, session_factory=create_session_factory(self.engine)
        )

    def _count(self, *_: Any) -> None:
        self.sent += 1

    def of(self, get: Callable[[int], Any]) -> int:
        """The statements one request sends."""
        self.sent = 0
        get(0)
        return self.sent


def report(name: str, spent: list[float], statements: int) -> bool:
    """Print one page's table; whether its p95 is within the budget."""
    ordered = sorted(spent)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    ok = p95 <= BUDGET_MS
    print(f"\n{name}  ({len(spent)} requests)")
    print("| p50 ms | p95 ms | max ms | <= 300 ms | statements a request |")
    print("|---:|---:|---:|:---:|---:|")
    print(
        f"| {statistics.median(spent):.0f} | {p95:.0f} | {max(spent):.0f} |"
        f" {'yes' if ok else 'NO'} | {statements} |"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="page names to time (default: every page)")
    parser.add_argument(
        "--database", default=DATABASE, help=f"the kept bench database (default {DATABASE})"
    )
    args = parser.parse_args()
    url = bench_url(args.database)
    settings = Settings(
        database_url=url,
        models_dir=ROOT / "models",
        log_level="WARNING",
        auth_enabled=True,
        console_argon2_time_cost=1,
        console_argon2_memory_kib=8,
    )
    app = create_app(settings)
    with TestClient(app, base_url="https://testserver"):  # the lifespan: models registered
        with app.state.session_factory() as session:
            churn_version = champions(session)[Task.CHURN]
        manifest = json.loads(
            (ROOT / "models" / "churn" / churn_version / "manifest.json").read_text()
        )
        names = list(manifest["extras"]["monitoring_reference"]["features"])
        seconds = load(url, args.customers, churn_version, names)
        print(f"book: {args.customers:,} customers in {args.database} (loaded in {seconds:.0f} s)")
        if seconds:  # what `cvm tiers apply` stores after writing the tiers of record
            with app.state.session_factory() as session:
                store_pyramid(session, tenant=TENANT, now=datetime.now(UTC))
                session.commit()
        campaign = cache(partial(campaign_of, url))  # asked only when its page is timed
        if not args.only or any(word in "model monitoring" for word in args.only):
            store_model_reports(app, churn_version)
        add_staff(app)
        counter = StatementCounter(app, url)
        rm, supervisor = logged_in(app, "rm000"), logged_in(app, "sup00")
        owner, admin = logged_in(app, "owner"), logged_in(app, "admin")
        # Customers of rm000 (every 500th), a different one each request.
        mine = [customer_id(i) for i in range(0, args.customers, MANAGERS)]
        pages: dict[str, Callable[[int], Any]] = {
            "my queue (relationship manager)": lambda n: rm.get("/console/queue"),
            "my queue (branch supervisor)": lambda n: supervisor.get("/console/queue"),
            "customer 360 (relationship manager)": lambda n: rm.get(
                f"/console/customers/{mine[(n * 37) % len(mine)]}"
            ),
            "value pyramid (branch supervisor)": lambda n: supervisor.get("/console/pyramid"),
            "prospects, every segment, page 1": lambda n: supervisor.get("/console/prospects"),
            "prospects, one segment, page 5": lambda n: supervisor.get(
                "/console/prospects?segment=premium.wealthy&page=5"
            ),
            "model monitoring (model owner)": lambda n: owner.get("/console/models"),
            "campaign report, 20,000 members (branch supervisor)": lambda n: supervisor.get(
                f"/console/campaigns/{campaign()}"
            ),
            "audit log (administrator)": lambda n: admin.get("/console/audit"),
            "audit log, one actor, page 10": lambda n: admin.get(
                "/console/audit?actor=staff:rm007&page=10"
            ),
        }
        missed = []
        for name, get in pages.items():
            if args.only and not any(word in name for word in args.only):
                continue
            if not report(name, timed(get, args.requests), counter.of(get)):
                missed.append(name)
        print("\nover 300 ms at p95:", ", ".join(missed) if missed else "none")
        counter.engine.dispose()


if __name__ == "__main__":
    main()
