"""Authentication, scopes, tenants, limits, idempotency, pseudonyms, headers and audit."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from app.alerts.tables import Alert
from app.cli.main import cli
from app.db.errors import PersistenceUnavailable
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.tables import Score
from app.security.api_keys import KeyCache, create_client, key_digest, revoke_client
from app.security.idempotency import IdempotencyStore, KeyMaterial
from app.security.principal import ALL_SCOPES
from app.security.pseudonyms import Pseudonymizer
from app.security.rate_limit import LocalLimiter
from app.security.strict_json import duplicate_key, nesting_exceeds
from app.security.tables import IdempotencyRecord, api_client_table
from app.security.tokens import TokenVerifier
from tests.alert_support import settle_alerts
from tests.conftest import ON_SQLITE_ONLY, customer_record

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "pseudonymisation-secret-for-tests-0123456789"
ISSUER = "https://idp.bank.example"
AUDIENCE = "cvm"


@pytest.fixture
def make_app(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Any]:
    """Build authenticated apps with settings overrides; their lifespans end with the test."""
    clients: list[TestClient] = []

    def build(**overrides: Any) -> tuple[FastAPI, TestClient]:
        overrides.setdefault("auth_enabled", True)
        app = create_app(settings_for(database_url, **overrides), registry)
        test_client = TestClient(app, raise_server_exceptions=False)
        test_client.__enter__()
        clients.append(test_client)
        return app, test_client

    yield build
    for test_client in clients:
        test_client.__exit__(None, None, None)


def key_for(
    engine: Engine, *scopes: str, tenant: str | None = None, **extra: Any
) -> dict[str, str]:
    """Headers carrying a new client's key."""
    _, key = create_client(
        engine, name="t", scopes=list(scopes or ALL_SCOPES), tenant=tenant, **extra
    )
    return {"X-API-Key": key}


def churn_customer(
    sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry, index: int = 0
) -> dict[str, Any]:
    model = registry.get(Task.CHURN)
    assert model is not None
    row = sample_rows["existing"].iloc[index]
    return customer_record(row, model.schema, customer_id=f"S-{uuid.uuid4().hex[:12]}")


def stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(Score.customer_id)))


# --- authentication and scopes -------------------------------------------------------------


@ON_SQLITE_ONLY
def test_no_or_bad_credential_is_401_and_says_nothing_more(make_app: Any) -> None:
    app, client = make_app()
    _, revoked_key = create_client(app.state.engine, name="old", scopes=["scores:read"])
    revoke_client(app.state.engine, client_id=_client_id(app, revoked_key))
    bodies = []
    for headers in (
        {},
        {"X-API-Key": "cvm_" + "A" * 43},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": revoked_key},
    ):
        response = client.get("/v1/customers/C-1/scores", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        bodies.append({k: v for k, v in body.items() if k != "instance"})
    # Unknown, malformed and revoked credentials look the same.
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["code"] == "unauthenticated"
    # Unknown paths do not reveal whether they exist.
    assert client.get("/v1/nothing-here").status_code == 401


def _client_id(app: FastAPI, key: str) -> str:
    from app.security.api_keys import find_active_client

    principal = find_active_client(app.state.engine, digest=key_digest(key))
    assert principal is not None
    return principal.client_id


@ON_SQLITE_ONLY
def test_health_docs_and_metrics_are_public_by_default(make_app: Any) -> None:
    app, client = make_app()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    # The Authorize button of /docs offers both schemes: an API key header or a bearer token.
    assert spec["components"]["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (cvm_...) or an OAuth2 access token (JWT).",
        },
    }
    operation = spec["paths"]["/v1/churn/scores"]["post"]
    assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert {"401", "403", "413", "422", "429"} <= set(operation["responses"])
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert client.get("/v1/models").status_code == 401  # the API itself is not

    app, client = make_app(docs_public=False)
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/docs").status_code == 200  # the page holds nothing of ours
    headers = key_for(app.state.engine, "models:read")
    assert client.get("/openapi.json", headers=headers).status_code == 200

    app, client = make_app(metrics_public=False)
    assert client.get("/metrics").status_code == 401
    reader = key_for(app.state.engine, "models:read")
    assert client.get("/metrics", headers=reader).status_code == 403
    admin = key_for(app.state.engine, "admin")
    assert client.get("/metrics", headers=admin).status_code == 200


@pytest.fixture(scope="module")
def scopes_app(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[tuple[FastAPI, TestClient]]:
    """One authenticated app for every operation's scope check: each check makes keys of its
    own and stores nothing (its calls are refused or carry an empty body), so one app serves
    them all instead of one app each."""
    app = create_app(settings_for(database_url, auth_enabled=True), registry)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield app, test_client


@ON_SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/v1/churn/scores", "scores:write"),
        ("POST", "/v1/tier/scores", "scores:write"),
        ("POST", "/v1/recommendations", "scores:write"),
        ("POST", "/v1/prospect/scores", "scores:write"),
        ("POST", "/v1/assessments", "scores:write"),
        ("GET", "/v1/customers/C-1/scores", "scores:read"),
        ("GET", "/v1/customers/C-1/next-best-actions", "customers:read"),
        ("GET", "/v1/alerts", "alerts:read"),
        ("GET", "/v1/alerts/1", "alerts:read"),
        ("POST", "/v1/alerts/1/acknowledge", "alerts:write"),
        ("POST", "/v1/alerts/1/resolve", "alerts:write"),
        ("GET", "/v1/models", "models:read"),
        ("GET", "/v1/models/churn", "models:read"),
    ],
)
def test_each_operation_needs_its_scope(
    scopes_app: tuple[FastAPI, TestClient], method: str, path: str, scope: str
) -> None:
    app, client = scopes_app
    others = sorted(ALL_SCOPES - {scope})
    refused = client.request(method, path, headers=key_for(app.state.engine, *others), json={})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert scope in refused.json()["detail"]
    allowed = client.request(method, path, headers=key_for(app.state.engine, scope), json={})
    assert allowed.status_code not in (401, 403)


