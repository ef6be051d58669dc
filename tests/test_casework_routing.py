"""Churn alerts routed to the customer's relationship manager: backups, branch and central
queues, round robin within capacity, acceptance (the alert acknowledged in the accepting
credential's name), reassignment, escalation by hand and on timeout, and the append-only trail."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.alerts.schemas import ResolveRequest
from app.alerts.service import (
    AlertPolicy,
    ChurnAlerts,
    NotificationPlan,
    RetentionActions,
    get_alert,
    process_pending,
    resolve_alert,
)
from app.casework.routing import (
    QueueMember,
    RoutingPolicy,
    pick_least_loaded,
    route_new_alerts,
    sweep_acceptance,
)
from app.casework.tables import AlertAssignment, AssignmentEvent
from app.config import PROJECT_ROOT
from app.customers.schemas import CustomerProfile, EventType
from app.customers.service import record_events
from app.http.app import create_app
from app.scoring.assess import AlertThresholds
from app.scoring.registry import ModelRegistry
from app.scoring.repository import AlertCandidateRow, TenantScope, insert_alert_candidates
from tests.casework_support import new_key, put_staff

ACTIONS_FILE = PROJECT_ROOT / "app" / "resources" / "retention_actions.json"
NORTH_RM = {"supervisor": "bs-1"}
STAFF: dict[str, dict[str, Any]] = {
    "bs-1": {"roles": ["branch_supervisor"], "max_severity": "high"},
    "rm-2": NORTH_RM,
    "rm-3": NORTH_RM,
    "rm-1": {**NORTH_RM, "backups": ["rm-2", "rm-3"]},
    "cq-1": {"branch": "central"},
    "rm-s": {"branch": "south"},
    "ct-1": {"roles": ["complaints_team"], "branch": "hq"},
}


@dataclass
class Bank:
    """An app with one tenant's staff, each with their own key, and its churn alerts."""

    client: TestClient
    engine: Engine
    tenant: str
    keys: dict[str, dict[str, str]]
    principals: dict[str, str]

    def customer(self, *, branch: str | None = None, manager: str | None = None) -> str:
        """A customer with a profile naming these (none at all when both are None)."""
        customer_id = f"C-{uuid.uuid4().hex[:10]}"
        if branch or manager:
            profile = CustomerProfile(
                type=EventType.CUSTOMER_PROFILE,
                event_id=f"p-{customer_id}",
                customer_id=customer_id,
                occurred_at=datetime.now(UTC) - timedelta(days=1),
                branch=branch,
                relationship_manager=manager,
            )
            with Session(self.engine) as session:
                record_events(
                    session,
                    events=[profile],
                    tenant=self.tenant,
                    request_id="test",
                    received_at=datetime.now(UTC),
                    pseudonymizer=None,
                )
        return customer_id

    def alert(self, customer_id: str) -> int:
        """Open a churn alert for the customer, as the alert processor does."""
        now = datetime.now(UTC)
        row = AlertCandidateRow(
            customer_id=customer_id,
            tenant=self.tenant,
            stage="existing",
            probability=0.8,
            band="high",
            reasons=[],
            request_id=f"req-{customer_id}",
            model_version="1",
            source="api",
            created_at=now,
        )
        with self.engine.begin() as connection:
            insert_alert_candidates(connection, rows=[row])
        alerts = ChurnAlerts(
            thresholds=AlertThresholds(min_probability=0.5),
            policy=AlertPolicy(cooldown=timedelta(0)),
            actions=RetentionActions.load(ACTIONS_FILE),
            plan=NotificationPlan(),
            tenant_isolation=True,
        )
        (opened,) = process_pending(self.engine, alerts=alerts).opened
        return opened

    def route(self, policy: RoutingPolicy, now: datetime | None = None) -> Any:
        with Session(self.engine) as session:
            return route_new_alerts(
                session,
                policy=policy,
                now=now or datetime.now(UTC),
                tenant=TenantScope(self.tenant),
            )

    def routed(self, who: str, alert_id: int) -> dict[str, Any]:
        response = self.client.get(f"/v1/casework/alerts/{alert_id}", headers=self.keys[who])
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, who: str, alert_id: int, action: str, body: dict[str, Any]) -> Any:
        return self.client.post(
            f"/v1/casework/alerts/{alert_id}/{action}", json=body, headers=self.keys[who]
        )


