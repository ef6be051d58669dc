"""The console in a real browser: Debian's chromium driven by Playwright, the app on a port.

A relationship manager logs in with the keyboard, works an alert from the queue to resolved,
opens the customer's page, switches to Chinese; every request the pages made went to the app
itself. Screenshots go to var/screenshots (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn
from sqlalchemy import select

from app.alerts.states import AlertStatus
from app.alerts.tables import Alert
from app.http.app import create_app
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from tests.alert_support import settle_alerts
from tests.conftest import customer_record
from tests.console_support import CHEAP_HASHING, PASSWORD, add_staff
from tests.db_support import migrated_sqlite_database

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
# Without the background-networking flags Chromium keeps trying to reach the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CVM_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (.ci/run installs it and sets CVM_REQUIRE_BROWSER)",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def served(settings_for: Any, registry: ModelRegistry) -> Iterator[tuple[str, Any]]:
    """The app on a real port (uvicorn in a thread) over a fresh SQLite database."""
    with migrated_sqlite_database() as url:
        settings = settings_for(
            url, auth_enabled=True, churn_alert_probability=1e-9, **CHEAP_HASHING
        )
        app = create_app(settings, registry)
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", app
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def _post(url: str, body: dict[str, Any], key: str) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _seed(base: str, app: Any, registry: ModelRegistry, rows: pd.DataFrame) -> str:
    """A customer of rm-1 with a transaction, a churn score and so an open alert."""
    tenant = "bank-a"
    add_staff(app, tenant=tenant, staff_id="rm-1", roles=["relationship_manager"])
    _, key = create_client(
        app.state.engine, name="feed", scopes=["events:write", "scores:write"], tenant=tenant
    )
    customer_id = f"BR-{uuid.uuid4().hex[:8]}"
    profile = {
        "event_id": f"{customer_id}-p",
        "type": "customer_profile",
        "customer_id": customer_id,
        "occurred_at": "2026-11-02T08:00:00Z",
        "branch": "north",
        "relationship_manager": "rm-1",
    }
    payment = {
        "event_id": f"{customer_id}-t",
        "type": "transaction",
        "customer_id": customer_id,
        "occurred_at": "2026-11-30T09:15:00Z",
        "amount": 2450.5,
        "direction": "credit",
        "channel": "transfer",
        "category": "salary",
    }
    _post(f"{base}/v1/events", {"events": [profile, payment]}, key)
    model = registry.get(Task.CHURN)
    assert model is not None
    record = customer_record(next(iter(rows.iterrows()))[1], model.schema, customer_id)
    _post(f"{base}/v1/churn/scores", {"customers": [record], "reasons": 4}, key)
    settle_alerts(app)
    return customer_id


def test_a_relationship_manager_works_the_console_in_a_browser(
    served: tuple[str, Any], registry: ModelRegistry, sample_rows: dict[str, pd.DataFrame]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, app = served
    customer_id = _seed(base, app, registry, sample_rows["existing"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    profile = tempfile.mkdtemp(prefix="cvm-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                locale="en-GB",
            )
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{base}/console/queue")
            expect(page).to_have_url(f"{base}/console/login")
            # The keyboard alone: labelled fields, Tab between them, Enter to send.
            page.get_by_label("Bank (tenant), if any").fill("bank-a")
            page.keyboard.press("Tab")
            page.keyboard.type("rm-1")
            page.keyboard.press("Tab")
            page.keyboard.type(PASSWORD)
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{base}/console/queue")
            # The churn alert's row (the salary also opened a first-salary need alert).
            with app.state.session_factory() as session:
                churn = session.scalars(
                    select(Alert).where(Alert.customer_id == customer_id, Alert.reason == "churn")
                ).one()
            row = page.locator(f"#alert-{churn.id}")
            row.get_by_role("button", name="Acknowledge").click()
            row.get_by_label("Outcome").select_option("retained")
            row.get_by_label("Note").fill("matched the rate")
            page.screenshot(path=str(SCREENSHOTS / "console-queue-en.png"), full_page=True)
            row.get_by_role("button", name="Resolve").click()
            expect(page.locator(f"#alert-{churn.id}")).to_have_count(0)
            page.get_by_role("link", name="My queue").click()
            with app.state.session_factory() as session:
                alert = session.get_one(Alert, churn.id)
            assert alert.status == AlertStatus.RESOLVED.value and alert.owner == "staff:rm-1"

            page.goto(f"{base}/console/customers/{customer_id}")
            expect(page.locator("figure svg")).to_have_count(1)
            expect(page.get_by_role("heading", name=f"Customer {customer_id}")).to_be_visible()
            expect(page.locator("main section h2")).to_have_text(
                [
                    "Holdings",
                    "Tier and next-tier gap",
                    "Latest scores",
                    "Next best actions",
                    "Complaints",
                    "Contact history",
                    "Events",
                ]
            )
            page.screenshot(path=str(SCREENSHOTS / "console-customer-en.png"), full_page=True)
            page.get_by_label("Language").select_option("zh_CN")
            page.get_by_role("button", name="Switch").click()
            expect(page.get_by_role("heading", name=f"客户 {customer_id}")).to_be_visible()
            expect(page.get_by_text("最新评分")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "console-customer-zh.png"), full_page=True)
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert requested and all(url.startswith(f"{base}/console/") for url in requested), [
        url for url in requested if not url.startswith(base)
    ]


def _seed_value_and_prospects(
    base: str, app: Any, registry: ModelRegistry, prospects: pd.DataFrame
) -> None:
    """Tiers of record for three customers over two months, and scored prospects."""
    tenant = "bank-a"
    _, key = create_client(
        app.state.engine, name="book", scopes=["events:write", "scores:write"], tenant=tenant
    )
    snapshots = [
        {
            "event_id": f"PB-{letter}-{month}",
            "type": "balance_snapshot",
            "customer_id": f"PB-{letter}",
            "occurred_at": f"{month}-15T09:00:00Z",
            "product": "savings",
            "balance": balance,
        }
        for letter, month, balance in (
            ("A", "2026-10", 30_000.0),
            ("B", "2026-10", 600_000.0),
            ("C", "2026-10", 1_000.0),
        )
    ]
    _post(f"{base}/v1/events", {"events": snapshots}, key)
    _retier(app, tenant)
    upgrade = {**snapshots[0], "event_id": "PB-A-2026-11", "occurred_at": "2026-11-15T09:00:00Z"}
    _post(f"{base}/v1/events", {"events": [{**upgrade, "balance": 150_000.0}]}, key)
    _retier(app, tenant)
    model = registry.get(Task.PROSPECT)
    assert model is not None
    records = []
    for i, (_, row) in enumerate(prospects.head(12).iterrows()):
        record = customer_record(row, model.schema, f"PR-{i:02d}")
        record["lifecycle"] = "prospect"
        record["income"] = (5_000.0, 45_000.0, 150_000.0)[i % 3]
        records.append(record)
    _post(f"{base}/v1/prospect/scores", {"customers": records}, key)


def _retier(app: Any, tenant: str) -> None:
    from datetime import UTC, datetime

    from app.value.service import apply_tiers

    with app.state.session_factory() as session:
        apply_tiers(
            session,
            policy=app.state.tier_policy,
            tenant=tenant,
            dry_run=False,
            now=datetime.now(UTC),
        )


def _store_drift_run(app: Any, tenant: str) -> None:
    """The churn champion's drift run, as `cvm monitor` stores it (the page reads it)."""
    from datetime import UTC, datetime

    from app.modelops.monitoring import monitor, record_run
    from app.modelops.service import champions
    from app.scoring.repository import TenantScope

    scope = TenantScope(tenant)
    with app.state.session_factory() as session:
        version = champions(session)[Task.CHURN]
        drift = monitor(
            session, task=Task.CHURN, version=version, since=None, limit=5000, tenant=scope
        )
        record_run(session, report=drift, tenant=scope, now=datetime.now(UTC))


