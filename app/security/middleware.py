"""One pure-ASGI middleware for everything a request passes before its handler.

In order: security headers on every response; headers within their size limit (431, public
paths too); public paths pass; credential (401); rate limit (429); body read up to the limit
(413), declared as JSON (415), nested within the depth limit (400) and free of duplicate keys
(422); Idempotency-Key (replay, 409, 422); all within the request timeout (504); then one audit
line. Scopes are
checked per route by dependencies (403), since only the route knows what it needs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import orjson
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import DatabaseUnavailable, InvalidInput, ServiceError
from app.security.api_keys import KeyCache, find_active_client, key_digest, looks_like_api_key
from app.security.audit import AuditStore
from app.security.errors import (
    HeadersTooLarge,
    IdempotencyInProgress,
    IdempotencyMismatch,
    InvalidTenant,
    JsonTooDeep,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    SecurityError,
    Unauthenticated,
    UnsupportedMediaType,
)
from app.security.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyStore,
    IdempotentRun,
    KeyMaterial,
)
from app.security.principal import ANONYMOUS, MAX_TENANT_LENGTH, Principal
from app.security.rate_limit import RateLimiter
from app.security.strict_json import duplicate_key, nesting_exceeds
from app.security.text import is_storable_id
from app.security.tokens import TokenVerifier

PROBLEM_JSON = b"application/problem+json"
_MAX_TOKEN = 4096
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PURGE_EVERY_S = 600.0

# Loggers are taken per app (not at import): structlog caches a logger with the output and
# level configured when it is first used, and each app configures logging when it is built.


# The docs page loads Swagger UI's script, styles and icons from this origin only (no CDN);
# FastAPI's page starts Swagger UI from an inline script, and Swagger UI sets inline styles and
# data: images. Every other response may load nothing at all.
DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'"
)


# The console's pages load their stylesheet from this origin and run no script at all; its
# charts are inline SVG, whose presentation matplotlib writes as style attributes.
CONSOLE_CSP = (
    b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def security_headers(
    *, hsts_max_age_s: int, docs: bool, csp: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    """Headers added to every response (the docs page may load its own scripts and styles)."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (
            b"content-security-policy",
            csp or (DOCS_CSP if docs else b"default-src 'none'; frame-ancestors 'none'"),
        ),
    ]
    if hsts_max_age_s:
        headers.append(
            (b"strict-transport-security", f"max-age={hsts_max_age_s}; includeSubDomains".encode())
        )
    return headers


