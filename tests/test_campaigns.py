"""Campaigns with control groups (issue 18 item 5) over HTTP, on SQLite and PostgreSQL:
bad input, the contact policy over a whole audience, the volume cap filled highest priority
first, a launch written once, and the report with responses ingested as trail events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.campaigns import stats
from app.campaigns.tables import CampaignMember
from app.contact import service as contact
from app.contact.service import ContactPolicy
from app.contact.states import ContactChannel, ContactOutcome, ContactPurpose
from app.contact.tables import ContactRecord, DoNotContact
from app.customers.tables import CustomerStage
from app.db.session import writing
from app.http.app import create_app
from app.scoring.registry import ModelRegistry
from app.scoring.tables import Score
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from app.value.tables import TierMovement
from tests.conftest import ON_SQLITE_ONLY

NOW = datetime.now(UTC)


@dataclass
class Bank:
    """A running app, a client of one fresh tenant, and the database behind it."""

    client: TestClient
    engine: Engine
    tenant: str


def running_bank(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Bank]:
    """An app with authentication on and an all-scopes key of a tenant no other test uses (a
    campaign targets its tenant's whole book)."""
    app = create_app(settings_for(database_url, auth_enabled=True), registry)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    _, key = create_client(app.state.engine, name="camp", scopes=sorted(ALL_SCOPES), tenant=tenant)
    with TestClient(app, headers={"X-API-Key": key}) as client:
        yield Bank(client, app.state.engine, tenant)


@pytest.fixture
def bank(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Bank]:
    """A bank of its own for each test."""
    yield from running_bank(database_url, settings_for, registry)


@pytest.fixture(scope="module")
def refusing_bank(database_url: str, settings_for: Any, registry: ModelRegistry) -> Iterator[Bank]:
    """One bank for the refusals: a refused request stores nothing, so they share it."""
    yield from running_bank(database_url, settings_for, registry)


def book(
    bank: Bank,
    count: int,
    *,
    stage: str = "active",
    tier: str = "mass",
    churn: Any = None,
    prefix: str = "C",
) -> list[str]:
    """``count`` customers of the tenant with a stage, a tier of record and a churn score
    (``churn(i)``; none when ``churn`` is None)."""
    ids = [f"{prefix}{i:05d}" for i in range(count)]
    with bank.engine.begin() as connection:
        connection.execute(
            insert(CustomerStage),
            [
                {
                    "tenant": bank.tenant,
                    "customer_id": c,
                    "stage": stage,
                    "since": NOW,
                    "at_risk": False,
                    "risk_assessed_at": None,
                    "review_at": None,
                    "updated_at": NOW,
                }
                for c in ids
            ],
        )
        connection.execute(
            insert(TierMovement),
            [
                {
                    "tenant": bank.tenant,
                    "customer_id": c,
                    "from_tier": None,
                    "to_tier": tier,
                    "reason": "initial",
                    "policy_version": "t",
                    "month": "2026-11",
                    "run_id": "r",
                    "moved_at": NOW,
                }
                for c in ids
            ],
        )
        if churn is not None:
            connection.execute(
                insert(Score),
                [
                    {
                        "request_id": "seed",
                        "task": "churn",
                        "customer_id": c,
                        "model_name": "m",
                        "model_version": "1",
                        "outputs": {},
                        "reasons": [],
                        "features": {},
                        "created_at": NOW,
                        "tenant": bank.tenant,
                        "source": "batch",
                        "stage": stage,
                        "probability": churn(i),
                        "band": None,
                        "alert": None,
                    }
                    for i, c in enumerate(ids)
                ],
            )
    return ids


def campaign_body(code: str, **changes: Any) -> dict[str, Any]:
    """A campaign on the whole book by default, starting now."""
    body: dict[str, Any] = {
        "code": code,
        "name": "test campaign",
        "action": "retention_offer",
        "channel": "email",
        "purpose": "retention",
        "target": {},
        "starts_at": NOW.isoformat(),
    }
    body.update(changes)
    return body


def create(bank: Bank, **changes: Any) -> dict[str, Any]:
    answer = bank.client.post(
        "/v1/campaigns", json=campaign_body(f"K-{uuid.uuid4().hex[:8]}", **changes)
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"target": {"colour": "red"}}, "target.colour"),
        ({"target": {"scores": [{"task": "churn", "minimum": 0.2}]}}, "target.scores[0].minimum"),
        ({"control_rate": -0.1}, "control_rate"),
        ({"control_rate": 1.0}, "control_rate"),
        ({"control_rate": 1.5}, "control_rate"),
        ({"volume_cap": -1}, "volume_cap"),
        ({"budget": -5}, "budget"),
        ({"target": {"tiers": ["mass", "gold"]}}, "target.tiers[1]"),
        ({"target": {"stages": ["sleeping"]}}, "target.stages[0]"),
    ],
)
@ON_SQLITE_ONLY
def test_bad_input_is_422_naming_the_field(
    refusing_bank: Bank, change: dict[str, Any], field: str
) -> None:
    answer = refusing_bank.client.post("/v1/campaigns", json=campaign_body("BAD-1", **change))
    assert answer.status_code == 422, answer.text
    assert f"body.{field}" in answer.json()["detail"]
    assert f"body.{field}" in [e["field"] for e in answer.json()["errors"]]


