"""Activation under load (issue 17, item 1): requests that fail while the champion flips.

Starts the real service (uvicorn, ``--workers`` processes, SQLite or PostgreSQL) on a copy of
the bundled models with a second churn version, then sends churn scoring calls from
``--connections`` concurrent clients for ``--seconds`` while an admin activates version 2 and
1 back and forth every ``--every`` seconds. Counts every response that is not 200 (and every
transport error) and which versions answered. The figure to report: failed requests (0).

    python bench/activation_under_load.py --workers 2 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2 as httpx  # noqa: E402
from intake_bench import service  # noqa: E402  (this folder)

from app.db.migrate import upgrade  # noqa: E402
from app.db.session import create_db_engine  # noqa: E402
from app.scoring.feature_schema import FeatureKind, FeatureSchema  # noqa: E402
from app.scoring.manifest import Manifest  # noqa: E402
from app.security.api_keys import create_client  # noqa: E402
from tests.db_support import temporary_postgres_database, temporary_sqlite_database  # noqa: E402


def customer(schema: FeatureSchema, n: int) -> dict[str, Any]:
    """A valid customer for ``schema``: each feature at its minimum, first category, false."""
    record: dict[str, Any] = {"customer_id": f"bench-{n}"}
    for feature in schema.features:
        if feature.kind is FeatureKind.BOOLEAN:
            record[feature.name] = False
        elif feature.categories:
            record[feature.name] = feature.categories[0]
        elif feature.kind is FeatureKind.INTEGER:
            record[feature.name] = int(feature.minimum or 0)
        else:
            record[feature.name] = float(feature.minimum or 0.0)
    return record


def models_copy(folder: Path) -> tuple[Path, FeatureSchema]:
    """The bundled models, plus churn version 2 (a copy of 1)."""
    models = folder / "models"
    shutil.copytree(ROOT / "models", models)
    shutil.copytree(models / "churn" / "1", models / "churn" / "2")
    manifest = Manifest.load(models / "churn" / "2")
    manifest.model_copy(update={"version": "2"}).save(models / "churn" / "2")
    return models, manifest.feature_schema


async def load(
    base: str, key: str, body: dict[str, Any], seconds: float, connections: int
) -> tuple[int, Counter[str], Counter[str]]:
    """Score for ``seconds``; (calls, failures by kind, versions that answered)."""
    failures: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    calls = 0
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal calls
        while time.monotonic() < deadline:
            calls += 1
            try:
                response = await client.post("/v1/churn/scores", json=body)
            except httpx.TransportError as error:
                failures[type(error).__name__] += 1
                continue
            if response.status_code != 200:
                failures[str(response.status_code)] += 1
            else:
                versions[response.json()["model"]["version"]] += 1

    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(connections)))
    return calls, failures, versions


async def flip(base: str, key: str, seconds: float, every: float) -> tuple[int, int]:
    """Activate 1 and 2 alternately; (activations made, activations refused)."""
    made = refused = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        # Bootstrapped: 2 (the newest) is the champion and 1 a candidate to approve.
        await client.post("/v1/admin/models/churn/versions/1/approve", json={"reason": "bench"})
        version = "1"
        while time.monotonic() < deadline - every:
            await asyncio.sleep(every)
            response = await client.post(
                f"/v1/admin/models/churn/versions/{version}/activate", json={"reason": "bench"}
            )
            if response.status_code == 200:
                made += 1
                version = "1" if version == "2" else "2"
            else:
                refused += 1
                print("activation refused:", response.status_code, response.text, file=sys.stderr)
    return made, refused


async def run(base: str, validator: str, caller: str, schema: FeatureSchema, args: Any) -> None:
    body = {"customers": [customer(schema, n) for n in range(args.batch)]}
    (calls, failures, versions), (made, refused) = await asyncio.gather(
        load(base, caller, body, args.seconds, args.connections),
        flip(base, validator, args.seconds, args.every),
    )
    print(
        f"{args.database}, {args.workers} worker(s), {args.connections} connections, "
        f"{args.seconds:.0f} s: {calls} calls, {sum(failures.values())} failed "
        f"{dict(failures)}; {made} activations ({refused} refused); "
        f"answered by version {dict(versions)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=1.0, help="Seconds between activations.")
    parser.add_argument("--batch", type=int, default=1, help="Customers per call.")
    args = parser.parse_args()
    temporary = (
        temporary_postgres_database if args.database == "postgres" else temporary_sqlite_database
    )
    with tempfile.TemporaryDirectory() as folder, temporary() as url:
        models, schema = models_copy(Path(folder))
        upgrade(url)
        engine = create_db_engine(url)
        _, validator = create_client(engine, name="validator", scopes=["admin", "models:read"])
        _, caller = create_client(engine, name="caller", scopes=["scores:write"])
        engine.dispose()
        with service(url, workers=args.workers, extra_env={"CVM_MODELS_DIR": str(models)}) as base:
            asyncio.run(run(base, validator, caller, schema, args))


if __name__ == "__main__":
    main()