@ON_SQLITE_ONLY
def test_bearer_api_key_and_revocation_within_the_cache_ttl(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    app, client = make_app(auth_cache_ttl_s=0.2)
    info, key = create_client(app.state.engine, name="core", scopes=["scores:write"])
    customer = churn_customer(sample_rows, registry)
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.post(
        "/v1/churn/scores", json={"customers": [customer]}, headers=bearer
    ).is_success
    assert revoke_client(app.state.engine, client_id=info.id)
    time.sleep(0.25)
    response = client.post("/v1/churn/scores", json={"customers": [customer]}, headers=bearer)
    assert response.status_code == 401


def test_key_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=5, max_entries=2, clock=lambda: now[0])
    cache.put("a", None)
    assert cache.get("a") == (True, None)
    now[0] = 6
    assert cache.get("a") == (False, None)
    for digest in ("b", "c", "d"):
        cache.put(digest, None)
    assert cache.get("b") == (False, None) and cache.get("d") == (True, None)


# --- bearer JWTs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path, Path]:
    """An RSA issuer key, its public PEM file and a JWKS file naming it 'k1'."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder = tmp_path_factory.mktemp("issuer")
    pem = folder / "issuer.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    return private, pem, jwks


def token(private: rsa.RSAPrivateKey, kid: str | None = None, **claims: Any) -> dict[str, str]:
    now = datetime.now(UTC)
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "crm-batch",
        "exp": now + timedelta(minutes=5),
        "iat": now,
        "scope": "scores:read models:read",
        "tenant": "bank-a",
        **claims,
    }
    payload = {name: value for name, value in payload.items() if value is not None}
    headers = {"kid": kid} if kid else None
    encoded = jwt.encode(payload, private, algorithm="RS256", headers=headers)
    return {"Authorization": f"Bearer {encoded}"}


@ON_SQLITE_ONLY
@pytest.mark.parametrize("source", ["pem", "jwks"])
def test_bearer_jwts_are_verified(
    make_app: Any, issuer_key: tuple[rsa.RSAPrivateKey, Path, Path], source: str
) -> None:
    private, pem, jwks = issuer_key
    files = {"jwt_public_key_file": pem} if source == "pem" else {"jwt_jwks_file": jwks}
    _, client = make_app(jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **files)
    kid = "k1" if source == "jwks" else None
    assert client.get("/v1/models", headers=token(private, kid)).status_code == 200
    # Scopes come from the token.
    assert client.get("/v1/alerts", headers=token(private, kid)).status_code == 403
    listed = token(private, kid, scope=["alerts:read"])
    assert client.get("/v1/alerts", headers=listed).status_code == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    expired = datetime.now(UTC) - timedelta(hours=1)
    for bad in (
        token(private, kid, aud="someone-else"),
        token(private, kid, iss="https://evil.example"),
        token(private, kid, exp=expired),
        token(other, kid),
        {"Authorization": "Bearer " + jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256")},
    ):
        assert client.get("/v1/models", headers=bad).status_code == 401


@ON_SQLITE_ONLY
def test_a_token_without_a_tenant_is_refused_while_tenants_are_isolated(
    make_app: Any, issuer_key: tuple[rsa.RSAPrivateKey, Path, Path]
) -> None:
    """Issue 20 item 11: it was accepted, and read the rows stored without a tenant."""
    private, pem, _ = issuer_key
    jwt_settings = {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_public_key_file": pem}
    _, client = make_app(**jwt_settings)
    for claims in ({"tenant": None}, {"tenant": ""}, {"tenant_id": "bank-a", "tenant": None}):
        response = client.get("/v1/models", headers=token(private, **claims))
        assert response.status_code == 401, claims
    assert client.get("/v1/models", headers=token(private)).status_code == 200
    # Without isolation tenants are labels only, and a token may go without.
    _, client = make_app(tenant_isolation=False, **jwt_settings)
    assert client.get("/v1/models", headers=token(private, tenant=None)).status_code == 200


@pytest.mark.parametrize(
    "algorithms", [["none"], ["RS256", "none"], ["None"], ["HS256"], ["RS256", "HS512"], []]
)
def test_unsafe_jwt_algorithms_are_refused_at_start_up(
    settings_for: Any, issuer_key: tuple[rsa.RSAPrivateKey, Path, Path], algorithms: list[str]
) -> None:
    """Issue 20 item 11: 'none' was accepted (only HS* was refused)."""
    _, pem, _ = issuer_key
    with pytest.raises(ValidationError, match="jwt_algorithms"):
        settings_for(
            "sqlite://",
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_public_key_file=pem,
            jwt_algorithms=algorithms,
        )
    with pytest.raises(ValidationError, match="jwt_algorithms"):
        settings_for("sqlite://", jwt_algorithms=algorithms)  # JWTs off: refused all the same
    with pytest.raises(ValueError, match="asymmetric"):
        TokenVerifier(keys={None: b"k"}, algorithms=algorithms, issuer=ISSUER, audience=AUDIENCE)


def test_unusable_subjects_and_tenants_are_refused_not_cut(
    make_app: Any,
    issuer_key: tuple[rsa.RSAPrivateKey, Path, Path],
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    engine: Engine,
) -> None:
    """Issue 20 item 11: subjects were cut to 60 characters (two clients shared an id), and a
    65-character tenant reached the writer (503 on PostgreSQL, with its whole write batch)."""
    private, pem, _ = issuer_key
    app, client = make_app(jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_public_key_file=pem)
    verifier = app.state.guard.tokens
    longest = "s" * 60
    principal = verifier.verify(token(private, sub=longest)["Authorization"][7:])
    assert principal.client_id == "jwt:" + longest and principal.name == longest
    customer = churn_customer(sample_rows, registry)
    body = {"customers": [customer]}
    writes = {"scope": "scores:write"}
    for claims, field in (
        ({"sub": "a" * 60 + "-one"}, "token.sub"),
        ({"sub": "a" * 60 + "-two"}, "token.sub"),
        ({"sub": "crm\x00batch"}, "token.sub"),
        ({"tenant": "t" * 65}, "token.tenant"),
        ({"tenant": "bank\x00a"}, "token.tenant"),
        ({"tenant": "bank\na"}, "token.tenant"),
        ({"tenant": 42}, "token.tenant"),
    ):
        response = client.post(
            "/v1/churn/scores", json=body, headers=token(private, **writes, **claims)
        )
        assert response.status_code == 422, (claims, response.text)
        assert response.json()["code"] == "invalid_claim"
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert customer["customer_id"] not in stored_ids(engine)
    ok = client.post("/v1/churn/scores", json=body, headers=token(private, **writes))
    assert ok.status_code == 200
    # API keys: a tenant that cannot be stored is refused when the client is made, and at the
    # door for one stored before that check.
    with pytest.raises(ValueError, match="tenant"):
        create_client(app.state.engine, name="long", scopes=["scores:write"], tenant="t" * 65)
    info, key = create_client(app.state.engine, name="odd", scopes=["scores:write"])
    with engine.begin() as connection:
        connection.execute(
            api_client_table.update()
            .where(api_client_table.c.id == info.id)
            .values(tenant="bank\x01a")
        )
    refused = client.post("/v1/churn/scores", json=body, headers={"X-API-Key": key})
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_tenant"


# --- tenancy (OWASP API1) ------------------------------------------------------------------


def test_history_and_alerts_never_cross_tenants(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry, engine: Engine
) -> None:
    app, client = make_app(churn_alert_probability=1e-9)  # every churn score opens an alert
    bank_a = key_for(app.state.engine, tenant="bank-a")
    bank_b = key_for(app.state.engine, tenant="bank-b")
    untagged = key_for(app.state.engine)
    customer = churn_customer(sample_rows, registry)
    cid = customer["customer_id"]
    assert client.post(
        "/v1/churn/scores", json={"customers": [customer]}, headers=bank_a
    ).is_success
    settle_alerts(app)
    with engine.connect() as connection:
        tenants = set(connection.scalars(select(Score.tenant).where(Score.customer_id == cid)))
        alert_tenants = set(
            connection.scalars(select(Alert.tenant).where(Alert.customer_id == cid))
        )
    assert tenants == {"bank-a"} and alert_tenants == {"bank-a"}

    history = f"/v1/customers/{cid}/scores"
    assert client.get(history, headers=bank_a).json()["total"] == 1
    assert client.get(history, headers=bank_b).json()["total"] == 0
    assert client.get(history, headers=untagged).json()["total"] == 0

    (alert,) = client.get("/v1/alerts", params={"customer_id": cid}, headers=bank_a).json()["items"]
    assert (
        client.get("/v1/alerts", params={"customer_id": cid}, headers=bank_b).json()["total"] == 0
    )
    assert all(
        item["customer_id"] != cid
        for item in client.get("/v1/alerts", params={"limit": 500}, headers=bank_b).json()["items"]
    )
    alert_url = f"/v1/alerts/{alert['id']}"
    assert client.get(alert_url, headers=bank_b).status_code == 404
    assert client.get(alert_url, headers=untagged).status_code == 404
    steal = client.post(f"{alert_url}/acknowledge", json={"by": "rm-b"}, headers=bank_b)
    assert steal.status_code == 404
    assert client.get(alert_url, headers=bank_a).json()["status"] == "open"
    owned = client.post(f"{alert_url}/acknowledge", json={"by": "rm-a"}, headers=bank_a)
    assert owned.status_code == 200

    # Bank B scoring the same customer id neither reads nor writes bank A's alert, and gets
    # its own: one active alert per customer id and tenant.
    assert client.post(
        "/v1/churn/scores", json={"customers": [customer]}, headers=bank_b
    ).is_success
    settle_alerts(app)
    assert client.get(alert_url, headers=bank_a).json()["score_count"] == 1
    assert client.get(history, headers=bank_b).json()["total"] == 1
    (own,) = client.get("/v1/alerts", params={"customer_id": cid}, headers=bank_b).json()["items"]
    assert own["id"] != alert["id"] and own["status"] == "open" and own["score_count"] == 1
    assert client.post(
        "/v1/churn/scores", json={"customers": [customer]}, headers=bank_b
    ).is_success
    settle_alerts(app)
    assert client.get(f"/v1/alerts/{own['id']}", headers=bank_b).json()["score_count"] == 2
    assert client.get(alert_url, headers=bank_a).json()["score_count"] == 1

    # Isolation off: tags are labels only and every client reads every row.
    app, client = make_app(tenant_isolation=False)
    assert (
        client.get(history, headers=key_for(app.state.engine, tenant="bank-c")).json()["total"] == 3
    )


def test_alert_owner_is_the_caller_and_writers_see_only_what_changed(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    """Issue 20 item 12: the owner was whatever the body said, and alerts:write alone got the
    whole alert back (customer, reasons, history)."""
    app, client = make_app(churn_alert_probability=1e-9)
    engine = app.state.engine
    reader = key_for(engine)
    first, first_key = create_client(engine, name="rm-1", scopes=["alerts:write"])
    second, second_key = create_client(engine, name="rm-2", scopes=["alerts:write"])
    customer = churn_customer(sample_rows, registry)
    assert client.post("/v1/churn/scores", json={"customers": [customer]}, headers=reader)
    settle_alerts(app)
    (alert,) = client.get(
        "/v1/alerts", params={"customer_id": customer["customer_id"]}, headers=reader
    ).json()["items"]
    url = f"/v1/alerts/{alert['id']}"

    # The body names someone else: ignored, the caller owns it.
    acknowledged = client.post(
        f"{url}/acknowledge", json={"by": "rm-2"}, headers={"X-API-Key": first_key}
    )
    assert acknowledged.status_code == 200, acknowledged.text
    assert set(acknowledged.json()) == {"id", "status", "owner", "updated_at"}
    assert acknowledged.json()["owner"] == first.id
    assert acknowledged.json()["status"] == "acknowledged"
    # Claiming to be the owner does not make the second client one.
    stolen = client.post(
        f"{url}/resolve",
        json={"by": first.id, "outcome": "retained"},
        headers={"X-API-Key": second_key},
    )
    assert stolen.status_code == 409 and "only its owner" in stolen.json()["detail"]
    resolved = client.post(
        f"{url}/resolve", json={"outcome": "retained"}, headers={"X-API-Key": first_key}
    )
    assert resolved.status_code == 200 and set(resolved.json()) == {
        "id",
        "status",
        "owner",
        "updated_at",
    }
    detail = client.get(url, headers=reader).json()
    assert (detail["owner"], detail["resolved_by"]) == (first.id, first.id)
    assert [e["by"] for e in detail["history"][1:]] == [first.id, first.id]
    assert client.get("/v1/alerts", params={"owner": first.id}, headers=reader).json()["total"] == 1
    assert second.id != first.id


# --- abuse and bad input -------------------------------------------------------------------


# The limits below refill a token every 100 s: none comes back while a test runs, however slow
# the machine (at 0.5/s a loaded CI machine refilled one between the calls).
SLOW_REFILL_PER_S = 0.01


@ON_SQLITE_ONLY
def test_local_rate_limit_answers_429_with_retry_after(make_app: Any) -> None:
    app, client = make_app(rate_limit_per_s=SLOW_REFILL_PER_S, rate_limit_burst=2)
    headers = key_for(app.state.engine, "models:read")
    assert [client.get("/v1/models", headers=headers).status_code for _ in range(2)] == [200, 200]
    refused = client.get("/v1/models", headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["code"] == "rate_limited"
    # Limits are per client.
    assert client.get("/v1/models", headers=key_for(app.state.engine)).status_code == 200


def test_per_client_rate_override() -> None:
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    assert limiter.wait_s("a", rate_per_s=10, burst=1) == 0
    assert limiter.wait_s("a", rate_per_s=10, burst=1) == pytest.approx(0.1)
    now[0] = 0.1
    assert limiter.wait_s("a", rate_per_s=10, burst=1) == 0


@ON_SQLITE_ONLY
def test_redis_limits_are_shared_across_replicas(make_app: Any) -> None:
    limits = {"rate_limit_per_s": SLOW_REFILL_PER_S, "rate_limit_burst": 3}
    first, one = make_app(redis_url=REDIS_URL, **limits)
    _, two = make_app(redis_url=REDIS_URL, **limits)
    headers = key_for(first.state.engine, "models:read")
    statuses = [c.get("/v1/models", headers=headers).status_code for c in (one, two, one, two)]
    assert statuses == [200, 200, 200, 429]
    assert first.state.settings.redis_url is not None


@ON_SQLITE_ONLY
def test_redis_down_falls_back_to_local_limits(
    make_app: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    app, client = make_app(
        redis_url="redis://127.0.0.1:1/0", rate_limit_per_s=SLOW_REFILL_PER_S, rate_limit_burst=2
    )
    headers = key_for(app.state.engine, "models:read")
    statuses = [client.get("/v1/models", headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert "rate_limit_fallback" in capfd.readouterr().out


JSON = {"Content-Type": "application/json"}


@ON_SQLITE_ONLY
def test_body_limit_with_and_without_content_length(make_app: Any) -> None:
    app, client = make_app(max_body_bytes=2048)
    headers = {**key_for(app.state.engine), **JSON}
    big = b'{"customers": [' + b" " * 4096 + b"]}"
    response = client.post("/v1/churn/scores", content=big, headers=headers)
    assert response.status_code == 413 and response.json()["limit"] == 2048

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 512

    chunked = client.post("/v1/churn/scores", content=chunks(), headers=headers)
    assert chunked.status_code == 413
    alert_body = client.post("/v1/alerts/1/acknowledge", content=big, headers=headers)
    assert alert_body.status_code == 413


@ON_SQLITE_ONLY
def test_duplicate_keys_are_refused_and_nothing_is_saved(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry, engine: Engine
) -> None:
    app, client = make_app()
    customer = churn_customer(sample_rows, registry)
    text = json.dumps({"customers": [customer]})
    doubled = text.replace('"age": ', '"age": 99, "age": ', 1)
    response = client.post(
        "/v1/churn/scores", content=doubled, headers={**key_for(app.state.engine), **JSON}
    )
    assert response.status_code == 422
    assert "age" in response.json()["detail"]
    assert customer["customer_id"] not in stored_ids(engine)


@pytest.mark.parametrize(
    ("body", "duplicate"),
    [
        (b'{"a":1,"a":2}', "a"),
        (b'{"a" :1,"b":{"c":1,"c":2}}', "c"),
        (b'{"a":1,"s":"\\u003a","a":2}', "a"),
        (b'{"a":1,"s":"\\u0022:","a":2}', "a"),
        (b'{"s":"x\\":y"}', None),
        (b'{"a":NaN,"a":1}', "a"),
        (b'[{"a":1},{"a":1}]', None),
        (b'{"a":{"x":1},"a":2}', "a"),
        (b'{"a":99999999999999999999999,"a":1}', "a"),
        (b'{"k:1":1,"k:1":2}', "k:1"),
        (b"not json", None),
    ],
)
def test_duplicate_key_detection(body: bytes, duplicate: str | None) -> None:
    assert duplicate_key(body) == duplicate


@ON_SQLITE_ONLY
def test_slow_requests_time_out(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    app, client = make_app(request_timeout_s=0.2, idempotency_lock_s=1)

    async def slow(*_: Any, **__: Any) -> dict[str, Any]:
        await anyio.sleep(5)
        return {}

    monkeypatch.setattr(app.state.scoring, "score", slow)
    started = time.perf_counter()
    response = client.post("/v1/churn/scores", json={}, headers=key_for(app.state.engine))
    assert response.status_code == 504 and response.json()["code"] == "request_timeout"
    assert time.perf_counter() - started < 2


# --- idempotency ---------------------------------------------------------------------------


def test_idempotent_retry_replays_and_writes_nothing_new(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry, engine: Engine
) -> None:
    app, client = make_app()
    headers = {**key_for(app.state.engine), "Idempotency-Key": f"retry-{uuid.uuid4()}"}
    customer = churn_customer(sample_rows, registry)
    first = client.post("/v1/churn/scores", json={"customers": [customer]}, headers=headers)
    again = client.post("/v1/churn/scores", json={"customers": [customer]}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    with engine.connect() as connection:
        count = connection.scalar(
            select(func.count())
            .select_from(Score)
            .where(Score.customer_id == customer["customer_id"])
        )
        sealed = connection.scalars(select(IdempotencyRecord.response)).all()
    assert count == 1
    assert all(customer["customer_id"].encode() not in (s or b"") for s in sealed)

    other = client.post(
        "/v1/churn/scores", json={"customers": [customer], "reasons": 1}, headers=headers
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    # Keys are per client: another client's same key is a new request.
    elsewhere = {**key_for(app.state.engine), "Idempotency-Key": headers["Idempotency-Key"]}
    assert (
        "idempotent-replayed"
        not in client.post(
            "/v1/churn/scores", json={"customers": [customer]}, headers=elsewhere
        ).headers
    )
    bad_key = {**headers, "Idempotency-Key": "x" * 300}
    assert client.post("/v1/churn/scores", json={}, headers=bad_key).status_code == 422


def test_idempotency_concurrent_claim_expiry_and_failure(engine: Engine) -> None:
    store = IdempotencyStore(engine, ttl_s=0.3, lock_s=60)
    client_id = f"cl_{uuid.uuid4().hex[:8]}"
    material = KeyMaterial.derive(secret=b"s", client_id=client_id, key="k")
    request = material.request_digest("POST", "/v1/churn/scores", b"{}")
    first = store.claim(client_id=client_id, key_digest=material.digest, request_digest=request)
    assert first.outcome == "run"
    # A second try while the first runs is told to come back (409).
    second = store.claim(client_id=client_id, key_digest=material.digest, request_digest=request)
    assert second.outcome == "in_progress"
    assert first.record_id is not None
    store.complete(record_id=first.record_id, status=200, response=material.seal("a/b", b"ok"))
    replay = store.claim(client_id=client_id, key_digest=material.digest, request_digest=request)
    assert replay.outcome == "replay" and replay.status == 200
    assert material.open(replay.response or b"") == ("a/b", b"ok")
    time.sleep(0.35)
    # Expired: the key may be used again, even for another request.
    other = material.request_digest("POST", "/v1/churn/scores", b"[]")
    renewed = store.claim(client_id=client_id, key_digest=material.digest, request_digest=other)
    assert renewed.outcome == "run" and renewed.record_id is not None
    store.release(record_ids=[renewed.record_id])
    assert (
        store.claim(client_id=client_id, key_digest=material.digest, request_digest=request).outcome
        == "run"
    )
    assert store.purge_expired() >= 0


def nested(depth: int) -> bytes:
    """A scoring body whose arrays nest ``depth`` levels in all (the outer object included)."""
    return b'{"customers":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@ON_SQLITE_ONLY
def test_deeply_nested_json_is_refused_with_400(make_app: Any) -> None:
    """Issue 20 item 8: 254 to 1,023 levels answered 500 (orjson writes no deeper than 254)."""
    app, client = make_app()
    headers = {**key_for(app.state.engine), **JSON}
    for depth in (33, 100, 254, 255, 300, 1023, 1024, 5000):
        for path in ("/v1/churn/scores", "/v1/assessments", "/v1/alerts/1/acknowledge"):
            response = client.post(path, content=nested(depth), headers=headers)
            assert response.status_code == 400, (depth, path, response.text)
            assert response.json()["code"] == "json_too_deep"
            assert response.json()["limit"] == 32
    # At the limit the body reaches the endpoint, which says what is wrong with it.
    response = client.post("/v1/churn/scores", content=nested(32), headers=headers)
    assert response.status_code == 422
    _, lenient = make_app(max_json_depth=200, strict_json=True)
    response = lenient.post("/v1/churn/scores", content=nested(199), headers=headers)
    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":[[[1]]]}',
        b'{"a":"[[[[[[","b":[{"c":"]]]"}]}',
        b'{"a":"\\\\"}',
        b'{"a":"\\"[[[[[[[[","b":[[[1]]]}',
        b'{"a":"\\\\\\"[[[[","b":[[[1]]],"c":"\\\\"}',
        b"[[[[[[[[[[]]]]]]]]]]",
        b'[{"a":[{}]},[[[[[[]]]]]]]',
        b'{"s":"}}}}}}}}}}}]]]]]]]]","t":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}',
        b"{" + b'"k":{' * 12 + b'"x":1' + b"}" * 13,
    ],
)
def test_nesting_depth_is_measured_exactly(body: bytes) -> None:
    def depth(value: Any) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        return 0

    actual = depth(json.loads(body))
    for limit in range(1, 20):
        assert nesting_exceeds(body, limit) is (actual > limit), (limit, actual)
    assert duplicate_key(nested(500)) is None  # no longer raises beyond orjson's 254 levels


@ON_SQLITE_ONLY
def test_json_bodies_need_a_json_content_type(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry, engine: Engine
) -> None:
    """Issue 20 item 15: any Content-Type was accepted; nothing is saved without JSON's."""
    app, client = make_app()
    key = key_for(app.state.engine)
    customer = churn_customer(sample_rows, registry)
    body = json.dumps({"customers": [customer]}).encode()
    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/jsonx",
    ):
        headers = key if content_type is None else {**key, "Content-Type": content_type}
        for path in ("/v1/churn/scores", "/v1/alerts/1/acknowledge"):
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == 415, (content_type, path)
            assert response.json()["code"] == "unsupported_media_type"
    assert customer["customer_id"] not in stored_ids(engine)
    for content_type in ("application/json", "Application/JSON; charset=UTF-8"):
        headers = {**key, "Content-Type": content_type}
        assert client.post("/v1/churn/scores", content=body, headers=headers).status_code == 200