@pytest.fixture(scope="module")
def app_client(
    database_url: str, settings_for: Any, registry: ModelRegistry
) -> Iterator[TestClient]:
    """One running app per database for the module (each test has its own tenant)."""
    # No processor in the app: the tests open alerts themselves, one at a time.
    settings = settings_for(
        database_url,
        auth_enabled=True,
        tenant_isolation=True,
        churn_alerts_enabled=False,
        rescore_in_process=False,
    )
    with TestClient(create_app(settings, registry)) as client:
        yield client


@pytest.fixture
def bank(app_client: TestClient) -> Bank:
    app: Any = app_client.app
    tenant = f"bank-{uuid.uuid4().hex[:8]}"
    _, admin = new_key(app, "staff:admin", tenant=tenant)
    keys, principals = {}, {}
    for staff_id, fields in STAFF.items():
        principals[staff_id], keys[staff_id] = new_key(app, tenant=tenant)
        put_staff(app_client, admin, staff_id, principal=principals[staff_id], **fields)
    keys["admin"] = admin
    return Bank(app_client, app.state.engine, tenant, keys, principals)


def test_an_alert_goes_to_the_manager_then_backups_then_the_branch_then_the_central_queue(
    bank: Bank,
) -> None:
    policy = RoutingPolicy(capacity=2)
    own = [bank.alert(bank.customer(branch="north", manager="rm-1")) for _ in range(3)]
    assert bank.route(policy).total_routed == 3
    first, second, third = (bank.routed("bs-1", a) for a in own)
    assert (first["assignee"], first["routed_via"], first["branch"]) == (
        "rm-1",
        "relationship_manager",
        "north",
    )
    assert second["assignee"] == "rm-1"
    assert (third["assignee"], third["routed_via"]) == ("rm-2", "backup")  # rm-1 is full
    assert "rm-1 holds 2 open alerts (capacity)" in third["history"][0]["reason"]

    today = datetime.now(UTC).date().isoformat()
    absence = {"starts_on": today, "ends_on": today}
    response = bank.client.post("/v1/staff/rm-2/absences", json=absence, headers=bank.keys["admin"])
    assert response.status_code == 200
    to_rm3 = bank.alert(bank.customer(manager="rm-1"))  # branch from the manager's record
    queued = bank.alert(bank.customer(branch="north"))  # no manager: the branch's queue
    central = bank.alert(bank.customer(branch="north"))  # everyone in north is full or away
    nowhere = bank.alert(bank.customer())  # no profile at all
    summary = bank.route(policy)
    assert summary.total_routed == 4
    got = {a: bank.routed("ct-1", a) for a in (to_rm3, queued, central, nowhere)}
    assert (got[to_rm3]["assignee"], got[to_rm3]["routed_via"]) == ("rm-3", "backup")
    assert "rm-2 is away or inactive" in got[to_rm3]["history"][0]["reason"]
    assert (got[queued]["assignee"], got[queued]["routed_via"]) == ("rm-3", "branch_queue")
    assert (got[central]["assignee"], got[central]["routed_via"]) == ("cq-1", "central_queue")
    assert got[central]["branch"] == "north"
    assert (got[nowhere]["assignee"], got[nowhere]["branch"]) == ("cq-1", "central")
    assert bank.route(policy).total_routed == 0  # each alert is routed once

    with Session(bank.engine) as session, pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("UPDATE assignment_event SET actor = 'someone else'"))
        session.commit()


def test_round_robin_in_the_database_spreads_a_branch_queue_evenly(bank: Bank) -> None:
    for staff_id in ("w-1", "w-2", "w-3"):
        put_staff(bank.client, bank.keys["admin"], staff_id, branch="west")
    alerts = [bank.alert(bank.customer(branch="west")) for _ in range(7)]
    bank.route(RoutingPolicy())
    with Session(bank.engine) as session:
        owners = Counter(
            session.scalars(
                select(AlertAssignment.assignee_id).where(AlertAssignment.alert_id.in_(alerts))
            )
        )
    assert sorted(owners.values()) == [2, 2, 3] and set(owners) == {"w-1", "w-2", "w-3"}


