"""The operator console: logins, sessions, CSRF, the queue, the customer page, languages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from app.alerts.states import AlertStatus, Outcome
from app.alerts.tables import Alert
from app.casework.states import ComplaintStatus
from app.cli.main import cli
from app.config import get_settings
from app.console import labels
from app.console.i18n import Formats, Language, translations_dir
from app.console.service import LoginPolicy, Passwords, current_user
from app.customers.schemas import EventType
from app.db.migrate import upgrade
from app.db.session import create_db_engine, create_session_factory
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from tests.console_support import (
    CHEAP_HASHING,
    PASSWORD,
    add_staff,
    csrf_of,
    customer_with_alert,
    log_in,
)
from tests.db_support import temporary_sqlite_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def console_app(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """One running app for the module: every churn score opens an alert, three wrong
    passwords lock an account. Each test works in a tenant of its own."""
    settings = settings_for(
        database_url,
        auth_enabled=True,
        churn_alert_probability=1e-9,
        console_max_failures=3,
        **CHEAP_HASHING,
    )
    app = create_app(settings, registry)
    with TestClient(app, base_url="https://testserver") as client:
        yield client


@pytest.fixture
def browser(console_app: TestClient) -> TestClient:
    """A fresh cookie jar on the running app (a browser of its own)."""
    return TestClient(console_app.app, base_url="https://testserver")


@pytest.fixture
def tenant() -> str:
    return f"bank-{uuid.uuid4().hex[:8]}"


def test_unauthenticated_requests_go_to_the_login_page(browser: TestClient) -> None:
    assert str(browser.get("/console/").url).endswith("/console/login")
    for path in ("/console/queue", "/console/customers/C-1"):
        response = browser.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/login"
    response = browser.post("/console/alerts/1/acknowledge", data={}, follow_redirects=False)
    assert response.status_code == 303
    page = browser.get("/console/login")
    assert page.status_code == 200
    assert 'label for="password"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_one_message_for_unknown_and_wrong_and_a_lockout(browser: TestClient, tenant: str) -> None:
    add_staff(browser.app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])  # type: ignore[arg-type]
    unknown = log_in(browser, tenant=tenant, staff_id="nobody", password="whatever it is")
    wrong = log_in(browser, tenant=tenant, staff_id="rm-1", password="not the password")
    other_tenant = log_in(browser, tenant="elsewhere", staff_id="rm-1")
    for response in (unknown, wrong, other_tenant):
        assert response.status_code == 401
        assert "Unknown staff id or wrong password." in response.text
    # One wrong so far (the unknown id and the other tenant count for no one); the third locks
    # the account: the right password no longer works.
    for attempt in ("still not it", "nor this"):
        assert log_in(browser, tenant=tenant, staff_id="rm-1", password=attempt).status_code == 401
    locked = log_in(browser, tenant=tenant, staff_id="rm-1")
    assert locked.status_code == 401
    assert "Unknown staff id or wrong password." in locked.text
    assert "cvm_console" not in locked.cookies


def test_forged_and_empty_tokens_are_refused(browser: TestClient, tenant: str) -> None:
    add_staff(browser.app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])  # type: ignore[arg-type]
    browser.get("/console/login")  # sets the double-submit cookie
    for token in ("", "forged-token"):
        response = browser.post(
            "/console/login",
            data={"csrf_token": token, "tenant": tenant, "staff_id": "rm-1", "password": PASSWORD},
            follow_redirects=False,
        )
        assert response.status_code == 403
    assert log_in(browser, tenant=tenant, staff_id="rm-1").status_code == 303
    for token in ("", "forged-token"):
        response = browser.post(
            "/console/language", data={"csrf_token": token, "language": "zh_CN"}
        )
        assert response.status_code == 403
        assert "reload the page" in response.text
    assert "My queue" in browser.get("/console/queue").text  # still English


def test_a_relationship_manager_works_an_alert_to_resolved(
    browser: TestClient,
    tenant: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    app: Any = browser.app
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"], principal=None)
    customer_id = customer_with_alert(app, registry, sample_rows, tenant=tenant, manager="rm-1")
    assert log_in(browser, tenant=tenant, staff_id="rm-1").headers["location"] == "/console/queue"
    queue = browser.get("/console/queue")
    assert customer_id in queue.text and "Acknowledge" in queue.text
    with app.state.session_factory() as session:
        # The churn alert (its salary also opened a first-salary need alert).
        alert = session.scalars(
            select(Alert).where(Alert.customer_id == customer_id, Alert.reason == "churn")
        ).one()
    token = csrf_of(queue.text)
    response = browser.post(
        f"/console/alerts/{alert.id}/acknowledge",
        data={"csrf_token": token, "back": "/console/queue"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/console/queue"
    queue = browser.get("/console/queue")
    assert f'id="outcome-{alert.id}"' in queue.text  # a labelled select to resolve it
    # Not an outcome: refused naming the field, nothing changed.
    refused = browser.post(
        f"/console/alerts/{alert.id}/resolve", data={"csrf_token": token, "outcome": "won"}
    )
    assert refused.status_code == 422 and "outcome" in refused.text
    response = browser.post(
        f"/console/alerts/{alert.id}/resolve",
        data={"csrf_token": token, "outcome": "retained", "note": "called", "back": "//evil"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/console/queue"  # never another site
    with app.state.session_factory() as session:
        stored = session.get(Alert, alert.id)
        assert stored is not None
        assert stored.status == AlertStatus.RESOLVED.value
        assert stored.owner == stored.resolved_by == "staff:rm-1"
        assert stored.outcome == Outcome.RETAINED.value
    missing = browser.post(
        "/console/alerts/999999999/resolve", data={"csrf_token": token, "outcome": "lost"}
    )
    assert missing.status_code == 404


def test_customer_page_scope_chart_and_audit(
    browser: TestClient,
    tenant: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    app: Any = browser.app
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"], branch="south")
    mine = customer_with_alert(app, registry, sample_rows, tenant=tenant, manager="rm-1")
    theirs = customer_with_alert(app, registry, sample_rows, tenant=tenant, manager="rm-2")
    elsewhere = customer_with_alert(app, registry, sample_rows, tenant="other-bank", manager="rm-1")
    log_in(browser, tenant=tenant, staff_id="rm-1")
    logs: list[dict[str, Any]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            logs.append({"event": event, **fields})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.state.guard, "audit", Recorder())
        page = browser.get(f"/console/customers/{mine}")
    assert page.status_code == 200
    assert "<svg" in page.text and "<text" in page.text  # the chart's labels stay text
    assert "Churn" in page.text or "churn" in page.text
    assert "€2,450.50" in page.text  # the transaction, in the configured currency
    (line,) = [entry for entry in logs if entry.get("event") == "audit"]
    assert line["customer"] == mine and line["client"] == "staff:rm-1"
    assert line["tenant"] == tenant and line["auth"] == "console"
    for hidden in (theirs, elsewhere, "no-such-customer"):
        assert browser.get(f"/console/customers/{hidden}").status_code == 404
    # A supervisor of another branch sees none of them; the same 404.
    supervisor = TestClient(app, base_url="https://testserver")
    log_in(supervisor, tenant=tenant, staff_id="bs-1")
    assert supervisor.get(f"/console/customers/{mine}").status_code == 404
    assert browser.get(f"/console/customers/{mine}?page=0").status_code == 422


def test_language_switch_per_user_and_formats(browser: TestClient, tenant: str) -> None:
    add_staff(browser.app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])  # type: ignore[arg-type]
    log_in(browser, tenant=tenant, staff_id="rm-1")
    token = csrf_of(browser.get("/console/queue").text)
    assert (
        browser.post(
            "/console/language", data={"csrf_token": token, "language": "klingon"}
        ).status_code
        == 422
    )
    response = browser.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN", "back": "/console/queue"},
    )
    assert response.status_code == 200 and "我的待办" in response.text
    assert 'lang="zh-CN"' in response.text
    # Remembered with the user: a new login in another browser is in Chinese too.
    other = TestClient(browser.app, base_url="https://testserver")
    log_in(other, tenant=tenant, staff_id="rm-1")
    assert "我的待办" in other.get("/console/queue").text
    assert Formats(Language.EN, "EUR").money(1234.5) == "€1,234.50"
    assert Formats(Language.ZH_CN, "CNY").money(1234.5) == "¥1,234.50"
    assert Formats(Language.EN, "CNY").money(1234.5) == "CN¥1,234.50"
    assert Formats(Language.ZH_CN, "EUR").money(1234.5) == "€1,234.50"
    assert (
        Formats(Language.ZH_CN, "CNY")
        .when(datetime(2026, 12, 6, 9, 30, tzinfo=UTC))
        .startswith("2026年12月6日")
    )
    assert Formats(Language.EN, "EUR").duration(timedelta(days=-3)) == "3 days ago"


def test_sessions_time_out_when_idle_or_old(browser: TestClient, tenant: str) -> None:
    app: Any = browser.app
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])
    log_in(browser, tenant=tenant, staff_id="rm-1")
    token = browser.cookies["cvm_console"]
    policy = LoginPolicy(
        passwords=Passwords(time_cost=1, memory_kib=8),
        max_failures=3,
        lockout=timedelta(minutes=15),
        idle=timedelta(minutes=30),
        max_age=timedelta(hours=12),
    )
    now = datetime.now(UTC)
    with app.state.session_factory() as session:
        assert current_user(session, token=token, policy=policy, now=now) is not None
        assert (
            current_user(session, token=token, policy=policy, now=now + timedelta(minutes=31))
            is None
        )
        # Gone for good: even "now" it no longer opens.
        assert current_user(session, token=token, policy=policy, now=now) is None
    assert browser.get("/console/queue", follow_redirects=False).status_code == 303


def test_every_message_has_both_languages() -> None:
    package = ROOT / "app" / "console"
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "N_": None}
    extracted = {
        message
        for _, _, message, _, _ in extract_from_dir(
            str(package), method_map, options_map=options, keywords=keywords
        )
    }
    assert len(extracted) > 50
    po_path = translations_dir() / "zh_CN" / "LC_MESSAGES" / "messages.po"
    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    translated = {m.id: m.string for m in catalog if m.id and not m.fuzzy}
    missing = sorted(str(m) for m in extracted if not translated.get(m))
    assert missing == [], "run `make messages` and translate these"
    with po_path.with_suffix(".mo").open("rb") as handle:
        compiled = {m.id: m.string for m in read_mo(handle) if m.id}
    assert compiled == translated, "the .mo is stale: run `make messages`"
    # The words shown from data cover every value of their enums.
    assert set(labels.ALERT_STATUSES) == {s.value for s in AlertStatus}
    assert set(labels.OUTCOMES) == {o.value for o in Outcome}
    assert set(labels.COMPLAINT_STATUSES) == {s.value for s in ComplaintStatus}
    assert set(labels.EVENT_TYPES) == {t.value for t in EventType}
    assert set(labels.TASKS) == {t.value for t in Task}


def test_cvm_staff_create_makes_a_user_who_can_log_in(
    monkeypatch: pytest.MonkeyPatch, settings_for: Any, registry: ModelRegistry
) -> None:
    runner = CliRunner()
    with temporary_sqlite_database() as url:
        upgrade(url)
        monkeypatch.setenv("CVM_DATABASE_URL", url)
        for name, value in CHEAP_HASHING.items():
            monkeypatch.setenv(f"CVM_{name.upper()}", str(value))
        get_settings.cache_clear()
        try:
            args = [
                "staff",
                "create",
                "admin-1",
                "--name",
                "Li Wei",
                "--email",
                "li@bank.example",
                "--branch",
                "head-office",
                "--role",
                "administrator",
                "--password-stdin",
            ]
            short = runner.invoke(cli, args, input="short\n")
            assert short.exit_code == 2 and "12 to 256" in short.output
            engine = create_db_engine(url)
            with create_session_factory(engine)() as session:
                from app.casework.staff import find_staff

                assert find_staff(session, tenant=None, staff_id="admin-1") is None
            engine.dispose()
            result = runner.invoke(cli, args, input=f"{PASSWORD}\n")
            assert result.exit_code == 0, result.output
            result = runner.invoke(
                cli, ["staff", "set-password", "nobody", "--password-stdin"], input=f"{PASSWORD}\n"
            )
            assert result.exit_code == 2 and "no staff member" in result.output
            app = create_app(settings_for(url, auth_enabled=True, **CHEAP_HASHING), registry)
            with TestClient(app, base_url="https://testserver") as browser:
                response = log_in(browser, tenant=None, staff_id="admin-1")
                assert response.status_code == 303
                assert "Li Wei" in browser.get("/console/queue").text
        finally:
            get_settings.cache_clear()
