"""Security refusals: domain errors with their status, rendered as problem details.

Details say what to do, never why a credential failed (unknown, revoked or expired look alike).
"""

from __future__ import annotations

from typing import Any

from app.errors import InvalidInput, ServiceError


class SecurityError(ServiceError):
    """A refusal that may carry response headers (WWW-Authenticate, Retry-After)."""

    def __init__(
        self,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail, extra=extra)
        self.headers = headers or {}


class Unauthenticated(SecurityError):
    """No valid credential was presented."""

    status = 401
    code = "unauthenticated"
    title = "Unauthenticated"

    def __init__(self, detail: str = "a valid API key or bearer token is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="cvm"'})


class Forbidden(SecurityError):
    """The credential is valid but lacks the scope the operation needs."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class RateLimited(SecurityError):
    """The client sent more requests than its limit allows."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, retry_after_s: float) -> None:
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(
            f"rate limit exceeded; retry after {seconds} s",
            extra={"retry_after": seconds},
            headers={"Retry-After": str(seconds)},
        )


class PayloadTooLarge(SecurityError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class JsonTooDeep(SecurityError):
    """The JSON body nests arrays and objects deeper than the configured limit."""

    status = 400
    code = "json_too_deep"
    title = "JSON nested too deep"


class UnsupportedMediaType(SecurityError):
    """A request body that is not declared as JSON."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class HeadersTooLarge(SecurityError):
    """The request's headers are larger than the configured limit."""

    status = 431
    code = "headers_too_large"
    title = "Request header fields too large"


class RequestTimeout(SecurityError):
    """The request took longer than the configured limit."""

    status = 504
    code = "request_timeout"
    title = "Request timeout"


class IdempotencyInProgress(SecurityError):
    """A request with the same Idempotency-Key is still running."""

    status = 409
    code = "idempotency_in_progress"
    title = "Request in progress"

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still in progress; retry later",
            headers={"Retry-After": "1"},
        )


class InvalidClaim(InvalidInput):
    """A validly signed token whose claim cannot be used as it is."""

    code = "invalid_claim"
    title = "Invalid token claim"

    def __init__(self, claim: str, expected: str) -> None:
        super().__init__(
            f"the token's {claim!r} claim must be {expected}",
            extra={"errors": [{"field": f"token.{claim}", "message": expected}]},
        )


class InvalidTenant(InvalidInput):
    """A client whose tenant cannot be stored with its rows."""

    code = "invalid_tenant"
    title = "Invalid tenant"


class IdempotencyMismatch(InvalidInput):
    """The Idempotency-Key was used before with another request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"