@settings(max_examples=200, deadline=None)
@given(
    members=st.integers(min_value=1, max_value=8),
    alerts=st.integers(min_value=0, max_value=60),
    capacity=st.integers(min_value=1, max_value=10),
)
def test_round_robin_is_fair_within_one_and_respects_capacity(
    members: int, alerts: int, capacity: int
) -> None:
    loads = dict.fromkeys((f"s-{i}" for i in range(members)), 0)
    last: dict[str, datetime | None] = dict.fromkeys(loads)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    placed = 0
    for n in range(alerts):
        queue = [QueueMember(sid, loads[sid], last[sid]) for sid in loads]
        chosen = pick_least_loaded(queue, capacity=capacity)
        if chosen is None:
            assert all(load >= capacity for load in loads.values())
            continue
        assert loads[chosen] == min(q.load for q in queue if q.load < capacity)
        loads[chosen] += 1
        last[chosen] = start + timedelta(seconds=n)
        placed += 1
    assert placed == min(alerts, members * capacity)
    assert max(loads.values()) <= capacity
    fair = alerts // members
    assert all(fair - 1 <= load <= fair + 1 for load in loads.values()) or placed < alerts
    assert max(loads.values()) - min(loads.values()) <= 1


def test_accept_reassign_and_escalate_by_hand_with_the_owner_from_the_credential(
    bank: Bank,
) -> None:
    policy = RoutingPolicy()
    alert_id = bank.alert(bank.customer(branch="north", manager="rm-1"))
    bank.route(policy)
    assert bank.post("rm-2", alert_id, "accept", {}).status_code == 403  # not theirs
    response = bank.post("rm-s", alert_id, "reassign", {"to": "rm-2", "reason": "r"})
    assert response.status_code == 403  # another branch
    response = bank.post("rm-1", alert_id, "reassign", {"to": "nobody", "reason": "r"})
    assert response.status_code == 422 and "to" in response.json()["detail"]
    response = bank.post("rm-1", alert_id, "reassign", {"to": "rm-2", "reason": "on leave"})
    assert response.status_code == 200, response.text
    assert (response.json()["assignee"], response.json()["routed_via"]) == ("rm-2", "reassigned")
    response = bank.post("rm-2", alert_id, "escalate", {"reason": "asks for a manager"})
    assert response.status_code == 200 and response.json()["assignee"] == "bs-1"
    accepted = bank.post("bs-1", alert_id, "accept", {"note": "calling today"})
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["status"], accepted.json()["accepted_by"]) == ("accepted", "bs-1")
    with Session(bank.engine) as session:
        alert = get_alert(session, alert_id=alert_id, tenant=TenantScope(bank.tenant))
    assert (alert.status, alert.owner) == ("acknowledged", bank.principals["bs-1"])
    # Accepted, then handed on by hand: back to waiting, the new assignee accepts again on a
    # clock restarted from the reassignment.
    before = datetime.now(UTC)
    response = bank.post("bs-1", alert_id, "reassign", {"to": "rm-3", "reason": "knows them"})
    assert response.status_code == 200, response.text
    moved = response.json()
    assert (moved["status"], moved["assignee"], moved["accepted_by"]) == ("assigned", "rm-3", None)
    accept_by = datetime.fromisoformat(moved["accept_by"])
    assert before + policy.accept_within <= accept_by <= datetime.now(UTC) + policy.accept_within
    assert bank.post("bs-1", alert_id, "accept", {}).status_code == 403  # no longer theirs
    again = bank.post("rm-3", alert_id, "accept", {"note": "mine now"})
    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["accepted_by"]) == ("accepted", "rm-3")
    history = bank.routed("bs-1", alert_id)["history"]
    assert [(e["kind"], e["actor"], e["from_value"], e["to_value"]) for e in history] == [
        ("routed", "system", None, "rm-1"),
        ("reassigned", "rm-1", "rm-1", "rm-2"),
        ("escalated", "rm-2", "rm-2", "bs-1"),
        ("accepted", "bs-1", "bs-1", "bs-1"),
        ("reassigned", "bs-1", "bs-1", "rm-3"),
        ("accepted", "rm-3", "rm-3", "rm-3"),
    ]
    assert history[4]["reason"] == "knows them"
    assert history[1]["reason"] == "on leave" and history[1]["principal"]
    mine = bank.client.get("/v1/casework/alerts?mine=true", headers=bank.keys["rm-3"]).json()
    assert [a["alert_id"] for a in mine["items"]] == [alert_id]
    _, stranger = new_key(bank.client.app, "casework:read", tenant="another")  # type: ignore[arg-type]
    assert bank.client.get(f"/v1/casework/alerts/{alert_id}", headers=stranger).status_code in (
        403,
        404,
    )


