"""Build the security pieces from the settings (called by the app factory, never at import)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import Engine

from app.config import Settings
from app.security.api_keys import KeyCache
from app.security.audit import AuditStore
from app.security.idempotency import IdempotencyStore
from app.security.middleware import Guard
from app.security.rate_limit import RateLimiter
from app.security.tokens import TokenVerifier

ALWAYS_PUBLIC = frozenset({"/healthz", "/readyz"})
# Keys records of idempotent requests when no deployment secret is set.
_DEFAULT_IDEMPOTENCY_SECRET = b"cvm-idempotency-v1"


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """Shared limits through Redis when a URL is set, in-process otherwise; None when off."""
    if settings.rate_limit_per_s is None:
        return None
    redis = None
    if settings.redis_url is not None:
        redis = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            # No retries: a slow or absent Redis must cost one timeout, then the local fallback.
            retry=Retry(NoBackoff(), 0),
        )
    return RateLimiter(
        rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst, redis=redis
    )


def build_guard(
    settings: Settings,
    engine: Engine,
    *,
    docs_paths: frozenset[str],
    spec_path: str,
    body_limits: dict[str, int] | None = None,
    session_prefix: str | None = None,
) -> Guard:
    """Everything the security middleware needs.

    ``docs_paths`` (the docs page and its static files) are always public: they hold Swagger
    UI and nothing of ours. ``spec_path`` (the OpenAPI document) is public with ``docs_public``.
    ``body_limits`` replaces ``max_body_bytes`` for the paths it names. Paths under
    ``session_prefix`` (the console) check their own login session instead of a credential.
    """
    public = set(ALWAYS_PUBLIC) | docs_paths
    if settings.metrics_public:
        public.add("/metrics")
    if settings.docs_public:
        public.add(spec_path)
    tokens = None
    if settings.jwt_public_key_file is not None or settings.jwt_jwks_file is not None:
        assert settings.jwt_issuer is not None and settings.jwt_audience is not None
        tokens = TokenVerifier.from_files(
            public_key_file=settings.jwt_public_key_file,
            jwks_file=settings.jwt_jwks_file,
            algorithms=settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            scope_claim=settings.jwt_scope_claim,
            tenant_claim=settings.jwt_tenant_claim,
            require_tenant=settings.tenant_isolation,
            leeway_s=settings.jwt_leeway_s,
        )
    secret = (
        settings.pseudonym_secret.get_secret_value().encode()
        if settings.pseudonym_secret is not None
        else _DEFAULT_IDEMPOTENCY_SECRET
    )
    return Guard(
        engine=engine,
        auth_enabled=settings.auth_enabled,
        keys=KeyCache(ttl_s=settings.auth_cache_ttl_s),
        tokens=tokens,
        limiter=build_rate_limiter(settings),
        idempotency=IdempotencyStore(
            engine, ttl_s=settings.idempotency_ttl_s, lock_s=settings.idempotency_lock_s
        ),
        idempotency_secret=secret,
        max_body_bytes=settings.max_body_bytes,
        body_limits=body_limits or {},
        strict_json=settings.strict_json,
        max_json_depth=settings.max_json_depth,
        max_header_bytes=settings.max_header_bytes,
        request_timeout_s=settings.request_timeout_s,
        public_paths=frozenset(public),
        docs_paths=docs_paths,
        hsts_max_age_s=settings.hsts_max_age_s,
        session_prefix=session_prefix,
        audit_store=AuditStore(engine) if settings.audit_store else None,
    )
