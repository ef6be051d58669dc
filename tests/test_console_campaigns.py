"""The console's campaigns pages (issue 19 item 2), on SQLite and PostgreSQL: who sees them,
the create -> check -> launch -> report flow, refusals shown on the form (422 naming the
field, 409 on a second launch), forged CSRF refused, another tenant's campaign 404, audit
lines, and both languages."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.campaigns import service as campaign_service
from app.campaigns import stats
from app.campaigns.states import Arm, CampaignStatus
from app.campaigns.tables import Campaign, CampaignMember
from app.console import labels
from app.console.campaign_form import errors_by_field, form_field, request_body
from app.contact.states import ContactChannel, ContactPurpose
from app.customers.lifecycle import LifecycleStage
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.conftest import ON_SQLITE_ONLY
from tests.console_support import CHEAP_HASHING, add_staff, csrf_of, log_in
from tests.db_support import touch
from tests.test_campaigns import Bank, book, respond

TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture(scope="module")
def console_app(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """One running app for the module; each test works in a tenant of its own."""
    settings = settings_for(database_url, auth_enabled=True, **CHEAP_HASHING)
    with TestClient(create_app(settings, registry), base_url="https://testserver") as client:
        yield client


@pytest.fixture
def tenant() -> str:
    return f"bank-{uuid.uuid4().hex[:8]}"


class AuditLines:
    """The audit logger, replaced: every line the middleware writes."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def _staff(app: Any, tenant: str, staff_id: str, roles: list[str]) -> TestClient:
    add_staff(app, tenant=tenant, staff_id=staff_id, roles=roles)
    client = TestClient(app, base_url="https://testserver")
    log_in(client, tenant=tenant, staff_id=staff_id)
    return client


def _bank(app: Any, tenant: str) -> Bank:
    """An API client of the tenant (the trail's responses come through /v1/events)."""
    _, key = create_client(app.state.engine, name="t", scopes=sorted(ALL_SCOPES), tenant=tenant)
    return Bank(TestClient(app, headers={"X-API-Key": key}), app.state.engine, tenant)


def _form(token: str, code: str, **changes: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "code": code,
        "name": "Winter retention",
        "action": "retention_offer",
        "channel": "email",
        "purpose": "retention",
        "stage_active": "active",
        "score_task": "churn",
        "score_min": "0",
        "priority_task": "churn",
        "starts_at": TODAY,
        "control_rate": "0.3",
        "cost_per_contact": "1.5",
        "budget": "100000",
    }
    form.update(changes)
    return form


def test_the_form_maps_to_the_api_request_and_errors_back_to_its_fields() -> None:
    body = request_body(_form("t", "X-1", tier_0="mass", ends_at="", volume_cap=" 10 "))
    assert body["target"] == {
        "stages": ["active"],
        "tiers": ["mass"],
        "scores": [{"task": "churn", "min": "0"}],
    }
    assert body["starts_at"] == f"{TODAY}T00:00:00Z" and "ends_at" not in body
    assert body["volume_cap"] == "10" and "csrf_token" not in body
    assert request_body({})["target"] == {} and request_body({})["starts_at"] is None
    assert form_field("body.target.tiers[0]") == "tiers"
    assert form_field("target.scores.0.min") == "score"
    assert form_field("control_rate") == "control_rate" and form_field("") == ""
    grouped = errors_by_field([{"field": "code", "message": "a"}, {"field": "", "message": "b"}])
    assert grouped == {"code": ["a"], "": ["b"]}


def test_every_campaign_word_from_data_has_its_label() -> None:
    """The enums the pages translate are all listed for extraction."""
    assert set(labels.CAMPAIGN_STATUSES) == {s.value for s in CampaignStatus}
    assert set(labels.CONTACT_CHANNELS) == {c.value for c in ContactChannel}
    assert set(labels.CONTACT_PURPOSES) == {p.value for p in ContactPurpose}
    assert set(labels.LIFECYCLE_STAGES) == {s.value for s in LifecycleStage}
    assert set(labels.ARMS) == {a.value for a in Arm}


@ON_SQLITE_ONLY
def test_roles_decide_who_sees_the_campaigns_pages(console_app: TestClient, tenant: str) -> None:
    app: Any = console_app.app
    for staff_id, role, sees in (
        ("adm", "administrator", True),
        ("bs", "branch_supervisor", True),
        ("rm", "relationship_manager", False),
        ("mo", "model_owner", False),
        ("ct", "complaints_team", False),
    ):
        client = _staff(app, tenant, staff_id, [role])
        queue = client.get("/console/queue")
        assert ('href="/console/campaigns"' in queue.text) is sees, role
        for path in ("/console/campaigns", "/console/campaigns/new"):
            assert client.get(path).status_code == (200 if sees else 404), (role, path)
        if not sees:
            posted = client.post(
                "/console/campaigns", data=_form(csrf_of(queue.text), f"NO-{staff_id}")
            )
            assert posted.status_code == 404
    with app.state.session_factory() as session:
        assert not session.scalar(
            select(func.count()).select_from(Campaign).where(Campaign.tenant == tenant)
        )