def test_unknown_campaigns_are_404_and_a_taken_code_or_a_draft_report_409(bank: Bank) -> None:
    client = bank.client
    assert client.get("/v1/campaigns/987654321").status_code == 404
    assert client.post("/v1/campaigns/987654321/launch").status_code == 404
    assert client.get("/v1/campaigns/987654321/report").status_code == 404
    assert client.get("/v1/campaigns/987654321/check").status_code == 404
    created = create(bank)
    again = client.post("/v1/campaigns", json=campaign_body(created["code"]))
    assert again.status_code == 409 and again.json()["code"] == "campaign_code_taken"
    report = client.get(f"/v1/campaigns/{created['id']}/report")
    assert report.status_code == 409 and report.json()["code"] == "campaign_not_launched"
    # Another tenant sees none of it.
    _, other_key = create_client(bank.engine, name="other", scopes=sorted(ALL_SCOPES), tenant="x")
    other = client.get(f"/v1/campaigns/{created['id']}", headers={"X-API-Key": other_key})
    assert other.status_code == 404
    # Scopes: reading needs campaigns:read, writing campaigns:write.
    _, reader = create_client(bank.engine, name="r", scopes=["campaigns:read"], tenant=bank.tenant)
    assert client.get(f"/v1/campaigns/{created['id']}", headers={"X-API-Key": reader}).is_success
    refused = client.post(f"/v1/campaigns/{created['id']}/launch", headers={"X-API-Key": reader})
    assert refused.status_code == 403


def test_the_bulk_contact_check_agrees_with_may_contact(bank: Bank) -> None:
    ids = book(bank, 12)
    with Session(bank.engine) as session:
        session.add(
            DoNotContact(
                tenant=bank.tenant,
                customer_id=ids[0],
                reason="asked",
                recorded_by="t",
                created_at=NOW,
            )
        )
        for days in (1, 2, 3):  # three negatives: suppressed for 30 days
            session.add(
                ContactRecord(
                    tenant=bank.tenant,
                    customer_id=ids[1],
                    channel="phone",
                    purpose="retention",
                    outcome=ContactOutcome.NEGATIVE.value,
                    at=NOW - timedelta(days=days),
                    recorded_by="t",
                )
            )
        session.add(
            ContactRecord(
                tenant=bank.tenant,
                customer_id=ids[2],
                channel="email",
                purpose="marketing",
                outcome=None,
                at=NOW - timedelta(days=2),
                recorded_by="t",
            )
        )
        session.add(
            ContactRecord(
                tenant=bank.tenant,
                customer_id=ids[3],
                channel="email",
                purpose="marketing",
                outcome=None,
                at=NOW - timedelta(days=9),
                recorded_by="t",
            )
        )
        session.commit()
        policy = ContactPolicy()
        for channel in (ContactChannel.EMAIL, ContactChannel.PHONE):
            for purpose in ContactPurpose:
                bulk = contact.blocked_customers(
                    session,
                    policy=policy,
                    tenant=bank.tenant,
                    channel=channel,
                    purpose=purpose,
                    at=NOW,
                )
                for customer in ids:
                    one = contact.may_contact(
                        session,
                        policy=policy,
                        tenant=bank.tenant,
                        customer_id=customer,
                        channel=channel,
                        purpose=purpose,
                        at=NOW,
                    )
                    assert bulk.get(customer) == one.rule, (customer, channel, purpose)
        assert contact.blocked_customers(
            session,
            policy=policy,
            tenant=bank.tenant,
            channel=ContactChannel.EMAIL,
            purpose=ContactPurpose.RETENTION,
            at=NOW,
        ).keys() == {ids[0], ids[1], ids[2]}


