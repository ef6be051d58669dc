"""The audit trail kept in the database (audit_store): migration 0027 up, down and up; the
lines of API calls and console views stored per tenant; the administrators' audit log page
with its filters, paging and both languages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, text

from app.db import migrate
from app.db.session import create_db_engine
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.security import audit
from app.security.api_keys import create_client
from app.security.tables import AuditRecord
from tests.console_support import CHEAP_HASHING, add_staff, csrf_of, log_in
from tests.db_support import (
    migrated_postgres_database,
    temporary_postgres_database,
    temporary_sqlite_database,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest) -> Iterator[Engine]:
    temporary = (
        temporary_postgres_database if request.param == "postgres" else temporary_sqlite_database
    )
    with temporary() as url:
        engine = create_db_engine(url)
        yield engine
        engine.dispose()


def _insert(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit_record (at, tenant, client, auth, method, route, status,"
                " outcome, request_id, details) VALUES ('2026-12-06 10:00:00+00:00', 't',"
                " 'cl_1', 'api_key', 'GET', '/v1/prospects', 200, 'ok', 'r', '{}')"
            )
        )


def test_migration_0027_up_down_up_with_rows(empty_database: Engine) -> None:
    url = empty_database.url.render_as_string(hide_password=False)
    migrate.upgrade(url, "0027")
    _insert(empty_database)
    migrate.downgrade(url, "0023")
    assert "audit_record" not in inspect(empty_database).get_table_names()
    migrate.upgrade(url, "0027")
    _insert(empty_database)
    with empty_database.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM audit_record")) == 1


def test_the_store_is_refused_on_sqlite(settings_for: Any) -> None:
    with pytest.raises(ValueError, match="audit_store needs PostgreSQL"):
        settings_for("sqlite:///x.db", audit_store=True)


@pytest.fixture(scope="module")
def stored_app(settings_for: Any, registry: ModelRegistry) -> Iterator[TestClient]:
    """An app keeping its audit lines, on a PostgreSQL database of its own (the store is
    PostgreSQL only: see Settings.audit_store)."""
    with migrated_postgres_database() as url:
        settings = settings_for(url, auth_enabled=True, audit_store=True, **CHEAP_HASHING)
        app = create_app(settings, registry)
        with TestClient(app, base_url="https://testserver") as client:
            yield client


def _flush(app: Any) -> None:
    app.state.guard.audit_store.flush()


@pytest.mark.postgres
def test_api_calls_and_console_views_are_kept_per_tenant(stored_app: TestClient) -> None:
    app: Any = stored_app.app
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    info, key = create_client(
        app.state.engine, name="reader", scopes=["customers:read"], tenant=tenant
    )
    client_id, headers = info.id, {"X-API-Key": key}
    assert (
        stored_app.get("/v1/prospects?segment=premium.wealthy", headers=headers).status_code == 200
    )
    assert stored_app.get("/v1/prospects?segment=gold.x", headers=headers).status_code == 422
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"])
    browser = TestClient(app, base_url="https://testserver")
    log_in(browser, tenant=tenant, staff_id="bs-1")
    browser.get("/console/pyramid")
    _flush(app)
    with app.state.session_factory() as session:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.tenant == tenant).order_by(AuditRecord.id)
        ).all()
    api = [r for r in rows if r.route == "/v1/prospects"]
    assert [(r.client, r.auth, r.method, r.status) for r in api] == [
        (client_id, "api_key", "GET", 200),
        (client_id, "api_key", "GET", 422),
    ]
    assert api[0].details["segment"] == "premium.wealthy" and api[0].request_id
    assert api[1].outcome == "invalid_input"
    (view,) = [r for r in rows if r.details.get("view") == "pyramid"]
    assert (view.client, view.auth, view.route) == ("staff:bs-1", "console", "/pyramid")
    assert "source" not in view.details  # the caller's address stays in the log line


@pytest.mark.postgres
def test_the_audit_log_page_for_administrators(stored_app: TestClient) -> None:
    app: Any = stored_app.app
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    _, key = create_client(app.state.engine, name="r", scopes=["customers:read"], tenant=tenant)
    for _ in range(22):
        stored_app.get("/v1/prospects", headers={"X-API-Key": key})
    _, other = create_client(app.state.engine, name="o", scopes=["customers:read"], tenant="x")
    stored_app.get("/v1/prospects", headers={"X-API-Key": other})  # never shown here
    add_staff(app, tenant=tenant, staff_id="ad-1", roles=["administrator"])
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"])
    supervisor = TestClient(app, base_url="https://testserver")
    log_in(supervisor, tenant=tenant, staff_id="bs-1")
    assert supervisor.get("/console/audit").status_code == 404
    assert 'href="/console/audit"' not in supervisor.get("/console/queue").text
    admin = TestClient(app, base_url="https://testserver")
    log_in(admin, tenant=tenant, staff_id="ad-1")
    _flush(app)
    page = admin.get("/console/audit?action=/v1/prospects").text
    assert "22 lines." in page and page.count("GET /v1/prospects") == 20  # a page of 20
    assert "?page=2&amp;action=%2Fv1%2Fprospects" in page  # the filter kept across pages
    second = admin.get("/console/audit?page=2&action=/v1/prospects").text
    assert second.count("GET /v1/prospects") == 2
    # A long log is counted only so far past the page (a million lines are not counted per
    # view): with the count capped at 5, page 1 counts 21 of the 22 and says "more than 20".
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audit, "COUNT_CAP", 5)
        capped = admin.get("/console/audit?action=/v1/prospects").text
        assert "More than 20 lines." in capped and "?page=2&amp;" in capped
        last = admin.get("/console/audit?page=2&action=/v1/prospects").text
        assert "22 lines." in last and "?page=3&amp;" not in last
    # By actor: the staff member's own console views only.
    mine = admin.get("/console/audit?actor=staff:bs-1").text
    assert "/queue" in mine and "GET /v1/prospects" not in mine
    # By day: today has them, tomorrow and yesterday do not.
    today = datetime.now(UTC).date()
    assert "22 lines." in admin.get(f"/console/audit?action=/v1/prospects&since={today}").text
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    assert "0 lines." in admin.get(f"/console/audit?action=/v1/prospects&since={tomorrow}").text
    assert "0 lines." in admin.get(f"/console/audit?action=/v1/prospects&until={yesterday}").text
    bad = admin.get("/console/audit?since=2026-02-30")
    assert bad.status_code == 422 and "since" in bad.text
    assert admin.get("/console/audit?actor=" + "x" * 65).status_code == 422
    token = csrf_of(page)
    chinese = admin.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN", "back": "/console/audit"},
    )
    assert "审计日志" in chinese.text and "操作者" in chinese.text