def _viewed_beside_a_commit(browser: TestClient, location: str) -> Any:
    """The page at ``location``, with another connection committing a write while the page
    computes its campaign report (between the page's reads and its write)."""
    app: Any = browser.app
    compute = campaign_service.report

    def commit_elsewhere() -> None:
        with app.state.engine.begin() as connection:
            touch(connection, "staff", "name")

    others: list[threading.Thread] = []

    def report_beside_a_commit(*args: Any, **kwargs: Any) -> Any:
        other = threading.Thread(target=commit_elsewhere)
        other.start()
        other.join(0.5)  # done, unless it waits for this page's write lock
        others.append(other)
        return compute(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(campaign_service, "report", report_beside_a_commit)
        page = browser.get(location)
    for other in others:
        other.join(10)
    assert others, "the page did not compute its report"
    return page


def test_create_check_launch_and_report_with_the_uplift_plot(
    console_app: TestClient, tenant: str
) -> None:
    app: Any = console_app.app
    bank = _bank(app, tenant)
    ids = book(bank, 400, churn=lambda i: (i % 100) / 100)
    admin = _staff(app, tenant, "adm", ["administrator"])
    new = admin.get("/console/campaigns/new")
    # Every field has its label.
    for field in ("code", "name", "action", "channel", "purpose", "score_task", "score_min"):
        assert f'<label for="{field}">' in new.text, field
    for field in ("control_rate", "volume_cap", "budget", "starts_at", "priority_task"):
        assert f'<label for="{field}">' in new.text, field
    assert 'name="stage_at_risk"' in new.text and 'name="tier_0"' in new.text
    token = csrf_of(new.text)
    audit = AuditLines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.state.guard, "audit", audit)
        created = admin.post(
            "/console/campaigns", data=_form(token, "WIN-1"), follow_redirects=False
        )
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    campaign_id = int(location.rsplit("/", 1)[1])
    (line,) = [e for e in audit.lines if e["event"] == "audit"]
    assert (line["campaign"], line["code"], line["action"]) == (campaign_id, "WIN-1", "create")
    assert line["tenant"] == tenant and line["client"] == "staff:adm"
    # The draft: its definition and the pre-launch check, with a launch button.
    page = admin.get(location)
    assert page.status_code == 200
    assert "Winter retention" in page.text and 'id="power-check"' in page.text
    assert f'action="/console/campaigns/{campaign_id}/launch"' in page.text
    assert "400" in page.text  # the segment's customers
    # The list, and its status filter.
    listed = admin.get("/console/campaigns")
    assert f'id="campaign-{campaign_id}"' in listed.text and "WIN-1" in listed.text
    audit = AuditLines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.state.guard, "audit", audit)
        drafts = admin.get("/console/campaigns?status=draft")
        admin.get(location)
    assert f'id="campaign-{campaign_id}"' in drafts.text
    views = [(e["view"], e.get("campaign"), e["status"]) for e in audit.lines if "view" in e]
    assert views == [("campaigns", None, 200), ("campaign", campaign_id, 200)]
    assert audit.lines[0]["campaign_status"] == "draft"
    assert (
        f'id="campaign-{campaign_id}"' not in admin.get("/console/campaigns?status=launched").text
    )
    assert admin.get("/console/campaigns?status=nonsense").status_code == 422
    # A forged or empty token launches nothing.
    for forged in ("", "forged"):
        refused = admin.post(
            f"/console/campaigns/{campaign_id}/launch", data={"csrf_token": forged}
        )
        assert refused.status_code == 403
    with app.state.session_factory() as session:
        assert session.get(Campaign, campaign_id).status == "draft"
    launched = admin.post(
        f"/console/campaigns/{campaign_id}/launch",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert launched.status_code == 303 and launched.headers["location"] == location
    # Again: 409, said on the campaign's page, nothing written twice.
    with app.state.session_factory() as session:
        members = session.scalar(
            select(func.count())
            .select_from(CampaignMember)
            .where(CampaignMember.campaign_id == campaign_id)
        )
    assert members == 400
    again = admin.post(f"/console/campaigns/{campaign_id}/launch", data={"csrf_token": token})
    assert again.status_code == 409 and "launched already" in again.text
    with app.state.session_factory() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(CampaignMember)
                .where(CampaignMember.campaign_id == campaign_id)
            )
            == members
        )
    # Responses from the trail: the treated with high scores accept more often.
    held = {c for c in ids if stats.in_control(c, TODAY[:7], 0.3)}
    answers = {
        c: "accepted"
        if ((i % 3 == 0) if (c not in held and i % 100 >= 50) else (i % 10 == 0))
        else "declined"
        for i, c in enumerate(ids)
    }
    respond(bank, "WIN-1", answers)
    # The first view reads, then computes and stores the report: another writer committing
    # while it computes must not fail it (a GET that writes takes the write lock first, so
    # the other writer waits for it instead).
    report = _viewed_beside_a_commit(admin, location)
    assert report.status_code == 200
    text = report.text
    for part in ('id="arms"', 'id="lift"', 'id="deciles"', 'id="cost"', "<svg"):
        assert part in text, part
    assert 'id="power-check"' not in text and "/launch" not in text
    conversions = sum(1 for c in ids if c not in held and answers[c] == "accepted")
    arms = text[text.index('id="arms"') : text.index("</table>", text.index('id="arms"'))]
    assert f'<td class="num">{400 - len(held)}</td><td class="num">{conversions}</td>' in arms
    # The plot's labels are text, and the cost per conversion is in euros.
    assert "WIN-1: conversion rate per arm" in text and "uplift by churn score decile" in text
    assert re.search(r"Cost per conversion</dt><dd>€\d", text)
    # Read again without a new response: the stored report and chart, nothing computed.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(campaign_service, "report", lambda *a, **k: pytest.fail("recomputed"))
        patch.setattr(campaign_service, "report_svg", lambda *a, **k: pytest.fail("redrawn"))
        stored = admin.get(location).text

    def chart(html: str) -> str:
        return html[html.index("<svg") : html.index("</svg>")]

    assert chart(stored) == chart(text)
    # In Chinese: the page and the plot's words.
    admin.post(
        "/console/language",
        data={"csrf_token": token, "language": "zh_CN", "back": location},
    )
    chinese = admin.get(location).text
    assert "营销活动" in chinese and "每组转化率" in chinese and "<svg" in chinese
    listed_zh = admin.get("/console/campaigns").text
    assert "<td>已启动</td>" in listed_zh and "<td>launched</td>" not in listed_zh


