"""Recommendation from a monthly product-ownership panel (the Santander layout), one seeded run.

Generates a synthetic book with ``cvm synth``'s generator, writes its customers' months as a
panel (id, month, a few demographics, one 0/1 column a product: no balances, as in the
Santander data), trains ``cvm train recommendation --data PANEL --time month --product ...``
with the last ``--test-months`` transitions held out, and prints MAP@7 with bootstrap 95%
intervals for all and for new customers against popularity. SYNTHETIC data: the figures
describe the simulator, not a bank.

Usage::

    OMP_WAIT_POLICY=passive .venv/bin/python bench/panel_recommendation.py --customers 100000
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # see bench/real_data.py

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.training.panel import PanelSpec, train_recommendation_panel  # noqa: E402
from app.training.synth import PRODUCTS, read_book, write_book  # noqa: E402
from app.training.tuning import TuningOptions  # noqa: E402

PANEL_COLUMNS = ["customer_id", "month", "age", "income", "occupation", "region", "channel"]


def _ci(metric: dict[str, Any]) -> str:
    interval = metric["map_at_7_interval"]
    return f"{interval['value']:.4f} [{interval['ci_low']:.4f}, {interval['ci_high']:.4f}]"


def main(argv: list[str] | None = None) -> int:
    """Generate, export, train, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("var/panel-recommendation"))
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--test-months", type=int, default=6)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    book_path = write_book(
        out_dir=args.out / "book", customers=args.customers, months=args.months, seed=args.seed
    )
    book = read_book(book_path).to_pandas()
    customers = book[book["lifecycle"].isin(["new", "existing"])]
    flags = {f"has_{p}": p for p in PRODUCTS}
    panel = customers[PANEL_COLUMNS + list(flags)].rename(columns=flags)
    panel[list(PRODUCTS)] = panel[list(PRODUCTS)].astype(int)
    data = args.out / "panel.csv"
    panel.to_csv(data, index=False)
    print(f"panel: {len(panel):,} rows, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    manifest = train_recommendation_panel(
        data_path=data,
        spec=PanelSpec(id_column="customer_id", month_column="month", products=list(PRODUCTS)),
        out_dir=args.out / "model" / "1",
        tuning=TuningOptions(trials=args.trials),
        test_months=args.test_months,
    )
    test = manifest.metrics["test"]
    lines = [
        "| data | customers | customer-months scored (test months) | MAP@7 [95% CI] "
        "| popularity MAP@7 [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for group in ("all_customers", "new_customers"):
        if group not in test:
            continue
        model, popular = test[group], test[f"popularity_baseline_{group}"]
        lines.append(
            f"| SYNTHETIC panel, {args.customers:,} customers x {args.months} months "
            f"(seed {args.seed}) | {group.replace('_', ' ')} | {model['customers']:,} "
            f"({args.test_months}) | {_ci(model)} | {_ci(popular)} |"
        )
    print("\n".join(lines))
    print(f"\n{time.perf_counter() - started:.0f} s; {args.trials} configurations searched")
    (args.out / "results.json").write_text(json.dumps(test, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
