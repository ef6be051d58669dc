"""A fixed-rate (open-loop) HTTP load generator whose latencies are free of coordinated omission.

wrk runs closed-loop: each connection sends its next request only when the last one has been
answered, so while the server stalls the client stops sending, and the requests that a real
client would have sent during the stall are never measured (coordinated omission). Here every
request has an intended send time, ``start + i / rate``, fixed before the run; its latency is
measured from that intended time to the last byte of its answer, so time spent waiting for a
free connection, or behind a slow answer, counts against the server as a real client would
feel it. wrk2 does this too, but it is not packaged here (``apt-cache policy wrk2``: none).

The client is plain asyncio streams speaking HTTP/1.1 keep-alive to 127.0.0.1 (a request costs
the client a few tens of microseconds, far less than an HTTP client library), with a pool of
connections that grows up to ``max_connections`` when every open one is busy. The client's own
lateness (actual send time minus intended) is reported, so a client that cannot keep up shows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

MAX_CONNECTIONS = 256
DRAIN_TIMEOUT_S = 60.0
# uvicorn closes a keep-alive connection after 5 s idle: one idle longer is not reused (a
# request on a connection the server is closing would fail for the client's reason, not its).
IDLE_REUSE_S = 2.0

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class OpenLoopRun:
    """One fixed-rate run: what was sent, what came back, and the latency percentiles."""

    rate: float
    seconds: float
    sent: int
    ok: int
    failed: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    achieved_rps: float
    client_late_p99_ms: float
    connections: int
    failures: dict[int, int]
    """Failed requests by status: an HTTP status, -1 for a broken connection, 0 unanswered."""
    latencies_ms: list[float] = field(repr=False)
    """Every request's latency (unanswered ones at the drain timeout), in send order."""


class _Pool:
    """Keep-alive connections to one host: a recently used idle one is reused, else a new one
    is opened, up to ``limit`` at a time."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[float, Connection]] = []  # (when it was last answered, it)
        self.opened = 0
        self.freed = asyncio.Condition()

    async def take(self) -> Connection:
        now = asyncio.get_running_loop().time()
        async with self.freed:
            while True:
                # The idle list is in the order connections came back: the stale ones first.
                while self.idle and now - self.idle[0][0] > IDLE_REUSE_S:
                    self.idle.pop(0)[1][1].close()
                    self.opened -= 1
                if self.idle:
                    return self.idle.pop()[1]
                if self.opened < self.limit:
                    break
                await self.freed.wait()
                now = asyncio.get_running_loop().time()
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            await self.give(None)
            raise

    async def give(self, connection: Connection | None) -> None:
        async with self.freed:
            if connection is None:  # broken: a new one may be opened in its place
                self.opened -= 1
            else:
                self.idle.append((asyncio.get_running_loop().time(), connection))
            self.freed.notify()

    def close(self) -> None:
        for _, (_, writer) in self.idle:
            writer.close()


async def _exchange(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
) -> int:
    """Send one request, read its whole answer (Content-Length); the status code."""
    reader, writer = connection
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next(
        (int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:")),
        None,
    )
    if length is None:
        raise ConnectionError("answer without Content-Length")
    await reader.readexactly(length)
    return status


def _requests(url: str, bodies: list[bytes], headers: dict[str, str]) -> list[bytes]:
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return [
        (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        + body
        for body in bodies
    ]


async def _run(
    url: str,
    requests: list[bytes],
    *,
    rate: float,
    seconds: float,
    max_connections: int,
) -> OpenLoopRun:
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise ValueError(f"refusing to load anything but 127.0.0.1:PORT: {url}")
    pool = _Pool(parts.hostname, parts.port, max_connections)
    count = int(rate * seconds)
    latencies = np.full(count, np.nan)
    late = np.zeros(count)
    statuses = np.zeros(count, dtype=np.int64)
    loop = asyncio.get_running_loop()

    async def one(i: int, intended: float) -> None:
        late[i] = loop.time() - intended
        try:
            connection = await pool.take()
        except OSError:  # the pool has already given the slot back
            statuses[i], latencies[i] = -1, loop.time() - intended
            return
        try:
            statuses[i] = await _exchange(connection, requests[i % len(requests)])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            connection[1].close()
            statuses[i] = -1
            await pool.give(None)
        else:
            await pool.give(connection)
        latencies[i] = loop.time() - intended

    start = loop.time() + 0.05
    tasks = []
    for i in range(count):
        intended = start + i / rate
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, intended)))
    began = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in pending:  # unanswered: counted as failed, at the longest latency seen
        task.cancel()
    drained = time.perf_counter() - began
    pool.close()
    ok = (statuses >= 200) & (statuses < 300)
    measured = np.where(np.isnan(latencies), DRAIN_TIMEOUT_S, latencies) * 1000.0
    return OpenLoopRun(
        rate=rate,
        seconds=seconds,
        sent=count,
        ok=int(ok.sum()),
        failed=int(count - ok.sum()),
        p50_ms=float(np.percentile(measured, 50)),
        p90_ms=float(np.percentile(measured, 90)),
        p99_ms=float(np.percentile(measured, 99)),
        max_ms=float(measured.max()),
        achieved_rps=float(ok.sum() / (seconds + drained)),
        client_late_p99_ms=float(np.percentile(late, 99) * 1000.0),
        connections=pool.opened,
        failures=dict(Counter(int(status) for status in statuses[~ok])),
        latencies_ms=measured.tolist(),
    )


def run_open_loop(
    url: str,
    bodies: Path,
    *,
    rate: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    max_connections: int = MAX_CONNECTIONS,
) -> OpenLoopRun:
    """POST the bodies (one JSON document a line, cycled) at ``rate`` a second for ``seconds``;
    latency from each request's intended send time to its answer's last byte."""
    lines = [line.encode() for line in bodies.read_text().splitlines() if line.strip()]
    requests = _requests(url, lines, headers or {})
    return asyncio.run(
        _run(url, requests, rate=rate, seconds=seconds, max_connections=max_connections)
    )