def test_refusals_come_back_on_the_form(console_app: TestClient, tenant: str) -> None:
    app: Any = console_app.app
    admin = _staff(app, tenant, "adm", ["administrator"])
    token = csrf_of(admin.get("/console/campaigns/new").text)
    # A control rate out of range: 422, the message next to the field, what was typed kept.
    bad = admin.post("/console/campaigns", data=_form(token, "BAD-1", control_rate="1.5"))
    assert bad.status_code == 422
    assert 'id="control_rate-error"' in bad.text and 'aria-invalid="true"' in bad.text
    assert 'value="BAD-1"' in bad.text and "less than 1" in bad.text
    # A tier the policy lacks (the domain's refusal) and a missing start date.
    tier = admin.post("/console/campaigns", data=_form(token, "BAD-2", tier_9="gold-ish"))
    assert tier.status_code == 422 and 'id="tiers-error"' in tier.text
    assert "no tier" in tier.text
    start = admin.post("/console/campaigns", data=_form(token, "BAD-3", starts_at=""))
    assert start.status_code == 422 and 'id="starts_at-error"' in start.text
    # The model's own rule (ends before it starts): shown for the whole form.
    order = admin.post("/console/campaigns", data=_form(token, "BAD-4", ends_at="2000-01-01"))
    assert order.status_code == 422 and "ends_at must be after starts_at" in order.text
    # A taken code: 409 on the form.
    assert (
        admin.post(
            "/console/campaigns", data=_form(token, "DUP-1"), follow_redirects=False
        ).status_code
        == 303
    )
    taken = admin.post("/console/campaigns", data=_form(token, "DUP-1"))
    assert taken.status_code == 409 and "DUP-1" in taken.text
    # A forged or empty token drafts nothing.
    for forged in ("", "forged"):
        assert admin.post("/console/campaigns", data=_form(forged, "FORGED")).status_code == 403
    with app.state.session_factory() as session:
        codes = set(session.scalars(select(Campaign.code).where(Campaign.tenant == tenant)).all())
    assert codes == {"DUP-1"}


def test_another_tenants_campaign_is_not_found(console_app: TestClient, tenant: str) -> None:
    app: Any = console_app.app
    other = f"other-{uuid.uuid4().hex[:8]}"
    theirs = _staff(app, other, "adm", ["administrator"])
    token = csrf_of(theirs.get("/console/campaigns/new").text)
    created = theirs.post("/console/campaigns", data=_form(token, "THEIRS"), follow_redirects=False)
    campaign_id = int(created.headers["location"].rsplit("/", 1)[1])
    assert theirs.get(f"/console/campaigns/{campaign_id}").status_code == 200
    mine = _staff(app, tenant, "bs", ["branch_supervisor"])
    assert mine.get(f"/console/campaigns/{campaign_id}").status_code == 404
    assert "THEIRS" not in mine.get("/console/campaigns").text
    my_token = csrf_of(mine.get("/console/campaigns").text)
    launch = mine.post(f"/console/campaigns/{campaign_id}/launch", data={"csrf_token": my_token})
    assert launch.status_code == 404
    with app.state.session_factory() as session:
        assert session.get(Campaign, campaign_id).status == "draft"
    for path in ("/console/campaigns/0", "/console/campaigns/abc", f"/console/campaigns/{2**70}"):
        assert mine.get(path).status_code == 404
    # Unauthenticated: to the login page.
    anonymous = TestClient(app, base_url="https://testserver")
    answer = anonymous.get("/console/campaigns", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
