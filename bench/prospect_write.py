"""What storing a prospect's row costs the score write: ``insert_scores`` (the path of every
score) of 5,000 prospect-stage prospect scores, which also upsert their rows of ``prospect``
(app/value/prospect_book.py), against 5,000 churn scores, alternating in one run on a
throw-away PostgreSQL database; medians after warm-up rounds, and their ratio.

Usage::

    .venv/bin/python bench/prospect_write.py [--rows 5000 --rounds 24 --warm-up 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intake_bench import DEFAULT_POSTGRES_SERVER, bench_database  # noqa: E402  (this folder)

from app.db.session import create_db_engine  # noqa: E402
from app.scoring.repository import ScoreRow, insert_scores  # noqa: E402

T0 = datetime(2026, 12, 1, tzinfo=UTC)
KINDS = {"churn": "existing", "prospect": "prospect"}  # task: stage


def score_rows(task: str, rows: int, round_no: int) -> list[ScoreRow]:
    """One call's rows of ``task``, every customer new (a batch file's slice)."""
    outputs = {"churn": {"churn_probability": 0.2}}
    return [
        ScoreRow(
            request_id=f"r{round_no}",
            task=task,
            customer_id=f"C{round_no}-{i}",
            model_name=task,
            model_version="1",
            outputs=outputs.get(task)
            or {
                "conversion_probability": 0.2,
                "value_if_converted": 100.0 + i,
                "expected_value": 20.0 + i / 5,
            },
            reasons=[],
            features={"income": 50_000.0 + i},
            created_at=T0 + timedelta(seconds=round_no),
            tenant="bench",
            source="batch",
            stage=KINDS[task],
            probability=0.2,
            band=None,
            alert=False,
        )
        for i in range(rows)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--warm-up", type=int, default=4)
    parser.add_argument("--server", default=DEFAULT_POSTGRES_SERVER)
    args = parser.parse_args()
    spent: dict[str, list[float]] = {task: [] for task in KINDS}
    with bench_database(args.server) as url:
        engine = create_db_engine(url)
        try:
            for round_no in range(args.rounds):
                for task in KINDS:
                    rows = score_rows(task, args.rows, round_no)
                    started = time.perf_counter()
                    with engine.begin() as connection:
                        insert_scores(connection, rows=rows)
                    spent[task].append(time.perf_counter() - started)
        finally:
            engine.dispose()
    medians = {task: statistics.median(times[args.warm_up :]) for task, times in spent.items()}
    for task, median in medians.items():
        print(f"{task}: {median * 1000:.0f} ms per {args.rows:,} rows (median)")
    print(f"prospect / churn: {medians['prospect'] / medians['churn']:.2f}")


if __name__ == "__main__":
    main()