def test_an_administrator_reads_the_value_prospect_and_model_pages_in_both_languages(
    served: tuple[str, Any], registry: ModelRegistry, sample_rows: dict[str, pd.DataFrame]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, app = served
    _seed(base, app, registry, sample_rows["existing"])  # a churn score for the drift report
    _seed_value_and_prospects(base, app, registry, sample_rows["prospect"])
    _store_drift_run(app, "bank-a")
    add_staff(app, tenant="bank-a", staff_id="ad-1", roles=["administrator"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    profile = tempfile.mkdtemp(prefix="cvm-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                locale="en-GB",
            )
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{base}/console/login")
            page.get_by_label("Bank (tenant), if any").fill("bank-a")
            page.get_by_label("Staff id").fill("ad-1")
            page.get_by_label("Password").fill(PASSWORD)
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{base}/console/queue")
            for language, names in (
                ("en", ("Value pyramid", "Prospects", "Model monitoring")),
                ("zh", ("价值金字塔", "潜在客户", "模型监控")),
            ):
                pyramid, prospects, models = names
                page.get_by_role("link", name=pyramid).click()
                expect(page.get_by_role("heading", name=pyramid, exact=True)).to_be_visible()
                expect(page.locator("figure svg")).to_have_count(1)
                page.screenshot(
                    path=str(SCREENSHOTS / f"console-pyramid-{language}.png"), full_page=True
                )
                page.get_by_role("link", name=prospects, exact=True).click()
                expect(page.locator("tbody tr", has_text="PR-")).to_have_count(12)
                # The segment filter, by keyboard: the select, then its button.
                page.get_by_label("Segment" if language == "en" else "细分", exact=True).focus()
                page.keyboard.press("ArrowDown")
                page.keyboard.press("Tab")
                page.keyboard.press("Enter")
                expect(page).to_have_url(f"{base}/console/prospects?segment=premium.wealthy")
                page.screenshot(
                    path=str(SCREENSHOTS / f"console-prospects-{language}.png"), full_page=True
                )
                page.get_by_role("link", name=models).click()
                expect(page.locator("figure svg")).to_have_count(1)  # the PSI chart
                page.screenshot(
                    path=str(SCREENSHOTS / f"console-models-{language}.png"), full_page=True
                )
                if language == "en":
                    page.get_by_label("Language").select_option("zh_CN")
                    page.get_by_role("button", name="Switch").click()
                    expect(page.get_by_role("heading", name="模型监控")).to_be_visible()
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert requested and all(url.startswith(f"{base}/console/") for url in requested), [
        url for url in requested if not url.startswith(base)
    ]


def test_a_supervisor_drafts_launches_and_reads_a_campaign_in_both_languages(
    served: tuple[str, Any],
) -> None:
    from datetime import UTC, datetime

    from playwright.sync_api import expect, sync_playwright

    from app.campaigns import stats
    from tests.test_campaigns import Bank, book

    base, app = served
    # The book's customers go straight to the tables (book() needs no API client).
    bank = Bank(client=None, engine=app.state.engine, tenant="bank-a")  # type: ignore[arg-type]
    ids = book(bank, 200, churn=lambda i: (i % 100) / 100)
    add_staff(app, tenant="bank-a", staff_id="bs-1", roles=["branch_supervisor"])
    _, key = create_client(app.state.engine, name="t", scopes=["events:write"], tenant="bank-a")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    profile = tempfile.mkdtemp(prefix="cvm-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                locale="en-GB",
            )
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{base}/console/login")
            page.get_by_label("Bank (tenant), if any").fill("bank-a")
            page.get_by_label("Staff id").fill("bs-1")
            page.get_by_label("Password").fill(PASSWORD)
            page.keyboard.press("Enter")
            page.get_by_role("link", name="Campaigns").click()
            page.get_by_role("link", name="Draft a campaign").click()
            page.get_by_label("Code (the campaign id responses carry)").fill("WIN-B")
            page.get_by_label("Name").fill("Winter retention")
            page.get_by_label("Action offered").fill("retention_offer")
            page.get_by_label("Rank the audience by the score of").select_option("churn")
            page.get_by_label("Control group share (0 to 1, default 0.02)").fill("0.3")
            page.keyboard.press("Enter")  # submits the form from its field
            expect(page.get_by_role("heading", name="Pre-launch check")).to_be_visible()
            campaign_url = page.url
            page.get_by_role("button", name="Launch: write the contact list").click()
            expect(page.get_by_role("heading", name="Report")).to_be_visible()
            period = datetime.now(UTC).strftime("%Y-%m")
            at = datetime.now(UTC).isoformat()
            events = [
                {
                    "event_id": f"WIN-B-{c}",
                    "type": "campaign_response",
                    "customer_id": c,
                    "occurred_at": at,
                    "campaign_id": "WIN-B",
                    "response": "accepted"
                    if (i % 3 == 0 if not stats.in_control(c, period, 0.3) else i % 10 == 0)
                    else "declined",
                }
                for i, c in enumerate(ids)
            ]
            _post(f"{base}/v1/events", {"events": events}, key)
            page.goto(campaign_url)
            expect(page.locator("figure svg")).to_have_count(1)  # the uplift plot
            expect(page.locator("#deciles tbody tr")).to_have_count(10)
            page.screenshot(path=str(SCREENSHOTS / "console-campaign-en.png"), full_page=True)
            page.get_by_role("link", name="All campaigns").click()
            expect(page.locator("tbody tr", has_text="WIN-B")).to_have_count(1)
            page.screenshot(path=str(SCREENSHOTS / "console-campaigns-en.png"), full_page=True)
            page.get_by_label("Language").select_option("zh_CN")
            page.get_by_role("button", name="Switch").click()
            expect(page.get_by_role("heading", name="营销活动")).to_be_visible()
            expect(page.locator("tbody tr", has_text="已启动")).to_have_count(1)
            page.screenshot(path=str(SCREENSHOTS / "console-campaigns-zh.png"), full_page=True)
            page.get_by_role("link", name="WIN-B").click()
            expect(page.locator("figure svg text", has_text="每组转化率").first).to_be_attached()
            page.screenshot(path=str(SCREENSHOTS / "console-campaign-zh.png"), full_page=True)
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert requested and all(url.startswith(f"{base}/console/") for url in requested), [
        url for url in requested if not url.startswith(base)
    ]
