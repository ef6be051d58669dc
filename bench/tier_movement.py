"""The tier-movement model on a synthetic book, against persistence: one seeded run.

Generates a book with ``cvm synth``'s generator, trains ``cvm train tier-movement`` on it (search,
early stopping and refit inside the training months; the test month scored once) and prints a
markdown row: accuracy, log loss and macro-F1 of the model and of persistence, with bootstrap
95% intervals. SYNTHETIC data: the figures describe the simulator, not a bank.

Usage::

    OMP_WAIT_POLICY=passive .venv/bin/python bench/tier_movement.py --customers 20000 --months 18
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

from app.training.movement import train_tier_movement  # noqa: E402
from app.training.synth import write_book  # noqa: E402
from app.training.tuning import TuningOptions  # noqa: E402


def _ci(metric: dict[str, Any]) -> str:
    return f"{metric['value']:.4f} [{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]"


def main(argv: list[str] | None = None) -> int:
    """Generate, train, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("var/tier-movement"))
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--trials", type=int, default=TuningOptions().trials)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    book = write_book(
        out_dir=args.out / "book", customers=args.customers, months=args.months, seed=args.seed
    )
    manifest = train_tier_movement(
        book_path=book, out_dir=args.out / "model" / "1", options=TuningOptions(trials=args.trials)
    )
    test = manifest.metrics["test"]
    persistence = test["persistence"]
    down, stay, up = test["class_counts"]
    print(
        "| data | test rows (down / stay / up) | accuracy | persistence accuracy "
        "| accuracy gain | log loss | persistence log loss (movement rates) "
        "| macro-F1 (persistence) |\n|---|---|---|---|---|---|---|---|\n"
        f"| SYNTHETIC book, {args.customers:,} customers x {args.months} months (seed "
        f"{args.seed}) | {test['rows']:,} ({down} / {stay:,} / {up}) | {_ci(test['accuracy'])} "
        f"| {_ci(persistence['accuracy'])} | {_ci(test['accuracy_gain_over_persistence'])} "
        f"| {_ci(test['log_loss'])} | {_ci(persistence['log_loss'])} "
        f"| {test['macro_f1']:.3f} ({persistence['macro_f1']:.3f}) |"
    )
    print(f"\n{time.perf_counter() - started:.0f} s; search: {manifest.extras['tuning']['trials']}")
    (args.out / "results.json").write_text(json.dumps(test, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
