"""Batch scoring against raw LightGBM, measured in one run (issue 6).

Builds (or reuses under var/bench/batch/) churn feature files of 1M and 4M customers: the
valid churn rows of a snapshot of the seeded synthetic book, replicated with new ids. Then it
measures, on the same machine and in the same run:

* raw ``Booster.predict`` rows/s on the 1M matrix already in memory, with 2 threads;
* the whole ``cvm score`` command (a subprocess: start-up, read, validate, predict, write
  Parquet, no reasons) rows/s on that file, and the ratio to raw predict (target >= 0.70);
* the command's peak RSS for 1M and 4M rows (target: within 20% of each other);
* the compiled backend (lleaves): compile time, raw compiled predict rows/s, and the command
  with ``--backend compiled`` against raw LightGBM (target >= 2x).

Run: ``.venv/bin/python bench/batch_bench.py`` (``make bench-batch``). Figures go to stdout and
var/bench/batch/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.ml.arrow import encode_batch  # noqa: E402
from app.ml.model import ScoringModel  # noqa: E402

WORK = ROOT / "var" / "bench" / "batch"
BOOK = ROOT / "var" / "book"
MODEL = ROOT / "models" / "churn" / "1"
CVM = [str(Path(sys.executable).parent / "cvm")]
THREADS = 2
ROW_GROUP_ROWS = 131_072


def run(command: list[str], **env: str) -> tuple[float, int, float | None]:
    """Run a command under /usr/bin/time: wall seconds, peak RSS in bytes, and the rows/s the
    command reports for its own scoring (after start-up and model load), if it does."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        # /usr/bin/time forks the command from a small process: the child's peak RSS is its
        # own, not inherited from this (large) benchmark process.
        result = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", timing.name, *command],
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "400", **env},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed:\n{result.stdout}\n{result.stderr}")
        seconds, kib = timing.read().split()[-2:]
    reported = re.search(r"([\d,]+) rows/s", " ".join(result.stderr.split()))
    inner = float(reported.group(1).replace(",", "")) if reported else None
    return float(seconds), int(kib) * 1024, inner


def snapshot() -> Path:
    """A snapshot of the seeded book's last month (generated on first use)."""
    path = WORK / "snapshot.parquet"
    if path.exists():
        return path
    if not (BOOK / "book.parquet").exists():
        run([*CVM, "synth", "--customers", "30000", "--months", "18", "--out", str(BOOK)])
    run([*CVM, "snapshot", "--book", str(BOOK), "--out", str(path)])
    return path


def feature_file(rows: int, model: ScoringModel) -> Path:
    """``rows`` valid churn rows: the snapshot's valid rows replicated under new ids."""
    path = WORK / f"churn_{rows // 1_000_000}m.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    table = pq.read_table(snapshot())
    _, problems = encode_batch(model.schema, table.combine_chunks().to_batches()[0])
    table = table.filter(pa.array([p is None for p in problems]))
    WORK.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, table.schema) as writer:
        written = 0
        while written < rows:
            take = min(ROW_GROUP_ROWS, rows - written)
            picks = np.arange(written, written + take) % table.num_rows
            part = table.take(pa.array(picks))
            ids = pc.binary_join_element_wise(
                "B", pa.array(np.arange(written, written + take)).cast(pa.string()), ""
            ).cast(table.schema.field("customer_id").type)
            part = part.set_column(part.schema.get_field_index("customer_id"), "customer_id", ids)
            writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
            written += take
    partial.replace(path)
    return path


def best_of(repeats: int, action: Any) -> float:
    """The fastest of ``repeats`` timed calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def matrix_of(path: Path, model: ScoringModel) -> np.ndarray:
    """The file's feature matrix, encoded once (what raw predict is given)."""
    table = pq.read_table(path, columns=[f.column for f in model.schema.features])
    matrix, _ = encode_batch(model.schema, table.combine_chunks().to_batches()[0])
    return matrix