def test_not_accepted_in_time_goes_to_the_supervisor_once_and_a_resolved_alert_closes(
    bank: Bank,
) -> None:
    policy = RoutingPolicy(accept_within=timedelta(hours=24))
    customer = bank.customer(branch="north", manager="rm-1")
    alert_id = bank.alert(customer)
    now = datetime.now(UTC)
    bank.route(policy, now)
    seen = []
    for hours in (23, 25, 25):  # the database is shared: other tests' alerts are swept too
        with Session(bank.engine) as session:
            sweep_acceptance(session, policy=policy, now=now + timedelta(hours=hours))
        seen.append(bank.routed("bs-1", alert_id)["assignee"])
    assert seen == ["rm-1", "bs-1", "bs-1"]
    routed = bank.routed("bs-1", alert_id)
    assert [e["kind"] for e in routed["history"]] == ["routed", "escalated"]
    assert (routed["assignee"], routed["routed_via"]) == ("bs-1", "supervisor")
    assert routed["history"][-1]["reason"] == "not accepted within 24 h"
    assert bank.post("bs-1", alert_id, "accept", {}).status_code == 200
    with Session(bank.engine) as session:
        resolve_alert(
            session,
            alert_id=alert_id,
            request=ResolveRequest(outcome="retained"),
            actor=bank.principals["bs-1"],
            tenant=TenantScope(bank.tenant),
        )
    assert bank.route(policy).closed >= 1
    assert bank.routed("bs-1", alert_id)["status"] == "closed"
    second = bank.alert(customer)  # the customer's next alert is routed afresh
    bank.route(policy)
    assert bank.routed("rm-1", second)["assignee"] == "rm-1"
    with Session(bank.engine) as session:
        kinds = session.scalars(
            select(AssignmentEvent.kind)
            .join(AlertAssignment, AlertAssignment.id == AssignmentEvent.assignment_id)
            .where(AlertAssignment.alert_id == alert_id)
            .order_by(AssignmentEvent.id)
        ).all()
    assert kinds == ["routed", "escalated", "accepted", "closed"]