def test_launch_fills_the_cap_highest_priority_first_under_the_policy_once(bank: Bank) -> None:
    # 400 customers, churn score i/400 (distinct); two blocked; 50 contacts at most.
    ids = book(bank, 400, churn=lambda i: i / 400)
    book(bank, 30, stage="dormant", churn=lambda i: 0.99, prefix="D")  # outside the segment
    score = {c: i / 400 for i, c in enumerate(ids)}
    with Session(bank.engine) as session:
        session.add(
            DoNotContact(
                tenant=bank.tenant,
                customer_id=ids[399],
                reason="asked",
                recorded_by="t",
                created_at=NOW,
            )
        )
        session.add(
            ContactRecord(
                tenant=bank.tenant,
                customer_id=ids[398],
                channel="email",
                purpose="marketing",
                outcome=None,
                at=NOW - timedelta(days=1),
                recorded_by="t",
            )
        )
        session.commit()
    created = create(
        bank,
        target={"stages": ["active"], "tiers": ["mass"], "scores": [{"task": "churn", "min": 0.1}]},
        priority_task="churn",
        volume_cap=80,
        budget=100.0,
        cost_per_contact=2.0,
        control_rate=0.2,
    )
    check = bank.client.get(f"/v1/campaigns/{created['id']}/check").json()
    assert check["segment_customers"] == 360  # churn >= 0.1 among the active
    assert {b["rule"]: b["customers"] for b in check["blocked"]} == {
        "do_not_contact": 1,
        "channel_cap": 1,
    }
    assert check["contact_limit"] == 50  # the budget buys 50 contacts, under the cap of 80
    assert check["treatment"] == 50 and not check["sufficient"] and check["warning"]
    launched = bank.client.post(f"/v1/campaigns/{created['id']}/launch")
    assert launched.status_code == 200, launched.text
    assert launched.json()["campaign"]["status"] == "launched"
    assert launched.json()["check"]["treatment"] == 50
    with Session(bank.engine) as session:
        members = session.execute(
            select(
                CampaignMember.customer_id,
                CampaignMember.arm,
                CampaignMember.rank,
                CampaignMember.score,
            )
            .where(CampaignMember.campaign_id == created["id"])
            .order_by(CampaignMember.rank)
        ).all()
        contacts = session.scalar(
            select(func.count())
            .select_from(ContactRecord)
            .where(
                ContactRecord.tenant == bank.tenant,
                ContactRecord.recorded_by == f"campaign:{created['id']}",
            )
        )
    treated = [m for m in members if m.arm == "treatment"]
    held = [m for m in members if m.arm == "control"]
    assert len(treated) == 50 == contacts
    # Highest priority first: every eligible treatment customer left out scores below every
    # one contacted, and ranks follow the score.
    eligible = [c for c in ids if score[c] >= 0.1 and c not in (ids[399], ids[398])]
    left_out = [
        c
        for c in eligible
        if c not in {m.customer_id for m in members}
        and not stats.in_control(c, created["period"], 0.2)
    ]
    assert max(score[c] for c in left_out) < min(m.score for m in treated)
    assert [m.score for m in members] == sorted((m.score for m in members), reverse=True)
    # Control customers come from the same ranks, and the arms follow the hash.
    assert held and min(m.score for m in held) >= min(m.score for m in treated)
    assert all(stats.in_control(m.customer_id, created["period"], 0.2) for m in held)
    assert all(not stats.in_control(m.customer_id, created["period"], 0.2) for m in treated)
    assert {ids[399], ids[398]}.isdisjoint(m.customer_id for m in members)
    # A second launch: 409, nothing written twice.
    again = bank.client.post(f"/v1/campaigns/{created['id']}/launch")
    assert again.status_code == 409 and again.json()["code"] == "campaign_launched"
    with Session(bank.engine) as session:
        assert session.scalar(
            select(func.count())
            .select_from(CampaignMember)
            .where(CampaignMember.campaign_id == created["id"])
        ) == len(members)
        assert (
            session.scalar(
                select(func.count())
                .select_from(ContactRecord)
                .where(ContactRecord.recorded_by == f"campaign:{created['id']}")
            )
            == 50
        )
    # The contacts count against the channel cap: a second campaign finds them blocked.
    follow_up = create(bank, target={"stages": ["active"]})
    blocked = bank.client.get(f"/v1/campaigns/{follow_up['id']}/check").json()["blocked"]
    assert {b["rule"]: b["customers"] for b in blocked}["channel_cap"] == 51


def test_a_zero_cap_contacts_nobody(bank: Bank) -> None:
    book(bank, 40)
    created = create(bank, volume_cap=0)
    result = bank.client.post(f"/v1/campaigns/{created['id']}/launch").json()
    assert result["check"]["treatment"] == 0 and result["check"]["control"] == 0