@dataclass
class Guard:
    """What the middleware needs, built once by the app factory."""

    engine: Engine
    auth_enabled: bool
    keys: KeyCache
    tokens: TokenVerifier | None
    limiter: RateLimiter | None
    idempotency: IdempotencyStore
    idempotency_secret: bytes
    max_body_bytes: int
    strict_json: bool
    max_json_depth: int
    max_header_bytes: int
    request_timeout_s: float
    public_paths: frozenset[str]
    docs_paths: frozenset[str]
    hsts_max_age_s: int = 0
    # Paths under this prefix authenticate by their own session cookie (the console): no API
    # credential is asked for, but headers, the timeout and the audit line still apply.
    session_prefix: str | None = None
    # Paths allowed a body larger (or smaller) than max_body_bytes (bulk event intake).
    body_limits: dict[str, int] = field(default_factory=dict)
    _last_purge: float = field(default_factory=time.monotonic)
    # Runs that failed while the database was down: released once it answers again, so that a
    # retry after a short outage runs instead of waiting out idempotency_lock_s with 409s.
    unreleased: set[int] = field(default_factory=set)
    log: Any = field(default_factory=lambda: structlog.get_logger("cvm.security"))
    audit: Any = field(default_factory=lambda: structlog.get_logger("cvm.audit"))
    # The audit lines kept in the database too (``audit_store``); None: the log only.
    audit_store: AuditStore | None = None

    def start(self) -> None:
        """Start what runs beside the requests (the audit store's writer)."""
        if self.audit_store is not None:
            self.audit_store.start()

    async def close(self) -> None:
        """Release the rate limiter and write the audit lines still queued."""
        if self.limiter is not None:
            await self.limiter.close()
        if self.audit_store is not None:
            await anyio.to_thread.run_sync(self.audit_store.stop)

    async def authenticate(self, scope: Scope) -> Principal:
        """The caller named by the Authorization (Bearer) or X-API-Key header, or 401."""
        if not self.auth_enabled:
            return ANONYMOUS
        token: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = credentials.strip()
            elif name == b"x-api-key":
                token = value.decode("latin-1").strip()
        if not token or len(token) > _MAX_TOKEN:
            raise Unauthenticated()
        principal: Principal | None = None
        if looks_like_api_key(token):
            digest = key_digest(token)
            found, principal = self.keys.get(digest)
            if not found:
                try:
                    principal = await anyio.to_thread.run_sync(
                        lambda: find_active_client(self.engine, digest=digest)
                    )
                except SQLAlchemyError as error:
                    raise DatabaseUnavailable(
                        "credentials cannot be checked right now; retry later"
                    ) from error
                self.keys.put(digest, principal)
        elif self.tokens is not None:
            principal = self.tokens.verify(token)
        if principal is None:
            raise Unauthenticated()
        tenant = principal.tenant
        if tenant is not None and not is_storable_id(tenant, max_length=MAX_TENANT_LENGTH):
            # Refused here, before any row reaches the writer, where it would fail its batch.
            raise InvalidTenant(
                f"this client's tenant cannot be stored: at most {MAX_TENANT_LENGTH} "
                "characters, none of them control ones",
                extra={"errors": [{"field": "tenant", "message": "not storable"}]},
            )
        return principal

    async def release_unreleased(self) -> None:
        """Release the runs whose release failed earlier (the database was down)."""
        if not self.unreleased:
            return
        records = sorted(self.unreleased)
        try:
            await anyio.to_thread.run_sync(lambda: self.idempotency.release(record_ids=records))
        except SQLAlchemyError:
            return  # still down: the next request tries again
        self.unreleased.difference_update(records)
        self.log.info("idempotency_released_late", records=len(records))

    async def purge_now_and_then(self) -> None:
        """Delete expired idempotency records, at most every few minutes per process."""
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_S:
            return
        self._last_purge = now
        try:
            purged = await anyio.to_thread.run_sync(self.idempotency.purge_expired)
        except SQLAlchemyError as error:
            self.log.warning("idempotency_purge_failed", error_type=type(error).__name__)
        else:
            if purged:
                self.log.info("idempotency_purged", records=purged)


class _Exchange:
    """One request's progress, for the audit line and the error path."""

    __slots__ = ("outcome", "principal", "started", "status")

    def __init__(self) -> None:
        self.status = 500
        self.started = False
        self.principal: Principal | None = None
        self.outcome = "ok"