def test_every_routing_operation_accepts_its_documented_example(bank: Bank) -> None:
    spec = bank.client.get("/openapi.json", headers=bank.keys["rm-1"]).json()
    schemas = spec["components"]["schemas"]

    def example(action: str) -> dict[str, Any]:
        operation = spec["paths"][f"/v1/casework/alerts/{{alert_id}}/{action}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]
        (found,) = schemas[body["schema"]["$ref"].rsplit("/", 1)[-1]]["examples"]
        return dict(found)

    reassign = example("reassign")
    put_staff(bank.client, bank.keys["admin"], reassign["to"], supervisor="bs-1")
    bank.keys[reassign["to"]] = bank.keys["ct-1"]  # acts through the team's cross-branch key
    alert_id = bank.alert(bank.customer(branch="north", manager="rm-1"))
    bank.route(RoutingPolicy())
    assert bank.post("rm-1", alert_id, "reassign", reassign).status_code == 200
    response = bank.post("ct-1", alert_id, "escalate", example("escalate"))
    assert response.status_code == 200 and response.json()["assignee"] == "bs-1"
    response = bank.post("bs-1", alert_id, "accept", example("accept"))
    assert response.status_code == 200, response.text


def test_cvm_casework_digest_mails_each_person_their_alerts_once_a_day(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.alerts.repository import ClaimedMessage
    from app.alerts.tables import OutboxMessage
    from app.cli.main import cli
    from app.config import get_settings
    from app.notifications.service import EmailChannel, SmtpConfig
    from tests.test_notifications import SmtpServer

    alerts = [bank.alert(bank.customer(branch="north", manager="rm-1")) for _ in range(2)]
    alerts.append(bank.alert(bank.customer(branch="north", manager="rm-3")))
    bank.route(RoutingPolicy())
    monkeypatch.setenv("CVM_DATABASE_URL", bank.engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        runs = [
            CliRunner().invoke(cli, ["casework", "digest", "--at", at])
            for at in ("2031-03-03T07:00:00Z", "2031-03-03T09:00:00Z", "2031-03-04T07:00:00Z")
        ]
    finally:
        get_settings.cache_clear()
    assert all(run.exit_code == 0 for run in runs), [run.output for run in runs]
    with Session(bank.engine) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.tenant == bank.tenant)
            .order_by(OutboxMessage.created_at, OutboxMessage.recipient)
        ).all()
    # One per person and day: the second run on the 3rd queued nothing for this tenant.
    assert [(r.recipient, r.created_at.day) for r in rows] == [
        ("anna@bank.example", 3),
        ("anna@bank.example", 3),
        ("anna@bank.example", 4),
        ("anna@bank.example", 4),
    ]
    assert sorted(len(r.payload["alerts"]) for r in rows) == [1, 1, 2, 2]
    server = SmtpServer()
    server.start()
    try:
        channel = EmailChannel(
            SmtpConfig("127.0.0.1", server.port, False, None, None, 2.0, "cvm@bank.example")
        )
        two = next(r for r in rows if len(r.payload["alerts"]) == 2)
        channel.deliver(
            ClaimedMessage(
                id=two.id,
                channel="email",
                kind=two.kind,
                recipient=two.recipient,
                alert_id=None,
                payload=two.payload,
                attempts=1,
                created_at=two.created_at,
                tenant=two.tenant,
            )
        )
        channel.shutdown()
    finally:
        server.stop()
    (mail,) = server.inbox.mails
    assert mail.subject == "CVM: 2 churn alerts for you"
    assert all(f"alert {a}:" in mail.body for a in alerts[:2])
    assert f"alert {alerts[2]}:" not in mail.body  # rm-3's, in the other digest


def test_the_assignee_and_the_branch_desk_are_mailed_on_routing_and_on_escalation(
    bank: Bank,
) -> None:
    from app.alerts.repository import ClaimedMessage
    from app.alerts.tables import OutboxMessage
    from app.notifications.service import render_email

    desk = "north-desk@bank.example"
    policy = RoutingPolicy(notify=True, branch_recipients={(bank.tenant, "north"): (desk,)})
    alert_id = bank.alert(bank.customer(branch="north", manager="rm-1"))
    now = datetime.now(UTC)
    bank.route(policy, now)
    with Session(bank.engine) as session:
        sweep_acceptance(session, policy=policy, now=now + timedelta(hours=25))
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.tenant == bank.tenant)
            .order_by(OutboxMessage.created_at, OutboxMessage.recipient)
        ).all()
    assert [(r.recipient, r.payload["assignee"]) for r in rows] == [
        ("anna@bank.example", "rm-1"),  # every test staff member has this address
        (desk, "rm-1"),
        ("anna@bank.example", "bs-1"),
        (desk, "bs-1"),
    ]
    assert {r.kind for r in rows} == {"casework_routed"} and rows[0].status == "pending"
    mail = render_email(
        ClaimedMessage(
            id=rows[2].id,
            channel="email",
            kind=rows[2].kind,
            recipient=rows[2].recipient,
            alert_id=None,
            payload=rows[2].payload,
            attempts=1,
            created_at=rows[2].created_at,
            tenant=bank.tenant,
        ),
        sender="cvm@bank.example",
    )
    assert mail["Subject"] == f"CVM churn alert {alert_id} for bs-1"
    assert "not accepted within 24 h" in mail.get_content()


