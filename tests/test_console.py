"""The operator console: logins, sessions, CSRF, the queue, the customer page, languages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from typer.testing import CliRunner

from app.actions.policy import ActionKind
from app.actions.rank import RemovalStage
from app.alerts.states import AlertCause, AlertStatus, Outcome
from app.alerts.tables import Alert
from app.casework.routing import RoutingPolicy, route_new_alerts
from app.casework.states import ComplaintStatus
from app.cli.main import cli
from app.config import get_settings
from app.console import labels
from app.console.i18n import Formats, Language, load_translations, translations_dir
from app.console.service import LoginPolicy, Passwords, current_user
from app.contact.states import ContactOutcome
from app.customers.lifecycle import LifecycleStage
from app.customers.schemas import EventType, Severity
from app.db.session import create_db_engine, create_session_factory
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.repository import TenantScope
from app.security.api_keys import create_client
from app.value.policy import Measure
from tests.conftest import ON_SQLITE_ONLY
from tests.console_support import (
    CHEAP_HASHING,
    PASSWORD,
    add_staff,
    csrf_of,
    customer_with_alert,
    log_in,
)
from tests.db_support import another_writer_committing, migrated_sqlite_database

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


@ON_SQLITE_ONLY
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


@ON_SQLITE_ONLY
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


def section(html: str, title_id: str) -> str:
    """The HTML of the page's section headed by ``title_id``."""
    start = html.index(f'<section aria-labelledby="{title_id}">')
    return html[start : html.index("</section>", start)]


def test_customer_page_shows_the_360_in_both_languages(browser: TestClient, tenant: str) -> None:
    app: Any = browser.app
    client, key = create_client(
        app.state.engine,
        name="rm-desk",
        scopes=["events:write", "customers:read", "casework:read", "casework:write"],
        tenant=tenant,
    )
    api = TestClient(app, headers={"X-API-Key": key})
    # rm-1 receives complaints through their own credential.
    add_staff(
        app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"], principal=client.id
    )
    customer_id = f"CON-{uuid.uuid4().hex[:10]}"
    trail: list[dict[str, Any]] = [
        {  # rm-1's customer, with what the models need to rank next best actions
            "type": "customer_profile",
            "occurred_at": "2026-11-02T09:00:00Z",
            "branch": "north",
            "relationship_manager": "rm-1",
            "age": 41,
            "income": 52000,
            "occupation": "employee",
            "region": "north",
        },
        {
            "type": "account_opened",
            "occurred_at": "2026-11-03T10:00:00Z",
            "product": "term_deposit",
        },
        {
            "type": "balance_snapshot",
            "occurred_at": "2026-11-29T21:00:00Z",
            "product": "term_deposit",
            "balance": 31234.5,
        },
        {
            "type": "transaction",
            "occurred_at": "2026-11-30T09:15:00Z",
            "amount": 2450.5,
            "direction": "credit",
            "channel": "transfer",
            "category": "salary",
        },
    ]
    events = [
        {"event_id": f"{customer_id}-{n}", "customer_id": customer_id, **fields}
        for n, fields in enumerate(trail)
    ]
    assert api.post("/v1/events", json={"events": events}).status_code in (200, 201, 202)
    complaint = {
        "customer_id": customer_id,
        "channel": "branch",
        "category": "fees",
        "product": "current_account",
        "severity": "high",
        "amount_at_stake": 100.0,
        "description": "Charged twice.",
    }
    response = api.post("/v1/complaints", json=complaint)
    assert response.status_code == 201, response.text
    complaint_id = response.json()["id"]
    contact = {"customer_id": customer_id, "channel": "phone", "purpose": "service"}
    response = api.post("/v1/contact/records", json={**contact, "outcome": "positive"})
    assert response.status_code == 201, response.text
    # The same id in another tenant is another customer: its contact never shows here.
    _, other_key = create_client(
        app.state.engine, name="other", scopes=["casework:write"], tenant="other-bank"
    )
    response = TestClient(app, headers={"X-API-Key": other_key}).post(
        "/v1/contact/records", json={**contact, "outcome": "negative"}
    )
    assert response.status_code == 201, response.text
    record = api.get(f"/v1/customers/{customer_id}").json()
    response = api.get(f"/v1/customers/{customer_id}/next-best-actions?channel=sms")
    assert response.status_code == 200, response.text
    actions = response.json()
    log_in(browser, tenant=tenant, staff_id="rm-1")

    page = browser.get(f"/console/customers/{customer_id}?channel=sms")
    assert page.status_code == 200
    en = Formats(Language.EN, "EUR")
    holdings = section(page.text, "holdings-title")
    assert "term_deposit" in holdings and en.money(31234.5) in holdings  # €31,234.50
    tier = section(page.text, "tier-title")
    policy = record["tier_of_record"]
    assert policy is not None and f"<dd>{policy['tier']} (" in tier
    for measure, gap in (policy["gap_to_next"] or {}).items():
        shown = en.number(gap) if measure == "products_held" else en.money(gap)
        assert f"<td>{measure}</td>" in tier and shown in tier
    assert "Lifecycle stage" in page.text and record["stage"]["current"] in page.text
    # The same actions the API ranks for the channel, in its order; none ranked a second way.
    offered = section(page.text, "actions-title")
    assert 'option value="sms" selected' in offered
    names = [item["action"] for item in actions["offered"]]
    assert [offered.index(f"<td>{name}</td>") for name in names] == sorted(
        offered.index(f"<td>{name}</td>") for name in names
    )
    for removed in actions["not_offered"]:
        assert f"<td>{removed['action']}</td>" in offered
    assert names or actions["not_offered"], "the API ranked nothing: the check would be empty"
    complaints = section(page.text, "customer-complaints-title")
    assert f"#{complaint_id}" in complaints and ">high<" in complaints
    contacts = section(page.text, "contacts-title")
    assert ">phone<" in contacts and ">positive<" in contacts and client.id in contacts
    assert ">negative<" not in contacts and contacts.count("<time ") == 1
    assert "€2,450.50" in section(page.text, "events-title")
    bad = browser.get(f"/console/customers/{customer_id}?channel=pigeon")
    assert bad.status_code == 422 and "channel" in bad.text

    token = csrf_of(page.text)
    switched = browser.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN"},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    zh_page = browser.get(f"/console/customers/{customer_id}")
    assert zh_page.status_code == 200
    zh = Formats(Language.ZH_CN, "EUR")
    text = zh_page.text
    for heading in ("持有产品", "客户等级与升级差距", "下一最佳行动", "投诉", "联系记录", "事件"):
        assert f">{heading}</h2>" in text, heading
    assert zh.money(31234.5) in section(text, "holdings-title")
    assert ">高<" in section(text, "customer-complaints-title")  # severity high
    assert ">电话<" in section(text, "contacts-title")
    assert ">积极<" in section(text, "contacts-title")
    stage = load_translations(Language.ZH_CN).pgettext(
        labels.STAGE_CONTEXT, record["stage"]["current"]
    )
    assert f"<dd>{stage} (" in text and "生命周期阶段" in text