class SecurityMiddleware:
    """Headers, authentication, rate limits, body limits, idempotency, timeout and audit."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        self.headers = security_headers(hsts_max_age_s=guard.hsts_max_age_s, docs=False)
        self.docs_headers = security_headers(hsts_max_age_s=guard.hsts_max_age_s, docs=True)
        self.console_headers = security_headers(
            hsts_max_age_s=guard.hsts_max_age_s, docs=False, csp=CONSOLE_CSP
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        console = self._is_console(path)
        extra = (
            self.console_headers
            if console
            else self.docs_headers
            if path in self.guard.docs_paths
            else self.headers
        )
        exchange = _Exchange()

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.started = True
                exchange.status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        headers_size = _header_size(scope)
        if headers_size > self.guard.max_header_bytes:
            limit = self.guard.max_header_bytes
            exchange.outcome = HeadersTooLarge.code
            error = HeadersTooLarge(
                f"the request headers exceed {limit} bytes", extra={"limit": limit}
            )
            await _send_problem(send_secured, error, path)
            self._audit(scope, exchange)
            return
        if path in self.guard.public_paths:
            await self.app(scope, receive, send_secured)
            return
        if console:
            await self._console(scope, receive, send_secured, exchange)
            return
        try:
            with anyio.fail_after(self.guard.request_timeout_s):
                await self._guarded(scope, receive, send_secured, exchange)
        except ServiceError as error:
            exchange.outcome = error.code
            if exchange.started:
                raise
            headers = error.headers if isinstance(error, SecurityError) else None
            await _send_problem(send_secured, error, path, headers)
        except TimeoutError:
            exchange.outcome = "timeout"
            if not exchange.started:
                timeout = RequestTimeout(
                    f"the request took longer than {self.guard.request_timeout_s:g} s"
                )
                await _send_problem(send_secured, timeout, path)
        finally:
            self._audit(scope, exchange)

    def _is_console(self, path: str) -> bool:
        prefix = self.guard.session_prefix
        return prefix is not None and (path == prefix or path.startswith(prefix + "/"))

    async def _console(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        """A console request: its pages check their session; audited as the staff member."""
        try:
            with anyio.fail_after(self.guard.request_timeout_s):
                await self.app(scope, receive, send)
        except TimeoutError:
            exchange.outcome = "timeout"
            if not exchange.started:
                await _send_problem(send, RequestTimeout("the page took too long"), scope["path"])
        finally:
            exchange.principal = scope.get("state", {}).get("principal")
            self._audit(scope, exchange)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        guard = self.guard
        principal = await guard.authenticate(scope)
        exchange.principal = principal
        scope.setdefault("state", {})["principal"] = principal
        if guard.limiter is not None:
            wait = await guard.limiter.wait_s(principal.client_id, principal.rate_limit_per_s)
            if wait > 0:
                raise RateLimited(wait)
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = guard.body_limits.get(scope["path"], guard.max_body_bytes)
        body = await _read_body(scope, receive, limit)
        if body is None:
            exchange.outcome = "client_disconnected"
            return
        if body:
            _check_json_body(scope, body, guard.max_json_depth)
        if guard.strict_json and body:
            duplicate = duplicate_key(body)
            if duplicate is not None:
                raise InvalidInput(
                    f"duplicate key {duplicate[:64]!r} in the JSON body",
                    extra={"errors": [{"field": "body", "message": "duplicate key"}]},
                )
        replayed = _replay(body, receive)
        idempotency_key = _header(scope, b"idempotency-key")
        if idempotency_key is None or scope["method"] != "POST":
            await self.app(scope, replayed, send)
            return
        await self._idempotent(scope, replayed, send, principal, idempotency_key, body)

    async def _idempotent(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal,
        idempotency_key: str,
        body: bytes,
    ) -> None:
        guard = self.guard
        if not 0 < len(idempotency_key) <= MAX_KEY_LENGTH or not idempotency_key.isprintable():
            raise InvalidInput(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
            )
        material = KeyMaterial.derive(
            secret=guard.idempotency_secret, client_id=principal.client_id, key=idempotency_key
        )
        request_digest = material.request_digest(scope["method"], scope["path"], body)
        await guard.release_unreleased()
        claim = await _in_thread(
            lambda: guard.idempotency.claim(
                client_id=principal.client_id,
                key_digest=material.digest,
                request_digest=request_digest,
            )
        )
        if claim.outcome == "mismatch":
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used with another request; use a new key"
            )
        if claim.outcome == "in_progress":
            raise IdempotencyInProgress()
        if claim.outcome == "replay":
            opened = material.open(claim.response or b"")
            if opened is None or claim.status is None:
                raise IdempotencyMismatch("this Idempotency-Key cannot be replayed; use a new key")
            content_type, stored = opened
            headers = [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(stored)).encode()),
                (b"idempotent-replayed", b"true"),
            ]
            await send({"type": "http.response.start", "status": claim.status, "headers": headers})
            await send({"type": "http.response.body", "body": stored})
            return
        assert claim.record_id is not None
        record_id = claim.record_id
        # A handler that writes stores the key with its rows: a retry after a 5xx (this run's
        # claim is then released) finds the committed result rather than writing again.
        scope["state"]["idempotency"] = IdempotentRun(material, request_digest)
        # The response is held until it is stored: once a client has it, a retry replays it.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        try:
            await self.app(scope, receive, hold)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _release(guard, record_id)
            raise
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        status = int(start["status"]) if start is not None else 500
        if status >= 500:
            await _release(guard, record_id)
        else:
            assert start is not None
            content_type = next(
                (v.decode("latin-1") for k, v in start.get("headers", ()) if k == b"content-type"),
                "application/json",
            )
            response = b"".join(
                m.get("body", b"") for m in held if m["type"] == "http.response.body"
            )
            sealed = material.seal(content_type, response)
            try:
                await _in_thread(
                    lambda: guard.idempotency.complete(
                        record_id=record_id, status=status, response=sealed
                    )
                )
            except DatabaseUnavailable:
                guard.log.warning("idempotency_not_recorded", status=status)
            await guard.purge_now_and_then()
        for message in held:
            await send(message)

    def _audit(self, scope: Scope, exchange: _Exchange) -> None:
        principal = exchange.principal
        route = scope.get("route")
        state = scope.get("state", {})
        client = scope.get("client")
        line = {
            "request_id": state.get("request_id"),
            "client_request_id": state.get("client_request_id"),
            "source": client[0] if client else None,
            "client": principal.client_id if principal else None,
            "tenant": principal.tenant if principal else None,
            "auth": principal.method if principal else None,
            "method": scope["method"],
            "route": getattr(route, "path", "unmatched"),
            "status": exchange.status,
            "outcome": _outcome(exchange, state),
            **state.get("audit", {}),
        }
        self.guard.audit.info("audit", **line)
        if self.guard.audit_store is not None:
            self.guard.audit_store.put(line, datetime.now(UTC))


# Outcomes of refusals that no domain error named (the router's 404 and 405, say).
_STATUS_OUTCOMES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
    504: "request_timeout",
}


def _outcome(exchange: _Exchange, state: dict[str, Any]) -> str:
    """What became of the request: the middleware's own verdict, else the error code the
    handler rendered, else one named after the status; "ok" only below 400."""
    if exchange.outcome != "ok" or exchange.status < 400:
        return exchange.outcome
    code: str | None = state.get("error_code")
    if code is not None:
        return code
    fallback = "client_error" if exchange.status < 500 else "server_error"
    return _STATUS_OUTCOMES.get(exchange.status, fallback)


async def _in_thread(call: Callable[[], Any]) -> Any:
    try:
        return await anyio.to_thread.run_sync(call)
    except SQLAlchemyError as error:
        raise DatabaseUnavailable("the database is unavailable; nothing was done") from error


async def _release(guard: Guard, record_id: int) -> None:
    try:
        await _in_thread(lambda: guard.idempotency.release(record_ids=[record_id]))
    except DatabaseUnavailable:
        # Released by the next idempotent request once the database answers; at the latest
        # the claim lapses after idempotency_lock_s (another replica's retry then runs).
        guard.unreleased.add(record_id)
        guard.log.warning("idempotency_not_released")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _header_size(scope: Scope) -> int:
    """The bytes of every header name and value (the server has already read them all)."""
    return sum(len(name) + len(value) for name, value in scope["headers"])


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, in UTF-8 when a charset is named."""
    if content_type is None:
        return False
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def _check_json_body(scope: Scope, body: bytes, max_depth: int) -> None:
    """415 for a body not declared as JSON, 400 for one nested deeper than ``max_depth``."""
    if not is_json_media_type(_header(scope, b"content-type")):
        raise UnsupportedMediaType(
            "the request body must be JSON: send Content-Type: application/json"
        )
    if nesting_exceeds(body, max_depth):
        raise JsonTooDeep(
            f"the JSON body nests arrays and objects deeper than {max_depth} levels",
            extra={"limit": max_depth},
        )


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, refused with 413 as soon as it exceeds ``limit`` (None: client left)."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes", extra={"limit": limit})
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # chunked, or a Content-Length that lied
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes", extra={"limit": limit})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_problem(
    send: Send, error: ServiceError, path: str, headers: dict[str, str] | None = None
) -> None:
    body = orjson.dumps(error.problem(instance=path))
    raw_headers = [
        (b"content-type", PROBLEM_JSON),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