def test_an_alert_routed_to_a_branch_with_its_own_webhook_is_posted_there(
    bank: Bank, database_url: str, settings_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.alerts.repository import ClaimedMessage
    from app.notifications.service import Dispatcher, build_channels, dispatch_policy
    from tests.test_notifications import SECRET, WebhookReceiver

    north, tenant_hook = WebhookReceiver(), WebhookReceiver()
    north.start()
    tenant_hook.start()
    monkeypatch.setenv("NORTH_HOOK_KEY", SECRET)
    monkeypatch.setenv("TENANT_HOOK_KEY", "the-tenant's-key")
    route = {
        "webhook_url": tenant_hook.url,
        "webhook_secret_env": "TENANT_HOOK_KEY",
        "branches": {"north": {"webhook_url": north.url, "webhook_secret_env": "NORTH_HOOK_KEY"}},
    }
    settings = settings_for(database_url, notification_routes={bank.tenant: route})
    policy = RoutingPolicy.from_settings(settings)
    assert policy.webhook_branches == {(bank.tenant, "north")}
    in_north = bank.alert(bank.customer(branch="north", manager="rm-1"))
    bank.alert(bank.customer(branch="south", manager="rm-s"))
    try:
        assert bank.route(policy).total_routed == 2
        channels = build_channels(settings)
        Dispatcher(engine=bank.engine, channels=channels, policy=dispatch_policy(settings)).drain(
            max_rounds=5
        )
        # The north alert reached the branch's receiver, signed with the branch's key, once;
        # the south branch has no receiver of its own: nothing is posted for it per branch.
        (posted,) = north.accepted
        assert posted.signed_correctly
        payload = json.loads(posted.body)
        assert (payload["alert_id"], payload["branch"], payload["assignee"]) == (
            in_north,
            "north",
            "rm-1",
        )
        assert tenant_hook.accepted == []
        # A message for a branch without a receiver falls back to the tenant's webhook.
        channels["webhook"].deliver(
            ClaimedMessage(
                id="m-1",
                channel="webhook",
                kind="casework_routed",
                recipient="branch:south",
                alert_id=None,
                payload={"branch": "south"},
                attempts=0,
                created_at=datetime.now(UTC),
                tenant=bank.tenant,
            )
        )
        assert [json.loads(r.body) for r in tenant_hook.accepted] == [{"branch": "south"}]
    finally:
        north.stop()
        tenant_hook.stop()
        for channel in channels.values():
            channel.shutdown()


@pytest.mark.parametrize(
    "branch_route",
    [{"webhook_url": "http://example.com/hook"}, {"webhook_url": "ftp://127.0.0.1/hook"}],
)
def test_a_branch_webhook_must_be_https(branch_route: dict[str, Any]) -> None:
    from app.config import Settings

    with pytest.raises(ValueError, match=r"branches\['north'\]\.webhook_url"):
        Settings(notification_routes={"bank-a": {"branches": {"north": branch_route}}})


def test_the_sweeps_declare_themselves_writers() -> None:
    """Each of these use cases reads, then writes what it read: on SQLite the first write
    would fail at once had the service committed in between (``app.db.session.writing``), so
    each declares its session before its first statement, whoever opened it (CLI, scheduler,
    test)."""
    from app.casework.routing import compose_digests, sweep_acceptance
    from app.casework.service import purge_expired, sweep_deadlines
    from app.db.session import IMMEDIATE_OPTION, create_db_engine
    from tests.db_support import migrated_sqlite_database

    now = datetime.now(UTC)
    sweeps: dict[str, Callable[[Session], object]] = {
        "acceptance": lambda s: sweep_acceptance(s, policy=RoutingPolicy(), now=now),
        "route": lambda s: route_new_alerts(s, policy=RoutingPolicy(), now=now),
        "digests": lambda s: compose_digests(s, now=now),
        "deadlines": lambda s: sweep_deadlines(s, now=now),
        "purge": lambda s: purge_expired(s, now=now, retention=timedelta(days=1)),
    }
    with migrated_sqlite_database() as url:
        engine = create_db_engine(url)
        try:
            for name, sweep in sweeps.items():
                with Session(engine) as session:
                    sweep(session)
                    declared = session.get_bind().get_execution_options().get(IMMEDIATE_OPTION)
                    assert declared is True, name
        finally:
            engine.dispose()
