"""What the security layer costs one churn scoring call, in microseconds, measured in-process.

Raw ASGI calls (no sockets, no client library), interleaved rounds, medians:

1. the security middleware alone around a bare ASGI endpoint that reads the body (API key from
   the cache, local rate limit, duplicate-key check of a one-customer churn body, headers,
   timeout scope, audit line), and the same with the limit kept in Redis;
2. the scope dependency (`caller: ScoresWriter`) on a FastAPI route;
3. a full churn call through the app with authentication on and off, the database write
   replaced by a no-op on both (a commit's fsync would drown the difference in noise).

Usage: .venv/bin/python bench/security_overhead.py [--models DIR] [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI, Request, Response  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.http.app import create_app  # noqa: E402
from app.http.deps import ScoresWriter  # noqa: E402
from app.http.docs import PAGE_PATHS, SPEC_PATH  # noqa: E402
from app.observability import configure_logging  # noqa: E402
from app.scoring.manifest import Task  # noqa: E402
from app.scoring.registry import ModelRegistry  # noqa: E402
from app.security.api_keys import create_client  # noqa: E402
from app.security.middleware import SecurityMiddleware  # noqa: E402
from app.security.principal import ALL_SCOPES  # noqa: E402
from app.security.setup import build_guard  # noqa: E402


def churn_body(registry: ModelRegistry) -> bytes:
    """A one-customer churn request with mid-range values for every feature."""
    model = registry.get(Task.CHURN)
    assert model is not None
    customer: dict[str, Any] = {"customer_id": "C-000123"}
    for feature in model.schema.features:
        spec = feature.model_dump()
        if spec.get("categories"):
            customer[feature.name] = spec["categories"][0]
        elif spec["kind"] == "boolean":
            customer[feature.name] = False
        else:
            low = spec.get("minimum") or 0
            high = spec.get("maximum") or (low + 100)
            value = (low + high) / 2
            customer[feature.name] = int(value) if spec["kind"] == "integer" else value
    return json.dumps({"customers": [customer], "reasons": 3}).encode()


def scope_for(path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
        "state": {"request_id": "bench"},
    }


async def call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope, state=dict(scope["state"])), receive, send)
    return status


async def time_calls(app: Any, scope: dict[str, Any], body: bytes, n: int) -> list[float]:
    assert await call(app, scope, body) < 300, await call(app, scope, body)
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        await call(app, scope, body)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


async def bare_endpoint(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def compare(label: str, results: dict[str, list[list[float]]], base: str, other: str) -> str:
    base_median = statistics.median(statistics.median(r) for r in results[base])
    other_median = statistics.median(statistics.median(r) for r in results[other])
    return (
        f"{label:<58} {base_median:9.1f} -> {other_median:9.1f} us"
        f"   (+{other_median - base_median:.1f} us)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--n", type=int, default=3000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    registry = ModelRegistry.load(args.models)
    body = churn_body(registry)
    folder = tempfile.mkdtemp(prefix="cvm-bench-")
    url = f"sqlite:///{folder}/bench.db"
    upgrade(url)
    settings = Settings(database_url=url, models_dir=args.models, log_level="INFO")
    configure_logging("INFO", json_logs=True)

    def guarded(**overrides: Any) -> tuple[SecurityMiddleware, list[tuple[bytes, bytes]]]:
        chosen = settings.model_copy(update=overrides)
        engine = create_app(chosen, registry).state.engine
        guard = build_guard(chosen, engine, docs_paths=PAGE_PATHS, spec_path=SPEC_PATH)
        _, key = create_client(guard.engine, name="bench", scopes=sorted(ALL_SCOPES))
        return SecurityMiddleware(bare_endpoint, guard), [(b"x-api-key", key.encode())]

    local, local_headers = guarded()
    from pydantic import SecretStr

    shared, shared_headers = guarded(redis_url=SecretStr(args.redis))

    # Scope dependency on a FastAPI route, principal already in the scope state.
    bare_api = FastAPI()
    checked_api = FastAPI()

    @bare_api.post("/x")
    async def bare_route(request: Request) -> Response:
        return Response(b"{}")

    @checked_api.post("/x")
    async def checked_route(request: Request, caller: ScoresWriter) -> Response:
        return Response(b"{}")

    from app.security.principal import ANONYMOUS

    # Full app, authentication on and off.
    full_on = create_app(settings, registry)
    full_off = create_app(settings.model_copy(update={"auth_enabled": False}), registry)
    _, full_key = create_client(full_on.state.engine, name="bench", scopes=["scores:write"])

    async def no_write(*_: Any, **__: Any) -> None:
        return None

    for app in (full_on, full_off):
        app.state.scoring.persist = no_write

    cases: dict[str, tuple[Any, dict[str, Any]]] = {
        "bare": (bare_endpoint, scope_for("/v1/churn/scores", [], body)),
        "middleware": (local, scope_for("/v1/churn/scores", local_headers, body)),
        "middleware+redis": (shared, scope_for("/v1/churn/scores", shared_headers, body)),
        "route": (bare_api, scope_for("/x", [], body)),
        "route+scope": (checked_api, scope_for("/x", [], body)),
        "churn-auth-off": (full_off, scope_for("/v1/churn/scores", [], body)),
        "churn-auth-on": (
            full_on,
            scope_for("/v1/churn/scores", [(b"x-api-key", full_key.encode())], body),
        ),
    }
    cases["route+scope"][1]["state"]["principal"] = ANONYMOUS
    results: dict[str, list[list[float]]] = {name: [] for name in cases}
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        configure_logging("INFO", json_logs=True)
        for _ in range(args.rounds):
            for name, (app, scope) in cases.items():
                n = args.n // 10 if name.startswith("churn") else args.n
                results[name].append(await time_calls(app, scope, body, n))
    assert shared.guard.limiter is not None  # rate limits are on in these settings
    await shared.guard.limiter.close()
    print(f"one-customer churn body: {len(body)} bytes; medians of {args.rounds} rounds")
    print(
        compare(
            "security middleware (key cached, local limit, audit)", results, "bare", "middleware"
        )
    )
    print(compare("... rate limit in Redis instead", results, "bare", "middleware+redis"))
    print(compare("scope dependency on a FastAPI route", results, "route", "route+scope"))
    print(
        compare("churn call, authentication off -> on", results, "churn-auth-off", "churn-auth-on")
    )


if __name__ == "__main__":
    asyncio.run(main())