def test_the_queue_names_each_alerts_reason_and_reads_a_fixed_number_of_statements(
    browser: TestClient,
    tenant: str,
    registry: ModelRegistry,
    sample_rows: dict[str, pd.DataFrame],
) -> None:
    app: Any = browser.app
    client, key = create_client(
        app.state.engine, name="desk", scopes=["casework:read", "casework:write"], tenant=tenant
    )
    api = TestClient(app, headers={"X-API-Key": key})
    add_staff(app, tenant=tenant, staff_id="bs-1", roles=["branch_supervisor"], principal=client.id)
    log_in(browser, tenant=tenant, staff_id="bs-1")
    # The console's pages on an engine of their own: the app's background threads (alert
    # processor, model watcher) share the app's, and their statements are not the page's.
    (console,) = [r.app for r in app.routes if getattr(r, "path", "") == "/console"]
    engine = create_db_engine(app.state.settings.database_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def queue_statements() -> tuple[int, str]:
        statements.clear()
        page = browser.get("/console/queue")
        assert page.status_code == 200
        return len(statements), page.text

    def one_more_customer() -> str:
        customer_id = customer_with_alert(app, registry, sample_rows, tenant=tenant, manager="rm-9")
        body = {
            "customer_id": customer_id,
            "channel": "branch",
            "category": "fees",
            "product": "current_account",
            "severity": "low",
            "amount_at_stake": 10.0,
            "description": "Charged twice.",
        }
        assert api.post("/v1/complaints", json=body).status_code == 201
        with app.state.session_factory() as session:
            route_new_alerts(
                session, policy=RoutingPolicy(), now=datetime.now(UTC), tenant=TenantScope(tenant)
            )
        return customer_id

    kept = console.state.console
    console.state.console = replace(kept, session_factory=create_session_factory(engine))
    try:
        first = one_more_customer()
        few, page = queue_statements()
        alerts = section(page, "alerts-title")
        assert ">Alerts</h2>" in alerts and "Churn alerts" not in page
        # Its churn alert and the first-salary need its salary opened, each with its reason.
        assert alerts.count(f">{first}</a>") == 2
        assert '<td class="reason">churn</td>' in alerts
        assert '<td class="reason">first_salary: ' in alerts
        assert section(page, "routed-title").count('<tr id="routed-') == 2
        for _ in range(2):
            one_more_customer()
        many, page = queue_statements()
        assert section(page, "complaints-title").count("/console/customers/") == 3
        assert section(page, "alerts-title").count('<td class="reason">') == 6
        assert section(page, "routed-title").count('<tr id="routed-') == 6
        assert many == few, statements  # one read per kind of row, whatever the rows on the page
        token = csrf_of(page)
        switched = browser.post(
            "/console/language",
            data={"csrf_token": token, "language": "zh_CN"},
            follow_redirects=False,
        )
        assert switched.status_code == 303
        zh = section(browser.get("/console/queue").text, "alerts-title")
        assert ">预警</h2>" in zh and '<td class="reason">流失风险</td>' in zh
        assert '<td class="reason">首次代发工资\uff1a' in zh  # rule\uff1a product
    finally:
        console.state.console = kept
        engine.dispose()


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
    keywords = {"_": None, "N_": None, "NC_": ((1, "c"), 2), "pgettext": ((1, "c"), 2)}
    extracted = {
        (context, message)
        for _, _, message, _, context in extract_from_dir(
            str(package), method_map, options_map=options, keywords=keywords
        )
    }
    assert len(extracted) > 50
    po_path = translations_dir() / "zh_CN" / "LC_MESSAGES" / "messages.po"
    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    translated = {(m.context, m.id): m.string for m in catalog if m.id and not m.fuzzy}
    missing = sorted(str(m) for m in extracted if not translated.get(m))
    assert missing == [], "run `make messages` and translate these"
    with po_path.with_suffix(".mo").open("rb") as handle:
        compiled = {(m.context, m.id): m.string for m in read_mo(handle) if m.id}
    assert compiled == translated, "the .mo is stale: run `make messages`"
    # The words shown from data cover every value of their enums.
    assert set(labels.ALERT_STATUSES) == {s.value for s in AlertStatus}
    assert set(labels.OUTCOMES) == {o.value for o in Outcome}
    assert set(labels.COMPLAINT_STATUSES) == {s.value for s in ComplaintStatus}
    assert set(labels.EVENT_TYPES) == {t.value for t in EventType}
    assert set(labels.TASKS) == {t.value for t in Task}
    assert set(labels.LIFECYCLE_STAGES) == {s.value for s in LifecycleStage}
    assert set(labels.ALERT_CAUSES) == {c.value for c in AlertCause}
    assert set(labels.MEASURES) == {m.value for m in Measure}
    assert set(labels.ACTION_KINDS) == {k.value for k in ActionKind}
    assert set(labels.REMOVAL_STAGES) == {s.value for s in RemovalStage}
    assert set(labels.CONTACT_OUTCOMES) == {o.value for o in ContactOutcome}
    assert set(labels.SEVERITIES) == {s.value for s in Severity}
    # "prospect" is a task (the prospect score) and a lifecycle stage: one word in English,
    # two in Chinese, told apart by the stage's message context.
    zh = load_translations(Language.ZH_CN)
    assert zh.gettext("prospect") == "潜客价值"
    assert zh.pgettext(labels.STAGE_CONTEXT, "prospect") == "潜在客户"


def test_cvm_staff_create_makes_a_user_who_can_log_in(
    monkeypatch: pytest.MonkeyPatch, settings_for: Any, registry: ModelRegistry
) -> None:
    runner = CliRunner()
    with migrated_sqlite_database() as url:
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


def test_a_database_failure_is_a_503_page_not_a_500(
    settings_for: Any, registry: ModelRegistry
) -> None:
    """The console answers as the API does when the database fails under a page: 503, retry."""
    with migrated_sqlite_database() as url:
        app = create_app(settings_for(url, auth_enabled=True), registry)
        with TestClient(app, base_url="https://testserver") as browser:
            add_staff(app, tenant="bank-a", staff_id="rm-1", roles=["relationship_manager"])
            log_in(browser, tenant="bank-a", staff_id="rm-1")
            assert browser.get("/console/queue").status_code == 200
            with app.state.engine.begin() as connection:  # the queue's table goes missing
                connection.exec_driver_sql("ALTER TABLE alert RENAME TO alert_gone")
            try:
                failed = browser.get("/console/queue")
            finally:
                with app.state.engine.begin() as connection:
                    connection.exec_driver_sql("ALTER TABLE alert_gone RENAME TO alert")
            assert failed.status_code == 503
            assert "retry later" in failed.text and "<html" in failed.text
            assert browser.get("/console/queue").status_code == 200


def test_a_page_waits_for_another_writer_instead_of_failing(
    settings_for: Any, registry: ModelRegistry
) -> None:
    """Every page reads the console session, then writes its idle clock: on SQLite, with
    another writer committing in between, a deferred transaction would fail (503); the page
    takes the write lock first and waits."""
    with migrated_sqlite_database() as url:
        app = create_app(settings_for(url, auth_enabled=True), registry)
        with TestClient(app, base_url="https://testserver") as browser:
            add_staff(app, tenant="bank-a", staff_id="rm-1", roles=["relationship_manager"])
            log_in(browser, tenant="bank-a", staff_id="rm-1")
            with another_writer_committing(app.state.engine, "staff", "name"):
                page = browser.get("/console/queue")
            assert page.status_code == 200
