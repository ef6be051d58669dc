"""Structured logs, Prometheus metrics and request ids, as one pure-ASGI middleware.

Pure ASGI rather than BaseHTTPMiddleware: it costs a few microseconds per request, which
matters on a scoring endpoint that answers in a few hundred.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
# The caller's X-Request-ID, echoed back under this name (X-Request-ID is the service's own).
CLIENT_REQUEST_ID_HEADER = b"x-client-request-id"
_MAX_REQUEST_ID = 64


def configure_logging(level: str, json_logs: bool) -> None:
    """JSON lines to stdout (or readable console lines for development)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cvm_http_requests_total",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cvm_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.scores = Counter(
            "cvm_scores_total", "Customers scored by task.", ["task"], registry=self.registry
        )
        self.shadow_dropped = Counter(
            "cvm_shadow_dropped_total",
            "Shadow scoring jobs dropped because the challenger's queue was full, by task.",
            ["task"],
            registry=self.registry,
        )

    def add_gauges(
        self, name: str, doc: str, read: Callable[[], dict[str, float]], *, label: str = "kind"
    ) -> None:
        """Expose values read at scrape time (e.g. group-commit counters), one per label."""
        self.registry.register(_CallbackCollector(name, doc, read, label))


class _CallbackCollector(Collector):
    def __init__(
        self, name: str, doc: str, read: Callable[[], dict[str, float]], label: str
    ) -> None:
        self._name, self._doc, self._read, self._label = name, doc, read, label

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=[self._label])
        for kind, value in self._read().items():
            family.add_metric([kind], value)
        yield family


def client_request_id(scope: Scope) -> str | None:
    """The caller's own X-Request-ID when it is a plain token (letters, digits, - and _).

    Kept beside the service's id, never instead of it: two callers may choose the same one.
    """
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text = str(value.decode("latin-1"))[:_MAX_REQUEST_ID]
            if text.isascii() and text.replace("-", "").replace("_", "").isalnum():
                return text
    return None


def time_ordered_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: milliseconds since the epoch, then 74 random bits.

    Scores are stored with their request id, which is indexed: random ids (UUIDv4) put every
    single-customer call's row on a random leaf page of that index, time-ordered ones on the
    last few. In a million-row SQLite table a 25-row commit wrote 42 pages to the log instead
    of 73 (bench/README.md). ``uuid.uuid7`` arrives with Python 3.14.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return f"{value:032x}"


class RequestContextMiddleware:
    """Request id in and out, one access-log line and the HTTP metrics per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = structlog.get_logger("cvm.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The service's id is always its own (unique, time-ordered); the caller's is kept apart.
        request_id = time_ordered_id()
        given_id = client_request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_request_id"] = given_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                if given_id is not None:
                    headers.append((CLIENT_REQUEST_ID_HEADER, given_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            if status >= 400 or path not in _QUIET_ROUTES:
                self.log.info(
                    "request",
                    method=scope["method"],
                    route=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    request_id=request_id,
                    client_request_id=given_id,
                )


# Successful calls to these are counted in metrics but not logged line by line.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