def score_command(input_path: Path, output: Path, backend: str) -> list[str]:
    """The ``cvm score`` command measured."""
    return [
        *CVM,
        "score",
        "churn",
        "--model",
        str(MODEL),
        "--input",
        str(input_path),
        "--output",
        str(output),
        "--reasons",
        "0",
        "--threads",
        str(THREADS),
        "--backend",
        backend,
    ]


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-compiled", action="store_true")
    args = parser.parse_args()
    model = ScoringModel.load(MODEL, threads=THREADS)
    small = feature_file(args.rows, model)
    big = feature_file(args.big_rows, model)
    matrix = matrix_of(small, model)
    booster: lgb.Booster = model.booster
    booster.predict(matrix[:1000], num_threads=THREADS)
    raw_seconds = best_of(args.repeats, lambda: booster.predict(matrix, num_threads=THREADS))
    raw_rate = args.rows / raw_seconds
    results: dict[str, Any] = {
        "rows": args.rows,
        "trees": booster.num_trees(),
        "threads": THREADS,
        "raw_lightgbm_rows_per_s": round(raw_rate),
    }
    print(f"raw Booster.predict, {THREADS} threads: {raw_rate:,.0f} rows/s")
    with tempfile.TemporaryDirectory(prefix="cvm-bench-") as folder:
        out = Path(folder)
        env = {"CVM_COMPILED_DIR": str(WORK / "compiled")}
        timings = [
            run(score_command(small, out / "small.parquet", "lightgbm"), **env)
            for _ in range(args.repeats)
        ]
        seconds = min(t[0] for t in timings)
        rate = args.rows / seconds
        inner = max(t[2] or 0.0 for t in timings)
        results["command_rows_per_s"] = round(rate)
        results["command_ratio_to_raw"] = round(rate / raw_rate, 3)
        results["scoring_rows_per_s_reported_by_command"] = round(inner)
        results["scoring_ratio_to_raw"] = round(inner / raw_rate, 3)
        print(f"cvm score (whole command): {rate:,.0f} rows/s = {rate / raw_rate:.2f}x raw")
        print(f"  its scoring after start-up: {inner:,.0f} rows/s = {inner / raw_rate:.2f}x raw")
        big_seconds, rss_big, _ = run(score_command(big, out / "big.parquet", "lightgbm"), **env)
        rss_small = max(t[1] for t in timings)
        results["peak_rss_mib"] = {
            str(args.rows): round(rss_small / 2**20),
            str(args.big_rows): round(rss_big / 2**20),
        }
        results["peak_rss_ratio"] = round(rss_big / rss_small, 3)
        results["command_rows_per_s_big"] = round(args.big_rows / big_seconds)
        results["command_ratio_to_raw_big"] = round(args.big_rows / big_seconds / raw_rate, 3)
        print(
            f"peak RSS: {rss_small / 2**20:,.0f} MiB for {args.rows:,} rows, "
            f"{rss_big / 2**20:,.0f} MiB for {args.big_rows:,} ({rss_big / rss_small:.2f}x)"
        )
        print(f"cvm score on {args.big_rows:,} rows: {args.big_rows / big_seconds:,.0f} rows/s")
        if not args.no_compiled:
            results.update(compiled_figures(model, matrix, raw_rate, small, out, env, args))
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def compiled_figures(
    model: ScoringModel,
    matrix: np.ndarray,
    raw_rate: float,
    small: Path,
    out: Path,
    env: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Compile time, compiled predict and the compiled command against raw LightGBM."""
    from app.ml.compiled import compile_library, library_path, load_library

    model_file = MODEL / model.manifest.model_file
    with tempfile.TemporaryDirectory(prefix="cvm-compile-") as scratch:
        compile_seconds = compile_library(model_file, Path(scratch) / "model.o")
    library = library_path(WORK / "compiled", model, model_file)
    if not library.exists():
        compile_library(model_file, library)
    predictor = load_library(model_file, library)
    predictor.predict(matrix[:1000], threads=THREADS)
    seconds = best_of(args.repeats, lambda: predictor.predict(matrix, threads=THREADS))
    compiled_rate = args.rows / seconds
    difference = float(
        np.max(np.abs(predictor.predict(matrix, threads=THREADS) - model.booster.predict(matrix)))
    )
    timings = [
        run(score_command(small, out / "compiled.parquet", "compiled"), **env)
        for _ in range(args.repeats)
    ]
    command_rate = args.rows / min(t[0] for t in timings)
    inner = max(t[2] or 0.0 for t in timings)
    big = WORK / f"churn_{args.big_rows // 1_000_000}m.parquet"
    big_seconds, _, _ = run(score_command(big, out / "compiled-big.parquet", "compiled"), **env)
    big_rate = args.big_rows / big_seconds
    print(f"compile: {compile_seconds:.1f} s; compiled predict: {compiled_rate:,.0f} rows/s")
    print(
        f"cvm score --backend compiled: {command_rate:,.0f} rows/s = {command_rate / raw_rate:.2f}x"
    )
    print(f"  its scoring after start-up: {inner:,.0f} rows/s = {inner / raw_rate:.2f}x")
    print(f"  on {args.big_rows:,} rows: {big_rate:,.0f} rows/s = {big_rate / raw_rate:.2f}x")
    return {
        "compile_seconds": round(compile_seconds, 1),
        "compiled_predict_rows_per_s": round(compiled_rate),
        "compiled_predict_speedup": round(compiled_rate / raw_rate, 2),
        "compiled_max_abs_difference": difference,
        "compiled_command_rows_per_s": round(command_rate),
        "compiled_command_ratio_to_raw_lightgbm": round(command_rate / raw_rate, 2),
        "compiled_scoring_rows_per_s_reported_by_command": round(inner),
        "compiled_scoring_ratio_to_raw_lightgbm": round(inner / raw_rate, 2),
        "compiled_command_ratio_to_raw_lightgbm_big": round(big_rate / raw_rate, 2),
    }


if __name__ == "__main__":
    main()