@ON_SQLITE_ONLY
def test_oversized_headers_are_refused_with_431(make_app: Any) -> None:
    """Issue 20 item 15: no limit on header size; public paths are limited too."""
    app, client = make_app(max_header_bytes=8192)
    key = key_for(app.state.engine)
    assert client.get("/v1/models", headers={**key, "X-Padding": "x" * 7000}).status_code == 200
    for path in ("/v1/models", "/healthz"):
        response = client.get(path, headers={**key, "X-Padding": "x" * 9000})
        assert response.status_code == 431, path
        assert response.json()["code"] == "headers_too_large"
        assert response.json()["limit"] == 8192
    many = {**key, **{f"X-Pad-{i}": "y" * 100 for i in range(100)}}
    assert client.get("/v1/models", headers=many).status_code == 431


def test_nul_in_an_id_is_422_naming_the_field(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    """Issue 20 item 9: a NUL in an id reached PostgreSQL, which cannot store it (500)."""
    app, client = make_app(churn_alert_probability=1e-9)
    headers = key_for(app.state.engine)
    customer = churn_customer(sample_rows, registry)
    assert client.post("/v1/churn/scores", json={"customers": [customer]}, headers=headers)
    settle_alerts(app)
    (alert,) = client.get(
        "/v1/alerts", params={"customer_id": customer["customer_id"]}, headers=headers
    ).json()["items"]

    def refused(response: Any, field: str) -> None:
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field]

    for bad in ("C\x00X", "\x00", "C\x01", "C\x7f"):
        path = f"/v1/customers/{quote(bad)}/scores"
        refused(client.get(path, headers=headers), "path.customer_id")
        refused(
            client.get("/v1/alerts", params={"customer_id": bad}, headers=headers),
            "query.customer_id",
        )
        refused(
            client.post(
                "/v1/churn/scores",
                json={"customers": [{**customer, "customer_id": bad}]},
                headers=headers,
            ),
            "customers[0].customer_id",
        )
    refused(
        client.post(
            f"/v1/alerts/{alert['id']}/acknowledge",
            json={"by": "rm-1", "note": "a\x00b"},
            headers=headers,
        ),
        "body.note",
    )
    # Ids the batch may have stored (any printable text) are still found; notes keep lines.
    assert client.get(f"/v1/customers/{quote('C X é')}/scores", headers=headers).is_success
    note = {"by": "rm-1", "note": "called\n\tback"}
    acknowledged = client.post(f"/v1/alerts/{alert['id']}/acknowledge", json=note, headers=headers)
    assert acknowledged.status_code == 200


