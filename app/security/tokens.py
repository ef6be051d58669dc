"""OAuth2 bearer JWTs, verified against the issuer's public key or a JWKS file.

Keys are read once when the app is built; rotating the issuer's key means updating the file and
restarting (or rolling) the replicas. Verified tokens are cached until they expire or for a
minute at most, whichever is sooner, so a client reusing its token pays the signature check once.

A signed token whose claims cannot be used as they are is refused, never cut to fit: a subject
longer than ``MAX_SUBJECT_LENGTH`` (two subjects cut alike would share one client id), a tenant
longer than the stored column or holding control characters (422 naming the claim). With
``require_tenant`` (tenant isolation) a token without a tenant is refused too (401): it would
otherwise read the rows stored without a tenant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jwt
import structlog

from app.config import ASYMMETRIC_ALGORITHMS
from app.security.errors import InvalidClaim
from app.security.principal import (
    MAX_SUBJECT_LENGTH,
    MAX_TENANT_LENGTH,
    Principal,
    parse_scopes,
)
from app.security.text import is_storable_id

_CACHE_S = 60.0
_CACHE_ENTRIES = 4096


class TokenVerifier:
    """Checks signature, issuer, audience, expiry and subject; maps claims to a principal."""

    def __init__(
        self,
        *,
        keys: dict[str | None, Any],
        algorithms: Sequence[str],
        issuer: str,
        audience: str,
        scope_claim: str = "scope",
        tenant_claim: str = "tenant",
        require_tenant: bool = True,
        leeway_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("no verification key")
        refused = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
        if refused or not algorithms:
            raise ValueError(f"jwt_algorithms must be asymmetric; refused: {refused or 'none'}")
        self._keys = keys
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._scope_claim = scope_claim
        self._tenant_claim = tenant_claim
        self._require_tenant = require_tenant
        self._leeway_s = leeway_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    @classmethod
    def from_files(
        cls,
        *,
        public_key_file: Path | None,
        jwks_file: Path | None,
        **options: Any,
    ) -> TokenVerifier:
        """A verifier for a PEM public key, or for every signing key of a JWKS document."""
        keys: dict[str | None, Any] = {}
        if public_key_file is not None:
            keys[None] = public_key_file.read_bytes()
        if jwks_file is not None:
            jwk_set = jwt.PyJWKSet.from_dict(json.loads(jwks_file.read_text(encoding="utf-8")))
            for jwk in jwk_set.keys:
                keys[jwk.key_id] = jwk
        return cls(keys=keys, **options)

    def verify(self, token: str) -> Principal | None:
        """The principal a valid token names, or None (any failure looks the same to callers).

        A validly signed token with an unusable subject or tenant raises ``InvalidClaim``.
        """
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(header.get("kid")) or (
                next(iter(self._keys.values())) if len(self._keys) == 1 else None
            )
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        principal = self._principal(claims)
        if principal is None:
            return None
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[token] = (min(float(claims["exp"]), now + _CACHE_S), principal)
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal | None:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            return None
        if not is_storable_id(subject, max_length=MAX_SUBJECT_LENGTH):
            raise InvalidClaim(
                "sub", f"at most {MAX_SUBJECT_LENGTH} characters, none of them control ones"
            )
        raw_scopes = claims.get(self._scope_claim, claims.get("scp", ""))
        if not isinstance(raw_scopes, str | list):
            return None
        tenant = claims.get(self._tenant_claim)
        if tenant is None or tenant == "":
            if self._require_tenant:
                structlog.get_logger("cvm.security").warning(
                    "jwt_refused", reason="no tenant claim", claim=self._tenant_claim
                )
                return None
            tenant = None
        elif not isinstance(tenant, str) or not is_storable_id(
            tenant, max_length=MAX_TENANT_LENGTH
        ):
            raise InvalidClaim(
                self._tenant_claim,
                f"a string of at most {MAX_TENANT_LENGTH} characters, none of them control ones",
            )
        return Principal(
            client_id="jwt:" + subject,
            name=subject,
            scopes=parse_scopes([s for s in raw_scopes if isinstance(s, str)])
            if isinstance(raw_scopes, list)
            else parse_scopes(raw_scopes),
            tenant=tenant,
            method="jwt",
        )
