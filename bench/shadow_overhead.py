"""What shadow scoring costs the champion (issue 17, item 2): p99 and rps of churn scoring
with no challenger in shadow and with one scoring every request (share 1.0), in one run.

Starts the real service (one uvicorn worker) on a copy of the bundled models with a second
churn version (a copy of the first, approved as the challenger), and drives
``POST /v1/churn/scores`` (one customer a call) with wrk in interleaved rounds (off, on, off,
on, ...), switching the shadow on and off through the admin endpoint between rounds, so drift
on the machine hits both alike. Reports medians over rounds, the p99 added (target: <= 5%),
and how many shadow pairs were stored and dropped (``cvm_shadow_dropped_total``).

wrk is closed-loop and drives the service at saturation, where every extra CPU-millisecond
shows and stalls hide (coordinated omission). So the same run then sends requests at a fixed
rate (``--rate-share`` of the shadow-off rounds' median rps, or ``--rate``) with the open-loop
generator in ``bench/open_loop.py``, latency measured from each request's intended send time,
again in interleaved rounds off/on: p50 and p99 at a load a real service runs at.

    python bench/shadow_overhead.py --rounds 3 --seconds 10 --rate-share 0.5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2 as httpx  # noqa: E402
import numpy as np  # noqa: E402
from activation_under_load import customer, models_copy  # noqa: E402  (this folder)
from intake_bench import service  # noqa: E402
from open_loop import OpenLoopRun, run_open_loop  # noqa: E402
from serve_bench import Case, Run, counter, run_wrk  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from app.db.migrate import upgrade  # noqa: E402
from app.db.session import create_db_engine  # noqa: E402
from app.scoring.tables import ShadowScore  # noqa: E402
from app.security.api_keys import create_client  # noqa: E402
from tests.db_support import temporary_postgres_database, temporary_sqlite_database  # noqa: E402

BODIES = 200


def switch(admin: httpx.Client, on: bool) -> None:
    """Version 1 in shadow for every request, or no shadow."""
    for _ in range(20):  # SQLite may be busy with the last round's writes: retry
        if on:
            response = admin.post("/v1/models/churn/versions/1/shadow", json={"share": 1.0})
        else:
            response = admin.delete("/v1/models/churn/shadow")
        if response.status_code != 503:
            break
        time.sleep(0.5)
    if response.status_code not in (200, 404):
        raise RuntimeError(f"shadow switch failed: {response.status_code} {response.text}")


def median(runs: list[Run] | list[OpenLoopRun], attr: str) -> float:
    """The median of one figure over rounds."""
    return float(statistics.median(getattr(r, attr) for r in runs))


def _failures(runs: list[OpenLoopRun]) -> str:
    """Failures by status over rounds ("-1": broken connection, "0": never answered)."""
    counts: dict[int, int] = {}
    for run in runs:
        for status, count in run.failures.items():
            counts[status] = counts.get(status, 0) + count
    return "(" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")" if counts else ""


def fixed_rate_report(runs: dict[bool, list[OpenLoopRun]], rate: float, seconds: float) -> str:
    """The open-loop rounds: medians over rounds and every round's p50 / p99."""
    off, on = runs[False], runs[True]
    lines = [
        f"fixed rate {rate:.0f} requests/s (open loop, latency from the intended send time), "
        f"{len(off)} rounds of {seconds:g} s each way, medians over rounds:"
    ]
    for name, group in (("shadow off", off), ("shadow on (share 1.0)", on)):
        rounds = ", ".join(f"{r.p50_ms:.1f}/{r.p99_ms:.1f}" for r in group)
        lines.append(
            f"  {name}: p50 {median(group, 'p50_ms'):.2f} ms, p90 {median(group, 'p90_ms'):.2f}"
            f" ms, p99 {median(group, 'p99_ms'):.2f} ms, max {median(group, 'max_ms'):.1f} ms, "
            f"{median(group, 'achieved_rps'):.0f} rps answered; failed "
            f"{sum(r.failed for r in group)} of {sum(r.sent for r in group)} "
            f"{_failures(group)}; "
            f"rounds p50/p99 ms: {rounds}; client late p99 "
            f"{max(r.client_late_p99_ms for r in group):.1f} ms; connections "
            f"{max(r.connections for r in group)}"
        )
    p99_off, p99_on = median(off, "p99_ms"), median(on, "p99_ms")
    p50_off, p50_on = median(off, "p50_ms"), median(on, "p50_ms")
    lines.append(
        f"  p99 added: {100 * (p99_on / p99_off - 1):+.1f}% (target <= 5%); "
        f"p50 added: {100 * (p50_on / p50_off - 1):+.1f}% (medians over rounds)"
    )
    pooled = {
        shadow: np.percentile([x for r in group for x in r.latencies_ms], [50, 99])
        for shadow, group in runs.items()
    }
    lines.append(
        f"  every round's requests pooled: off p50 {pooled[False][0]:.2f} / p99 "
        f"{pooled[False][1]:.2f} ms, on p50 {pooled[True][0]:.2f} / p99 {pooled[True][1]:.2f} "
        f"ms; p99 added {100 * (pooled[True][1] / pooled[False][1] - 1):+.1f}%, p50 added "
        f"{100 * (pooled[True][0] / pooled[False][0] - 1):+.1f}%"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--rate-share",
        type=float,
        default=0.5,
        help="fixed-rate rounds at this share of the shadow-off wrk rounds' median rps",
    )
    parser.add_argument("--rate", type=float, default=None, help="fixed rate (requests/s)")
    parser.add_argument(
        "--fixed-seconds", type=float, default=None, help="seconds a fixed-rate round"
    )
    args = parser.parse_args()
    fixed_seconds = args.fixed_seconds or args.seconds
    temporary = (
        temporary_postgres_database if args.database == "postgres" else temporary_sqlite_database
    )
    with tempfile.TemporaryDirectory() as folder, temporary() as url:
        models, schema = models_copy(Path(folder))
        bodies = Path(folder) / "churn_single.jsonl"
        bodies.write_text(
            "".join(
                httpx.Request("POST", "/", json={"customers": [customer(schema, n)]})
                .read()
                .decode()
                + "\n"
                for n in range(BODIES)
            )
        )
        upgrade(url)
        engine = create_db_engine(url)
        _, admin_key = create_client(engine, name="admin", scopes=["admin", "models:read"])
        _, caller = create_client(engine, name="caller", scopes=["scores:write"])
        with (
            service(url, workers=1, extra_env={"CVM_MODELS_DIR": str(models)}) as base,
            httpx.Client(base_url=base, headers={"X-API-Key": admin_key}, timeout=30) as admin,
        ):
            # Bootstrapped: 2 (the newest) is the champion, 1 a candidate: approve it.
            approved = admin.post(
                "/v1/admin/models/churn/versions/1/approve", json={"reason": "bench"}
            )
            if approved.status_code != 200:
                raise RuntimeError(f"approval failed: {approved.text}")
            case = Case(
                name="churn",
                url=f"{base}/v1/churn/scores",
                bodies=bodies,
                customers_per_request=1,
                persisted=True,
                api_key=caller,
            )
            log = Path(folder) / "wrk.log"

            def wrk(seconds: float, round_: int) -> Run:
                return run_wrk(
                    case,
                    seconds=seconds,
                    connections=args.connections,
                    threads=2,
                    round_=round_,
                    log=log,
                )

            wrk(2, 0)  # warm-up
            runs: dict[bool, list[Run]] = {False: [], True: []}
            for round_ in range(1, args.rounds + 1):
                for shadow_on in (False, True):
                    switch(admin, shadow_on)
                    runs[shadow_on].append(wrk(args.seconds, round_))
            rate = args.rate or args.rate_share * median(runs[False], "rps")
            headers = {"X-API-Key": caller}
            url = f"{base}/v1/churn/scores"
            switch(admin, False)
            run_open_loop(url, bodies, rate=rate, seconds=2, headers=headers)  # warm-up
            fixed: dict[bool, list[OpenLoopRun]] = {False: [], True: []}
            for _ in range(args.rounds):
                for shadow_on in (False, True):
                    switch(admin, shadow_on)
                    time.sleep(1)  # the last round's shadow queue drains
                    fixed[shadow_on].append(
                        run_open_loop(
                            url, bodies, rate=rate, seconds=fixed_seconds, headers=headers
                        )
                    )
            switch(admin, False)
            time.sleep(2)  # the queue drains
            dropped = counter(admin.get("/metrics").text, "cvm_shadow_dropped_total", task="churn")
        with engine.connect() as connection:
            stored = connection.scalar(select(func.count()).select_from(ShadowScore)) or 0
        engine.dispose()
    off, on = runs[False], runs[True]
    shadowed = sum(r.ok for r in on) + sum(r.ok for r in fixed[True])
    p99_off, p99_on = median(off, "p99_ms"), median(on, "p99_ms")
    rps_off, rps_on = median(off, "rps"), median(on, "rps")
    print(
        f"{args.database}, 1 worker, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds:g} s, medians over rounds:\n"
        f"  shadow off: p99 {p99_off:.2f} ms, p50 {median(off, 'p50_ms'):.2f} ms, "
        f"{rps_off:.0f} rps\n"
        f"  shadow on (share 1.0): p99 {p99_on:.2f} ms, p50 {median(on, 'p50_ms'):.2f} ms, "
        f"{rps_on:.0f} rps\n"
        f"  p99 added: {100 * (p99_on / p99_off - 1):+.1f}% (target <= 5%); "
        f"rps change: {100 * (rps_on / rps_off - 1):+.1f}%\n"
        f"  shadow pairs stored: {stored} (wrk and the fixed-rate rounds counted {shadowed} "
        f"answers with it on, wrk's in-flight ones aside); dropped (queue full): {dropped}"
    )
    print(fixed_rate_report(fixed, rate, fixed_seconds))


if __name__ == "__main__":
    main()