def test_idempotent_request_in_flight_gets_409(
    make_app: Any, sample_rows: dict[str, pd.DataFrame], registry: ModelRegistry
) -> None:
    app, client = make_app()
    _, key = create_client(app.state.engine, name="core", scopes=["scores:write"])
    client_id = _client_id(app, key)
    body = json.dumps({"customers": [churn_customer(sample_rows, registry)]}).encode()
    material = KeyMaterial.derive(
        secret=middleware_secret(app), client_id=client_id, key="in-flight"
    )
    app.state.guard.idempotency.claim(
        client_id=client_id,
        key_digest=material.digest,
        request_digest=material.request_digest("POST", "/v1/churn/scores", body),
    )
    response = client.post(
        "/v1/churn/scores",
        content=body,
        headers={"X-API-Key": key, "Idempotency-Key": "in-flight", **JSON},
    )
    assert response.status_code == 409 and response.headers["retry-after"] == "1"


def middleware_secret(app: FastAPI) -> bytes:
    secret: bytes = app.state.guard.idempotency_secret
    return secret


# --- pseudonymisation, audit, headers, CORS ------------------------------------------------


def test_pseudonymised_ids_never_reach_the_database_or_the_logs(
    make_app: Any,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    engine: Engine,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app, client = make_app(pseudonym_secret=SECRET, log_level="INFO", churn_alert_probability=1e-9)
    headers = key_for(app.state.engine)
    customer = churn_customer(sample_rows, registry)
    cid = customer["customer_id"]
    scored = client.post("/v1/churn/scores", json={"customers": [customer]}, headers=headers)
    assert scored.json()["results"][0]["customer_id"] == cid  # the caller's own id
    settle_alerts(app)
    pseudonym = Pseudonymizer(SECRET.encode()).pseudonym(cid)
    ids = stored_ids(engine)
    assert cid not in ids and pseudonym in ids
    history = client.get(f"/v1/customers/{cid}/scores", headers=headers).json()
    assert history["total"] == 1 and history["customer_id"] == cid
    alerts = client.get("/v1/alerts", params={"customer_id": cid}, headers=headers).json()
    assert alerts["total"] == 1 and alerts["items"][0]["customer_id"] == pseudonym
    output = capfd.readouterr().out
    assert '"audit"' in output and pseudonym in output
    assert cid not in output
    # Rotation: rows stored under the old secret are still found.
    rotated = "another-pseudonymisation-secret-0123456789"
    app, client = make_app(pseudonym_secret=rotated, pseudonym_previous_secrets=[SECRET])
    history = client.get(f"/v1/customers/{cid}/scores", headers=key_for(app.state.engine))
    assert history.json()["total"] == 1


def test_pseudonyms_are_keyed_per_tenant_and_old_rows_still_read(
    make_app: Any,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    engine: Engine,
) -> None:
    """Issue 20 item 16: one customer had one pseudonym in every tenant, so a dump linked
    customers across tenants."""
    app, client = make_app(pseudonym_secret=SECRET, churn_alert_probability=1e-9)
    bank_a = key_for(app.state.engine, tenant="bank-a")
    bank_b = key_for(app.state.engine, tenant="bank-b")
    untagged = key_for(app.state.engine)
    customer = churn_customer(sample_rows, registry)
    cid = customer["customer_id"]
    for headers in (bank_a, bank_b, untagged):
        scored = client.post("/v1/churn/scores", json={"customers": [customer]}, headers=headers)
        assert scored.status_code == 200
    settle_alerts(app)
    pseudonymizer = Pseudonymizer(SECRET.encode())
    candidates = [
        pseudonymizer.pseudonym(cid),
        *(pseudonymizer.pseudonym(cid, tenant=t) for t in ("bank-a", "bank-b")),
    ]
    with engine.connect() as connection:
        stored = dict(
            connection.execute(
                select(Score.tenant, Score.customer_id).where(Score.customer_id.in_(candidates))
            ).all()
        )
    # Rows without a tenant keep the form `cvm score --persist` stores too.
    assert stored[None] == pseudonymizer.pseudonym(cid) == pseudonymizer.pseudonyms([cid])[0]
    assert stored["bank-a"] == pseudonymizer.pseudonym(cid, tenant="bank-a")
    assert stored["bank-b"] == pseudonymizer.pseudonym(cid, tenant="bank-b")
    assert len({stored[None], stored["bank-a"], stored["bank-b"]}) == 3
    for headers in (bank_a, bank_b, untagged):
        history = client.get(f"/v1/customers/{cid}/scores", headers=headers).json()
        assert history["total"] == 1
        alerts = client.get("/v1/alerts", params={"customer_id": cid}, headers=headers).json()
        assert alerts["total"] == 1
    # A tenant's row stored before tenant keys (the secret's own form) is still read.
    with engine.begin() as connection:
        connection.execute(
            update(Score)
            .where(Score.customer_id == stored["bank-a"])
            .values(customer_id=stored[None])
        )
    assert client.get(f"/v1/customers/{cid}/scores", headers=bank_a).json()["total"] == 1
    assert client.get(f"/v1/customers/{cid}/scores", headers=bank_b).json()["total"] == 1
    # And after a rotation, under the previous secret.
    rotated = "another-pseudonymisation-secret-0123456789"
    app, client = make_app(pseudonym_secret=rotated, pseudonym_previous_secrets=[SECRET])
    bank_b = key_for(app.state.engine, tenant="bank-b")
    assert client.get(f"/v1/customers/{cid}/scores", headers=bank_b).json()["total"] == 1


@ON_SQLITE_ONLY
def test_audit_line_says_who_what_and_the_outcome(
    make_app: Any,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines: list[dict[str, Any]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            lines.append({"event": event, **fields})

    app, client = make_app()
    monkeypatch.setattr(app.state.guard, "audit", Recorder())
    info, key = create_client(app.state.engine, name="core", scopes=["scores:write"], tenant="t1")
    customers = [churn_customer(sample_rows, registry, i) for i in range(3)]
    client.post("/v1/churn/scores", json={"customers": customers}, headers={"X-API-Key": key})
    client.get("/v1/models", headers={"X-API-Key": key})
    client.get("/v1/models")
    scored, forbidden, anonymous = lines
    assert scored["client"] == info.id and scored["tenant"] == "t1"
    assert scored["route"] == "/v1/churn/scores" and scored["status"] == 200
    assert scored["task"] == "churn" and scored["customers"] == 3
    assert scored["outcome"] == "ok" and scored["source"] == "testclient"
    assert forbidden["status"] == 403 and forbidden["outcome"] == "forbidden"
    assert anonymous["client"] is None and anonymous["status"] == 401
    assert anonymous["outcome"] == "unauthenticated"

    # Issue 20 item 13: errors were recorded as "ok", and a caller's X-Request-ID replaced the
    # service's, so two callers could give two requests one id.
    lines.clear()
    everything = key_for(app.state.engine)
    same = {"X-Request-ID": "chosen-1"}
    client.post("/v1/churn/scores", json={}, headers={**everything, **same})
    client.get("/v1/nothing-here", headers={**everything, **same})
    client.get("/v1/alerts/999999", headers=everything)
    client.post(
        "/v1/churn/scores", content=b"x", headers={**everything, "Content-Type": "text/plain"}
    )
    client.get("/v1/alerts", params={"stauts": "open"}, headers=everything)
    invalid, unknown_path, missing, _, _ = lines
    assert [line["outcome"] for line in lines] == [
        "invalid_input",
        "not_found",
        "not_found",
        "unsupported_media_type",
        "invalid_input",
    ]
    assert invalid["client_request_id"] == unknown_path["client_request_id"] == "chosen-1"
    assert invalid["request_id"] != unknown_path["request_id"]
    assert len({line["request_id"] for line in lines}) == len(lines)
    assert missing["client_request_id"] is None
    text = json.dumps(lines)
    assert key not in text and str(customers[0]["age"]) not in [str(v) for v in scored.values()]


@ON_SQLITE_ONLY
def test_security_headers_and_cors(make_app: Any) -> None:
    _, client = make_app()
    for response in (client.get("/healthz"), client.get("/v1/models")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers
    preflight = {"Origin": "https://crm.bank.example", "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin"
        not in client.options("/v1/churn/scores", headers=preflight).headers
    )

    _, client = make_app(cors_origins=["https://crm.bank.example"], hsts_max_age_s=31536000)
    answer = client.options("/v1/churn/scores", headers=preflight)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://crm.bank.example"
    assert client.get("/healthz").headers["strict-transport-security"].startswith("max-age=")


def test_cli_creates_lists_and_revokes_clients(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings

    monkeypatch.setenv("CVM_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(
            cli,
            ["clients", "create", "crm", "--scopes", "scores:read,alerts:read", "--tenant", "t9"],
        )
        assert created.exit_code == 0, created.output
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("cvm_")
        listed = runner.invoke(cli, ["clients", "list"])
        assert key[:12] in listed.output and key not in listed.output
        client_id = next(w for w in created.output.split() if w.startswith("cl_"))
        assert runner.invoke(cli, ["clients", "revoke", client_id]).exit_code == 0
        assert runner.invoke(cli, ["clients", "revoke", client_id]).exit_code == 2
        bad = runner.invoke(cli, ["clients", "create", "x", "--scopes", "root"])
        assert bad.exit_code == 2
    finally:
        get_settings.cache_clear()


@ON_SQLITE_ONLY
def test_docs_load_offline_without_a_key(make_app: Any) -> None:
    """The docs page and everything it loads come from this service, without a credential."""
    _, client = make_app()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.search(r"https?://", html) is None  # no CDN, no other host at all
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    spec = re.findall(r"""url: ?["']([^"']+)["']""", html)
    assert spec == ["/openapi.json"]
    assert {a.rsplit(".", 1)[-1] for a in assets} == {"js", "css", "png"}
    for url in [*assets, *spec]:
        assert url.startswith("/"), url
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.content
    script = next(url for url in assets if url.endswith(".js"))
    assert "SwaggerUIBundle" in client.get(script).text
    # The page's policy lets it load from this origin only.
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy
    assert "frame-ancestors 'none'" in policy
    # The rest of the folder is not public: only the files the page names.
    assert client.get("/docs/assets/__init__.py").status_code == 401
    assert client.get("/redoc").status_code == 401  # not served (it needs a CDN); no hint


def test_a_retry_after_an_outage_runs_instead_of_waiting_out_the_lock(
    make_app: Any,
    sample_rows: dict[str, pd.DataFrame],
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first try fails (503) while the database is down, so its claim cannot be released
    then; the retry, once the database answers, releases it and runs (no 409 for the lock)."""
    app, client = make_app()
    headers = {**key_for(app.state.engine), "Idempotency-Key": f"outage-{uuid.uuid4()}"}
    body = {"customers": [churn_customer(sample_rows, registry)]}
    scoring, guard = app.state.scoring, app.state.guard
    real_write, real_release = scoring.writer.write, guard.idempotency.release

    async def database_down(*args: Any, **kwargs: Any) -> None:
        raise PersistenceUnavailable("database down")

    def release_down(**kwargs: Any) -> None:
        raise OperationalError("DELETE", {}, Exception("database down"))

    monkeypatch.setattr(scoring.writer, "write", database_down)
    monkeypatch.setattr(guard.idempotency, "release", release_down)
    assert client.post("/v1/churn/scores", json=body, headers=headers).status_code == 503
    assert guard.unreleased  # kept for later
    monkeypatch.setattr(scoring.writer, "write", real_write)
    monkeypatch.setattr(guard.idempotency, "release", real_release)
    retried = client.post("/v1/churn/scores", json=body, headers=headers)
    assert retried.status_code == 200, retried.text
    assert not guard.unreleased
    assert app.state.settings.idempotency_lock_s < 60
