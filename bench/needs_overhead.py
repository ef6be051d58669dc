"""What the needs warning costs the intake: one 1,000-event call stored by ``record_events``
with the default need rules on, against the same kind of call with every rule off, on
PostgreSQL, alternating, in this process on one connection (no HTTP: the difference is the
rules' reads and the alerts they open).

The customers have a trail already (``--history-months`` months of transactions, each with a
salary and one large credit a month, a term deposit maturing soon), so the rules' reads find
rows, as they would on a live book; each timed call brings every customer a month's events of
the intake bench's mix (bench/intake_bench.py) with every id new.

Usage::

    .venv/bin/python bench/needs_overhead.py                 # 250 customers, 3 months, 20 pairs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake_bench import DEFAULT_POSTGRES_SERVER, bench_database  # noqa: E402  (this folder)

from app.customers.needs import DEFAULT_NEEDS, NO_NEEDS, NeedRules  # noqa: E402
from app.customers.service import IntakeRules, parse_events, record_events  # noqa: E402
from app.db.session import create_db_engine, create_session_factory  # noqa: E402

RULES = IntakeRules(future_tolerance_s=300, max_events=10_000)
START = datetime(2026, 1, 1, tzinfo=UTC)


def history(customers: int, months: int) -> list[list[dict[str, Any]]]:
    """Calls of past events: per customer and month a salary, a large credit, 30 card
    debits; once, a term deposit maturing in the month after the history."""
    calls: list[list[dict[str, Any]]] = []
    for month in range(months):
        events: list[dict[str, Any]] = []
        for c in range(customers):
            customer = f"N{c:07d}"
            at = START + timedelta(days=30 * month)

            def tx(
                n: int,
                amount: float,
                direction: str,
                category: str,
                *,
                _at: datetime = at,
                _customer: str = customer,
                _month: int = month,
            ) -> dict[str, Any]:
                return {
                    "event_id": f"h{_month}-{_customer}-{n}",
                    "customer_id": _customer,
                    "occurred_at": (_at + timedelta(hours=n)).isoformat(),
                    "type": "transaction",
                    "amount": amount,
                    "direction": direction,
                    "channel": "transfer",
                    "category": category,
                }

            events.append(tx(0, 2_400.0, "credit", "salary"))
            events.append(tx(1, 30_000.0, "credit", "inheritance"))
            events.extend(tx(2 + n, 25.0 + n, "debit", "groceries") for n in range(30))
            if month == 0:
                events.append(
                    {
                        "event_id": f"td-{customer}",
                        "customer_id": customer,
                        "occurred_at": at.isoformat(),
                        "type": "account_opened",
                        "product": "term_deposit",
                        "maturity_date": (START + timedelta(days=30 * months + 10))
                        .date()
                        .isoformat(),
                    }
                )
        calls.extend(events[i : i + 1_000] for i in range(0, len(events), 1_000))
    return calls


def timed_call(customers: int, months: int, call: int) -> list[dict[str, Any]]:
    """1,000 events for the customers in the month after the history, every id new."""
    at = START + timedelta(days=30 * months)
    events = []
    for i in range(1_000):
        customer = f"N{i % customers:07d}"
        common = {
            "event_id": f"t{call}-{i}",
            "customer_id": customer,
            "occurred_at": (at + timedelta(minutes=i + call)).isoformat(),
        }
        if i % 10 < 6:
            direction = "debit" if i % 10 else "credit"
            events.append(
                {
                    **common,
                    "type": "transaction",
                    "amount": 12.5 + i,
                    "direction": direction,
                    "channel": "card",
                }
            )
        else:
            events.append({**common, "type": "digital_session", "platform": "mobile_app"})
    return events


def store(factory: Any, events: list[dict[str, Any]], needs: NeedRules, request_id: str) -> float:
    """Seconds to parse nothing (done before) and store one call."""
    now = datetime.now(UTC)
    parsed = parse_events(orjson.dumps({"events": events}), rules=RULES, now=now)
    started = time.perf_counter()
    with factory() as session:
        record_events(
            session,
            events=parsed,
            tenant="bench",
            request_id=request_id,
            received_at=now,
            pseudonymizer=None,
            needs=needs,
        )
    return time.perf_counter() - started


def main() -> None:
    """Load the history, then alternate calls with the rules on and off; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES_SERVER)
    parser.add_argument("--customers", type=int, default=250)
    parser.add_argument("--history-months", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--tag", default="", help="a word for the throw-away database's name")
    args = parser.parse_args()
    with bench_database(args.postgres_server, args.tag) as url:
        engine = create_db_engine(url)
        factory = create_session_factory(engine)
        for n, events in enumerate(history(args.customers, args.history_months)):
            store(factory, events, NO_NEEDS, f"history-{n}")
        on: list[float] = []
        off: list[float] = []
        for pair in range(args.pairs):
            on.append(
                store(
                    factory,
                    timed_call(args.customers, args.history_months, 2 * pair),
                    DEFAULT_NEEDS,
                    f"on-{pair}",
                )
            )
            off.append(
                store(
                    factory,
                    timed_call(args.customers, args.history_months, 2 * pair + 1),
                    NO_NEEDS,
                    f"off-{pair}",
                )
            )
        with engine.connect() as connection:
            opened = connection.execute(
                text("SELECT reason, count(*) FROM alert GROUP BY reason ORDER BY reason")
            ).all()
        engine.dispose()
    med_on, med_off = statistics.median(on) * 1e3, statistics.median(off) * 1e3
    print(
        f"{args.customers} customers, {args.history_months} months of history, {args.pairs} pairs"
    )
    print(f"rules on : median {med_on:.1f} ms per 1,000-event call ({1e6 / med_on:,.0f} events/s)")
    print(
        f"rules off: median {med_off:.1f} ms per 1,000-event call ({1e6 / med_off:,.0f} events/s)"
    )
    print(f"ratio on/off: {med_on / med_off:.2f}; need alerts opened: {dict(opened)}")


if __name__ == "__main__":
    main()