def respond(bank: Bank, code: str, answers: dict[str, str]) -> None:
    """Post each customer's response to the campaign as a trail event."""
    at = datetime.now(UTC).isoformat()
    events = [
        {
            "event_id": f"{code}-{customer}",
            "type": "campaign_response",
            "customer_id": customer,
            "occurred_at": at,
            "campaign_id": code,
            "response": response,
        }
        for customer, response in answers.items()
    ]
    # Another campaign's response never counts.
    events.append(
        {
            "event_id": f"{code}-other",
            "type": "campaign_response",
            "customer_id": next(iter(answers)),
            "occurred_at": at,
            "campaign_id": "SOMETHING-ELSE",
            "response": "accepted",
        }
    )
    answer = bank.client.post("/v1/events", json={"events": events})
    assert answer.status_code == 200, answer.text


def test_report_end_to_end_with_responses_from_the_trail(bank: Bank) -> None:
    ids = book(bank, 600, churn=lambda i: (i % 100) / 100)
    created = create(bank, priority_task="churn", control_rate=0.3, cost_per_contact=1.5)
    launch = bank.client.post(f"/v1/campaigns/{created['id']}/launch").json()
    period = created["period"]
    held = {c for c in ids if stats.in_control(c, period, 0.3)}
    assert launch["check"]["control"] == len(held)
    # Treated customers with a high score accept more often: 1 in 3 above 0.5, 1 in 10 below;
    # held out customers 1 in 10 whatever their score.
    answers: dict[str, str] = {}
    for i, c in enumerate(ids):
        high = (i % 100) >= 50
        accept = (i % 3 == 0) if (c not in held and high) else (i % 10 == 0)
        answers[c] = "accepted" if accept else ("declined" if i % 2 else "opened")
    respond(bank, created["code"], answers)
    answer = bank.client.get(f"/v1/campaigns/{created['id']}/report")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    arms = {a["arm"]: a for a in report["arms"]}
    conv_t = sum(1 for c in ids if c not in held and answers[c] == "accepted")
    conv_c = sum(1 for c in held if answers[c] == "accepted")
    assert arms["treatment"]["customers"] == 600 - len(held)
    assert arms["control"]["customers"] == len(held)
    assert (arms["treatment"]["conversions"], arms["control"]["conversions"]) == (conv_t, conv_c)
    expected = stats.lift(
        treated=600 - len(held),
        treated_conversions=conv_t,
        control=len(held),
        control_conversions=conv_c,
    )
    assert report["lift"]["relative"] == pytest.approx(expected.relative)
    assert report["lift"]["relative_low"] == pytest.approx(expected.relative_low)
    assert report["lift"]["significant"] == expected.significant
    low, high = report["lift"]["bootstrap_relative_low"], report["lift"]["bootstrap_relative_high"]
    assert low < expected.relative < high
    assert (
        arms["treatment"]["rate_low"] < arms["treatment"]["rate"] < arms["treatment"]["rate_high"]
    )
    # Cost: 1.5 a contact.
    assert report["cost"]["contacts"] == 600 - len(held)
    assert report["cost"]["per_conversion"] == pytest.approx(1.5 * (600 - len(held)) / conv_t)
    # Uplift: the top deciles (high scores) gain, the bottom ones do not.
    uplift = report["uplift"]
    assert uplift["score_task"] == "churn" and len(uplift["deciles"]) == 10
    assert uplift["deciles"][0]["uplift"] > 0.1 > uplift["deciles"][-1]["uplift"]
    assert uplift["qini"] > 0 and uplift["qini_low"] < uplift["qini"] < uplift["qini_high"]
    # Seeded: the same report again.
    again = bank.client.get(f"/v1/campaigns/{created['id']}/report").json()
    assert again.pop("responses_until") >= report.pop("responses_until")
    assert again == report
    svg = bank.client.get(f"/v1/campaigns/{created['id']}/report.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and created["code"] in svg.text
    # Outcomes flow back onto the member rows (what retraining reads).
    from app.campaigns.service import collect_outcomes

    with writing(Session(bank.engine)) as session:
        rows = collect_outcomes(session, tenant=bank.tenant, campaign_id=created["id"])
        assert sum(r.converted for r in rows) == conv_t + conv_c
        stored = session.scalar(
            select(func.count())
            .select_from(CampaignMember)
            .where(CampaignMember.campaign_id == created["id"], CampaignMember.converted.is_(True))
        )
        assert stored == conv_t + conv_c


def test_the_report_is_computed_once_per_responses_mark(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.campaigns import service
    from app.campaigns.tables import CampaignReportRow

    ids = book(bank, 120, churn=lambda i: (i % 100) / 100)
    created = create(bank, priority_task="churn", control_rate=0.3)
    assert bank.client.post(f"/v1/campaigns/{created['id']}/launch").status_code == 200
    respond(
        bank,
        created["code"],
        {c: "accepted" if i % 4 else "opened" for i, c in enumerate(ids[:80])},
    )

    def same_figures(stored: Any, live: Any) -> None:
        assert stored.model_dump(exclude={"responses_until"}) == live.model_dump(
            exclude={"responses_until"}
        )

    with writing(Session(bank.engine)) as session:
        first = service.stored_report(
            session, tenant=bank.tenant, campaign_id=created["id"], now=NOW, language="en"
        )
        same_figures(
            first.report,
            service.report(session, tenant=bank.tenant, campaign_id=created["id"], now=NOW),
        )
        assert first.chart is not None and first.chart.startswith("<svg")
        # No response since: read from the stored copy (computing would fail now), the chart
        # of a language already drawn included; another language is drawn once and kept.
        monkeypatch.setattr(service, "report", lambda *a, **k: pytest.fail("recomputed"))
        later = NOW + timedelta(minutes=5)
        again = service.stored_report(
            session, tenant=bank.tenant, campaign_id=created["id"], now=later, language="en"
        )
        assert again.report.responses_until == later
        same_figures(again.report, first.report)
        assert again.chart == first.chart
        chinese = service.stored_report(
            session,
            tenant=bank.tenant,
            campaign_id=created["id"],
            now=later,
            language="zh_CN",
            translate=lambda text: f"[{text}]",
        )
        assert chinese.chart is not None and "[treatment]" in chinese.chart
        row = session.get(CampaignReportRow, created["id"])
        assert row is not None and sorted(row.charts) == ["en", "zh_CN"]
        monkeypatch.undo()
    # A new response changes the mark: the next read computes and stores the report again.
    respond(bank, created["code"], {ids[100]: "accepted"})
    with writing(Session(bank.engine)) as session:
        fresh = service.stored_report(
            session, tenant=bank.tenant, campaign_id=created["id"], now=NOW, language="en"
        )
        live = service.report(session, tenant=bank.tenant, campaign_id=created["id"], now=NOW)
        same_figures(fresh.report, live)
        conversions = sum(arm.conversions for arm in fresh.report.arms)
        assert conversions == sum(arm.conversions for arm in first.report.arms) + 1
        row = session.get(CampaignReportRow, created["id"])
        assert row is not None and list(row.charts) == ["en"]
        assert (
            session.scalar(
                select(func.count())
                .select_from(CampaignReportRow)
                .where(CampaignReportRow.campaign_id == created["id"])
            )
            == 1
        )
    # The API reads the same stored report.
    answer = bank.client.get(f"/v1/campaigns/{created['id']}/report").json()
    assert answer["arms"] == fresh.report.model_dump(mode="json")["arms"]


def test_the_cli_drafts_checks_launches_and_reports(
    bank: Bank, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from app.cli.main import cli
    from app.config import get_settings

    book(bank, 200, churn=lambda i: i / 200)
    monkeypatch.setenv("CVM_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    spec = tmp_path / "campaign.json"
    code = f"CLI-{uuid.uuid4().hex[:6]}"
    import json

    spec.write_text(json.dumps(campaign_body(code, priority_task="churn", volume_cap=20)))
    created = runner.invoke(cli, ["campaigns", "create", str(spec), "--tenant", bank.tenant])
    assert created.exit_code == 0, created.output
    campaign_id = created.stdout.strip().split()[-1]
    checked = runner.invoke(cli, ["campaigns", "check", campaign_id, "--tenant", bank.tenant])
    assert checked.exit_code == 0 and "treatment" in checked.stdout
    launched = runner.invoke(cli, ["campaigns", "launch", campaign_id, "--tenant", bank.tenant])
    assert launched.exit_code == 0, launched.output
    assert (
        runner.invoke(cli, ["campaigns", "launch", campaign_id, "--tenant", bank.tenant]).exit_code
        == 2
    )
    out = tmp_path / "outcomes.csv"
    outcomes = runner.invoke(
        cli, ["campaigns", "outcomes", campaign_id, "--tenant", bank.tenant, "--out", str(out)]
    )
    assert outcomes.exit_code == 0, outcomes.output
    lines = out.read_text().splitlines()
    assert lines[0] == "customer_id,arm,score,response,responded_at,converted"
    with Session(bank.engine) as session:
        members = session.scalar(
            select(func.count())
            .select_from(CampaignMember)
            .where(CampaignMember.campaign_id == int(campaign_id))
        )
    assert len(lines) - 1 == members and members and members >= 20
    get_settings.cache_clear()
