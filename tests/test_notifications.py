"""The outbox dispatcher against a real SMTP server and a real HTTP receiver on loopback.

Every test runs on SQLite and on PostgreSQL. Time is a fake clock wherever backoff or leases
matter, so retries and lease expiries take no wall-clock time.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, delete, select
from typer.testing import CliRunner

from app.alerts.repository import (
    ClaimedMessage,
    OutboxRow,
    claim_messages,
    insert_outbox_messages,
    outbox_counts,
    requeue_failed,
)
from app.alerts.service import (
    AlertPolicy,
    ChurnAlerts,
    NotificationPlan,
    RetentionActions,
    process_pending,
)
from app.alerts.states import MessageStatus
from app.alerts.tables import (
    OutboxMessage,
    digest_entry_table,
    outbox_attempt_table,
    outbox_message_table,
)
from app.cli.main import cli
from app.config import PROJECT_ROOT, Settings, get_settings
from app.db.session import create_db_engine
from app.http.app import create_app
from app.notifications.service import (
    Channel,
    DeliveryError,
    Dispatcher,
    DispatchPolicy,
    DispatchReport,
    EmailChannel,
    SmtpConfig,
    WebhookChannel,
    message_id_header,
    retry_delay,
)
from app.scoring.assess import AlertThresholds
from app.scoring.manifest import Task
from app.scoring.registry import ModelRegistry
from app.scoring.repository import AlertCandidateRow, insert_alert_candidates
from app.security.api_keys import create_client
from app.security.principal import ALL_SCOPES
from tests.conftest import ON_SQLITE_ONLY, customer_record

SECRET = "webhook-s3cret"
SENDER = "cvm@bank.example"
RECIPIENTS = ("retention@bank.example", "branch-12@bank.example")
ACTIONS_FILE = PROJECT_ROOT / "app" / "resources" / "retention_actions.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- receivers -----------------------------------------------------------------------------------


@dataclass
class WebhookRequest:
    key: str
    signature: str
    body: bytes

    @property
    def signed_correctly(self) -> bool:
        expected = "sha256=" + hmac.new(SECRET.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.signature)


@dataclass
class WebhookReceiver:
    """An HTTP server in a thread that records what it accepted, and can fail on purpose."""

    port: int = field(default_factory=free_port)
    accepted: list[WebhookRequest] = field(default_factory=list)
    refused: int = 0
    status: int = 200
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cvm-alerts"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    status = receiver.status
                    if status < 300:
                        receiver.accepted.append(
                            WebhookRequest(
                                key=self.headers["Idempotency-Key"],
                                signature=self.headers["X-CVM-Signature"],
                                body=body,
                            )
                        )
                    else:
                        receiver.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(request.key for request in self.accepted)


@dataclass
class ReceivedMail:
    recipients: list[str]
    message_id: str
    subject: str
    body: str


class Inbox:
    """aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.mails: list[ReceivedMail] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = parsed.get_body()
        assert body is not None
        with self.lock:
            self.mails.append(
                ReceivedMail(
                    recipients=list(envelope.rcpt_tos),
                    message_id=str(parsed["Message-ID"]),
                    subject=str(parsed["Subject"]),
                    body=str(body.get_content()),
                )
            )
        return "250 Message accepted for delivery"

    def message_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(mail.message_id for mail in self.mails)


@dataclass
class SmtpServer:
    """A real SMTP server on loopback that can go down and come back on the same port."""

    inbox: Inbox = field(default_factory=Inbox)
    port: int = field(default_factory=free_port)
    kwargs: dict[str, Any] = field(default_factory=dict)
    _controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, **self.kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A running webhook receiver."""
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A running SMTP server."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


# --- database and helpers ------------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The test database with an empty outbox."""
    engine = create_db_engine(database_url)
    with engine.begin() as connection:
        for table in (outbox_attempt_table, outbox_message_table, digest_entry_table):
            connection.execute(delete(table))
    yield engine
    engine.dispose()


def open_alerts(engine: Engine, clock: FakeClock, plan: NotificationPlan, count: int) -> list[int]:
    """Open ``count`` alerts for new customers, queueing their notifications: candidates
    queued as the score writer queues them, then processed."""
    alerts = ChurnAlerts(
        thresholds=AlertThresholds(min_probability=0.5),
        policy=AlertPolicy(),
        actions=RetentionActions.load(ACTIONS_FILE),
        plan=plan,
        clock=clock,
    )
    candidates = [
        AlertCandidateRow(
            customer_id=f"N-{uuid.uuid4().hex[:12]}",
            tenant=None,
            stage="existing",
            probability=0.5 + i / (2 * count + 2),
            band="high",
            reasons=[
                {
                    "feature": "open_complaint",
                    "value": "yes",
                    "contribution": 0.8,
                    "direction": "raises",
                    "text": "A complaint is open right now",
                }
            ],
            request_id=f"req-{i}",
            model_version="1",
            source="api",
            created_at=clock(),
        )
        for i in range(count)
    ]
    with engine.begin() as connection:
        insert_alert_candidates(connection, rows=candidates)
    return process_pending(engine, alerts=alerts).opened


def webhook_channel(receiver: WebhookReceiver) -> WebhookChannel:
    return WebhookChannel(url=receiver.url, secret=SECRET, timeout_s=2.0)


def email_channel(server: SmtpServer, **overrides: Any) -> EmailChannel:
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "starttls": False,
        "username": None,
        "password": None,
        "timeout_s": 2.0,
        "sender": SENDER,
        **overrides,
    }
    return EmailChannel(SmtpConfig(**config))


def make_dispatcher(
    engine: Engine, channels: dict[str, Channel], clock: Any = None, **policy: Any
) -> Dispatcher:
    settings: dict[str, Any] = {"batch_size": 50, "lease_s": 120.0, "backoff_base_s": 2.0}
    settings.update(policy)
    dispatcher = Dispatcher(
        engine=engine,
        channels=channels,
        policy=DispatchPolicy(**settings),
        **({"clock": clock} if clock is not None else {}),
    )
    return dispatcher


def messages(engine: Engine) -> list[OutboxMessage]:
    with engine.connect() as connection:
        rows = connection.execute(select(OutboxMessage.__table__)).all()
    return [OutboxMessage(**row._mapping) for row in rows]


def attempts(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(outbox_attempt_table).order_by(outbox_attempt_table.c.id)
            ).all()
        )


# --- delivery ------------------------------------------------------------------------------------


def test_webhook_and_email_are_delivered_once_each(
    engine: Engine, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    clock = FakeClock()
    plan = NotificationPlan(webhook=True, email_recipients=RECIPIENTS)
    alert_ids = open_alerts(engine, clock, plan, 5)
    dispatcher = make_dispatcher(
        engine, {"webhook": webhook_channel(webhook), "email": email_channel(smtp)}, clock
    )

    report = dispatcher.drain()
    assert (report.delivered, report.retried, report.failed) == (15, 0, 0)
    assert dispatcher.drain().claimed == 0, "a delivered message is never sent again"
    dispatcher.stop()

    stored = {m.id: m for m in messages(engine)}
    assert {m.status for m in stored.values()} == {"delivered"}
    assert all(m.delivered_at is not None and m.attempts == 1 for m in stored.values())
    assert [a.ok for a in attempts(engine)] == [True] * 15

    # Webhook: one signed request per alert, keyed by the message id.
    assert set(webhook.keys().values()) == {1}
    assert len(webhook.accepted) == 5
    for request in webhook.accepted:
        assert request.signed_correctly
        body = json.loads(request.body)
        assert body["id"] == request.key and stored[request.key].channel == "webhook"
        assert body["type"] == "churn_alert.opened"
        assert body["alert"]["id"] in alert_ids
        assert body["alert"]["actions"] == ["Escalate the open complaint to the branch manager"]

    # E-mail: one message per alert per recipient, Message-ID derived from the message id.
    mails = smtp.inbox.mails
    assert len(mails) == 10
    assert set(smtp.inbox.message_ids().values()) == {1}
    email_ids = {message_id_header(m.id, SENDER) for m in stored.values() if m.channel == "email"}
    assert set(smtp.inbox.message_ids()) == email_ids
    assert Counter(r for mail in mails for r in mail.recipients) == dict.fromkeys(RECIPIENTS, 5)
    assert all("CVM churn alert: customer N-" in mail.subject for mail in mails)
    assert all("Escalate the open complaint" in mail.body for mail in mails)


def test_receivers_down_then_up_retry_with_backoff_until_delivered(
    engine: Engine, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    clock = FakeClock()
    plan = NotificationPlan(webhook=True, email_recipients=RECIPIENTS[:1])
    open_alerts(engine, clock, plan, 4)
    dispatcher = make_dispatcher(
        engine,
        {"webhook": webhook_channel(webhook), "email": email_channel(smtp)},
        clock,
        backoff_base_s=10.0,
    )
    webhook.status = 503  # the office-automation system answers but refuses
    smtp.stop()  # the mail relay is gone: connection refused

    first = dispatcher.drain()
    assert (first.delivered, first.retried) == (0, 8)
    start = clock.now
    for message in messages(engine):
        assert message.status == "pending" and message.attempts == 1
        assert message.claimed_until is None
        delay = (message.next_attempt_at - start).total_seconds()
        assert 5.0 <= delay <= 10.0, "first retry after base x (0.5 to 1)"
    assert dispatcher.drain().claimed == 0, "nothing is due before its backoff ends"

    clock.advance(10)
    second = dispatcher.drain()
    assert (second.delivered, second.retried) == (0, 8)
    for message in messages(engine):
        delay = (message.next_attempt_at - clock.now).total_seconds()
        assert 10.0 <= delay <= 20.0, "the second retry waits twice as long"

    webhook.status = 200
    smtp.start()
    clock.advance(20)
    third = dispatcher.drain()
    dispatcher.stop()
    assert (third.delivered, third.retried) == (8, 0)
    assert webhook.refused == 8
    assert set(webhook.keys().values()) == {1} and len(webhook.accepted) == 4
    assert set(smtp.inbox.message_ids().values()) == {1} and len(smtp.inbox.mails) == 4
    history = attempts(engine)
    assert len(history) == 24
    assert sum(a.ok for a in history) == 8
    failed = [a for a in history if not a.ok]
    assert any("webhook answered 503" in a.error for a in failed)
    assert any(a.error.startswith("smtp: ") for a in failed)
    assert {a.number for a in history if a.ok} == {3}


def test_a_message_that_never_lands_is_marked_failed_and_can_be_requeued(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    clock = FakeClock()
    open_alerts(engine, clock, NotificationPlan(webhook=True), 1)
    dispatcher = make_dispatcher(
        engine, {"webhook": webhook_channel(webhook)}, clock, max_attempts=2
    )
    webhook.status = 500
    dispatcher.drain()
    clock.advance(3600)
    report = dispatcher.drain()
    assert report.failed == 1
    (message,) = messages(engine)
    assert (message.status, message.attempts) == ("failed", 2)
    assert message.last_error == "webhook answered 500"
    clock.advance(36000)
    assert dispatcher.drain().claimed == 0, "a failed message waits for a person"

    webhook.status = 200
    with engine.begin() as connection:
        assert requeue_failed(connection, now=clock.now) == 1
    assert dispatcher.drain().delivered == 1
    dispatcher.stop()
    assert len(webhook.accepted) == 1


# --- dispatchers that stop or die ----------------------------------------------------------------


class Killed(BaseException):
    """The process dies: nothing after this runs, not even the attempt's bookkeeping."""


class DyingChannel:
    """Wraps a channel and kills the dispatcher at the n-th delivery, before or after sending."""

    def __init__(self, inner: Channel, *, die_at: int, after_sending: bool) -> None:
        self.name = inner.name
        self.inner = inner
        self.die_at = die_at
        self.after_sending = after_sending
        self.calls = 0

    def deliver(self, message: ClaimedMessage) -> None:
        self.calls += 1
        if self.calls == self.die_at and not self.after_sending:
            raise Killed
        self.inner.deliver(message)
        if self.calls == self.die_at:
            raise Killed

    def close(self) -> None:
        self.inner.close()

    def shutdown(self) -> None:
        self.inner.shutdown()


@pytest.mark.parametrize("after_sending", [False, True], ids=["before-send", "after-send"])
def test_a_dispatcher_killed_mid_batch_leaves_the_rest_to_another_after_the_lease(
    engine: Engine, webhook: WebhookReceiver, after_sending: bool
) -> None:
    clock = FakeClock()
    open_alerts(engine, clock, NotificationPlan(webhook=True), 10)
    dying = DyingChannel(webhook_channel(webhook), die_at=3, after_sending=after_sending)
    first = make_dispatcher(engine, {"webhook": dying}, clock, lease_s=60.0)
    with pytest.raises(Killed):
        first.run_once()
    assert len(webhook.accepted) == (3 if after_sending else 2)
    stuck = [m for m in messages(engine) if m.status == "pending"]
    assert len(stuck) == 8
    assert all(m.claimed_by == first.name for m in stuck)

    second = make_dispatcher(engine, {"webhook": webhook_channel(webhook)}, clock, lease_s=60.0)
    assert second.drain().claimed == 0, "claims hold while the lease runs"
    clock.advance(61)
    report = second.drain()
    second.stop()
    assert report.delivered == 8
    assert {m.status for m in messages(engine)} == {"delivered"}

    keys = webhook.keys()
    assert len(keys) == 10, "every message arrived"
    if after_sending:
        # Sent, then killed before it was marked: sent again, with the same key and body, so
        # the receiver keeps one.
        (duplicate,) = [key for key, seen in keys.items() if seen == 2]
        copies = [r for r in webhook.accepted if r.key == duplicate]
        assert copies[0].body == copies[1].body and copies[0].signature == copies[1].signature
        assert sum(keys.values()) == 11
    else:
        assert set(keys.values()) == {1}, "exactly one delivery per message"
    retried = [a for a in attempts(engine) if a.dispatcher == second.name]
    assert max(a.number for a in retried) == 2, "the killed attempt counts"


def test_a_message_that_kills_every_dispatcher_is_given_up(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    clock = FakeClock()
    open_alerts(engine, clock, NotificationPlan(webhook=True), 1)
    for _ in range(2):
        dying = DyingChannel(webhook_channel(webhook), die_at=1, after_sending=False)
        with pytest.raises(Killed):
            make_dispatcher(engine, {"webhook": dying}, clock, max_attempts=2).run_once()
        clock.advance(121)
    report = make_dispatcher(
        engine, {"webhook": webhook_channel(webhook)}, clock, max_attempts=2
    ).run_once()
    assert (report.claimed, report.failed, report.delivered) == (1, 1, 0)
    (message,) = messages(engine)
    assert (message.status, message.attempts) == ("failed", 3)
    assert message.last_error is not None and "never finished" in message.last_error
    assert not webhook.accepted


def test_a_graceful_stop_mid_batch_gives_the_rest_back_at_once(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    clock = FakeClock()
    open_alerts(engine, clock, NotificationPlan(webhook=True), 6)
    inner = webhook_channel(webhook)
    first = make_dispatcher(engine, {}, clock)

    class StopAfterTwo:
        name = "webhook"
        calls = 0

        def deliver(self, message: ClaimedMessage) -> None:
            inner.deliver(message)
            StopAfterTwo.calls += 1
            if StopAfterTwo.calls == 2:
                first.request_stop()

        def close(self) -> None:
            pass

        def shutdown(self) -> None:
            pass

    first.channels = {"webhook": StopAfterTwo()}
    report = first.run_once()
    assert (report.delivered, report.released) == (2, 4)
    second = make_dispatcher(engine, {"webhook": inner}, clock)
    assert second.drain().delivered == 4, "no lease to wait for"
    second.stop()
    assert set(webhook.keys().values()) == {1} and len(webhook.accepted) == 6
    assert {m.attempts for m in messages(engine)} == {1}


def test_two_dispatchers_at_once_never_send_a_message_twice(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    open_alerts(engine, FakeClock(), NotificationPlan(webhook=True), 80)
    webhook.delay_s = 0.002  # a receiver that takes a moment, so both dispatchers get work
    dispatchers = [
        make_dispatcher(engine, {"webhook": webhook_channel(webhook)}, batch_size=10)
        for _ in range(2)
    ]
    reports = []
    barrier = threading.Barrier(2)

    def run(dispatcher: Dispatcher) -> None:
        barrier.wait()
        reports.append(dispatcher.drain())

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for dispatcher in dispatchers:
        dispatcher.stop()

    assert sum(r.delivered for r in reports) == 80
    assert all(r.retried == r.failed == 0 for r in reports)
    assert set(webhook.keys().values()) == {1} and len(webhook.accepted) == 80
    by_dispatcher = Counter(a.dispatcher for a in attempts(engine))
    assert sum(by_dispatcher.values()) == 80
    if engine.dialect.name == "postgresql":
        # SKIP LOCKED: each claims rows the other holds no lock on, so both work in parallel.
        assert len(by_dispatcher) == 2 and min(by_dispatcher.values()) >= 10


def test_a_batch_longer_than_the_lease_is_renewed_and_sent_once_by_two_dispatchers(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    """500 messages, two dispatchers, a receiver that sleeps per request: each batch of 250
    lasts at least twice the lease, so without renewal the other dispatcher would claim and
    send the batch's tail again."""
    # A lease of a second: the renewal must come within it even on a machine whose cores the
    # rest of the suite keeps busy (at 0.4 s a starved renewal lost claims, safely, in 1 run of 5).
    count, batch_size, lease_s = 500, 250, 1.0
    webhook.delay_s = 0.008
    assert batch_size * webhook.delay_s >= 2 * lease_s
    now = datetime.now(UTC)
    rows: list[OutboxRow] = [
        OutboxRow(
            id=str(uuid.uuid4()),
            channel="webhook",
            kind="alert_opened",
            recipient=None,
            alert_id=None,
            payload={"n": n},
            status=MessageStatus.PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        for n in range(count)
    ]
    with engine.begin() as connection:
        insert_outbox_messages(connection, rows=rows)
    dispatchers = [
        make_dispatcher(
            engine, {"webhook": webhook_channel(webhook)}, batch_size=batch_size, lease_s=lease_s
        )
        for _ in range(2)
    ]
    reports: list[DispatchReport] = []
    barrier = threading.Barrier(2)

    def run(dispatcher: Dispatcher) -> None:
        barrier.wait()
        report = DispatchReport()
        while report.delivered < count:  # until the other dispatcher has nothing left either
            round_report = dispatcher.run_once()
            report.add(round_report)
            if round_report.claimed == 0:
                break
        reports.append(report)

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    for dispatcher in dispatchers:
        dispatcher.stop()

    keys = webhook.keys()
    duplicates = sum(n - 1 for n in keys.values())
    lost = count - len(keys)
    print(
        f"{engine.dialect.name}: {count} sent by 2 dispatchers in {elapsed:.1f} s, "
        f"{duplicates} duplicates, {lost} lost, {sum(r.renewed for r in reports)} renewals, "
        f"{sum(r.lost for r in reports)} claims lost"
    )
    assert duplicates == 0 and lost == 0
    assert set(keys) == {row["id"] for row in rows}
    assert sum(r.delivered for r in reports) == count
    assert all(r.retried == r.failed == r.lost == 0 for r in reports)
    assert sum(r.renewed for r in reports) >= count // batch_size  # every batch outlived it
    assert {m.status for m in messages(engine)} == {MessageStatus.DELIVERED}
    assert len(attempts(engine)) == count


def test_a_dispatcher_whose_lease_ran_out_does_not_send_what_another_claimed(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    open_alerts(engine, FakeClock(), NotificationPlan(webhook=True), 4)
    other_report = DispatchReport()

    class StallingClock(FakeClock):
        """Stalls once, past the lease, right after the first message is marked delivered:
        the other dispatcher claims and sends the rest meanwhile."""

        calls_to_stall: int | None = None

        def __call__(self) -> datetime:
            if self.calls_to_stall is not None:
                self.calls_to_stall -= 1
                if self.calls_to_stall == 0:
                    self.advance(11.0)
                    other_report.add(other.run_once())
            return self.now

    clock = StallingClock()
    other = make_dispatcher(engine, {"webhook": webhook_channel(webhook)}, clock=FakeClock())
    other.clock = lambda: clock.now

    class Arming:
        name = "webhook"

        def __init__(self, inner: Channel) -> None:
            self.inner = inner

        def deliver(self, message: ClaimedMessage) -> None:
            self.inner.deliver(message)
            if clock.calls_to_stall is None:
                clock.calls_to_stall = 2  # "finished" of this send, then the next message's check

        def close(self) -> None:
            self.inner.close()

        def shutdown(self) -> None:
            self.inner.shutdown()

    stalled = make_dispatcher(
        engine, {"webhook": Arming(webhook_channel(webhook))}, clock=clock, lease_s=10.0
    )
    report = stalled.run_once()
    stalled.stop()
    other.stop()

    assert (report.claimed, report.delivered, report.lost) == (4, 1, 3)
    assert other_report.delivered == 3
    assert set(webhook.keys().values()) == {1} and len(webhook.accepted) == 4
    assert {m.status for m in messages(engine)} == {MessageStatus.DELIVERED}


def test_a_claim_skips_the_rows_another_dispatcher_is_claiming(engine: Engine) -> None:
    clock = FakeClock()
    open_alerts(engine, clock, NotificationPlan(webhook=True), 10)

    def claim(connection: Any, name: str) -> set[str]:
        claimed = claim_messages(
            connection,
            channels=["webhook"],
            dispatcher=name,
            now=clock.now,
            claimed_until=clock.now + timedelta(seconds=60),
            limit=6,
        )
        return {m.id for m in claimed}

    second: dict[str, set[str]] = {}

    def claim_in_another_transaction() -> None:
        with engine.begin() as connection:
            second["ids"] = claim(connection, "second")

    with engine.connect() as connection:
        transaction = connection.begin()
        first = claim(connection, "first")  # rows claimed and locked, not yet committed
        thread = threading.Thread(target=claim_in_another_transaction)
        thread.start()
        thread.join(1.0)
        if engine.dialect.name == "postgresql":
            # SKIP LOCKED: the other dispatcher does not wait, and takes other rows.
            assert not thread.is_alive()
            assert second["ids"] and not second["ids"] & first
        else:
            assert thread.is_alive(), "SQLite serialises claims behind the write lock"
        transaction.commit()
    thread.join(10)
    assert len(first) == 6
    assert len(second["ids"]) == 4 and not second["ids"] & first


# --- digests -------------------------------------------------------------------------------------


def test_digest_mode_sends_one_mail_per_recipient_per_interval(
    engine: Engine, smtp: SmtpServer
) -> None:
    clock = FakeClock()
    plan = NotificationPlan(email_recipients=RECIPIENTS, email_digest=True)
    first_ids = open_alerts(engine, clock, plan, 3)
    channel = email_channel(smtp)
    dispatchers = [
        make_dispatcher(engine, {"email": channel}, clock, digest_interval_s=600.0)
        for _ in range(2)
    ]
    assert dispatchers[0].run_once().digests == 0, "the interval has not passed"

    clock.advance(300)
    second_ids = open_alerts(engine, clock, plan, 2)
    clock.advance(300)
    assert dispatchers[0].compose_digests() == 2
    assert dispatchers[1].compose_digests() == 0, "another dispatcher finds nothing left"
    assert dispatchers[1].drain().delivered == 2
    assert len(smtp.inbox.mails) == 2
    for mail in smtp.inbox.mails:
        assert mail.subject == "CVM: 5 new churn alerts"
        for alert_id in first_ids + second_ids:
            assert f"Alert {alert_id}:" in mail.body

    clock.advance(60)
    third_ids = open_alerts(engine, clock, plan, 1)
    clock.advance(300)
    assert dispatchers[0].run_once().digests == 0, "the next digest waits for its interval"
    clock.advance(300)
    report = dispatchers[0].drain()
    assert (report.digests, report.delivered) == (2, 2)
    for dispatcher in dispatchers:
        dispatcher.stop()
    latest = smtp.inbox.mails[2:]
    assert {m.subject for m in latest} == {"CVM: 1 new churn alert"}
    assert all(f"Alert {third_ids[0]}:" in m.body for m in latest)
    assert set(smtp.inbox.message_ids().values()) == {1}


# --- the real thing: scores in, notifications out -------------------------------------------------


def test_in_process_dispatcher_delivers_the_alert_a_score_opened(
    engine: Engine,
    webhook: WebhookReceiver,
    smtp: SmtpServer,
    database_url: str,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: Any,
) -> None:
    settings = settings_for(
        database_url,
        churn_alert_probability=0.000001,  # every customer crosses
        webhook_enabled=True,
        webhook_url=webhook.url,
        webhook_secret=SECRET,
        email_enabled=True,
        email_recipients=list(RECIPIENTS[:1]),
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
        dispatch_in_process=True,
        dispatch_poll_s=0.02,
    )
    model = registry.get(Task.CHURN)
    assert model is not None
    customer = customer_record(sample_rows["existing"].iloc[0], model.schema)
    with TestClient(create_app(settings, registry)) as client:
        sent = time.perf_counter()
        response = client.post("/v1/churn/scores", json={"customers": [customer]})
        assert response.status_code == 200
        while (not webhook.accepted or not smtp.inbox.mails) and time.perf_counter() - sent < 10:
            time.sleep(0.005)
        (alert,) = client.get("/v1/alerts", params={"customer_id": customer["customer_id"]}).json()[
            "items"
        ]
    (request,) = webhook.accepted
    body = json.loads(request.body)
    assert body["alert"]["id"] == alert["id"]
    assert body["alert"]["customer_id"] == customer["customer_id"]
    assert request.signed_correctly
    (mail,) = smtp.inbox.mails
    assert f"Alert {alert['id']}:" in mail.body
    with engine.connect() as connection:
        assert outbox_counts(connection) == {"delivered": 2}


def test_cli_dispatch_once(
    engine: Engine,
    webhook: WebhookReceiver,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("CVM_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = runner.invoke(cli, ["dispatch", "--once"])
        assert result.exit_code == 2
        assert "no notification channel is on" in result.output

        monkeypatch.setenv("CVM_WEBHOOK_ENABLED", "true")
        monkeypatch.setenv("CVM_WEBHOOK_URL", webhook.url)
        monkeypatch.setenv("CVM_WEBHOOK_SECRET", SECRET)
        get_settings.cache_clear()
        open_alerts(engine, FakeClock(), NotificationPlan(webhook=True), 3)
        webhook.status = 503
        result = runner.invoke(cli, ["dispatch", "--once"])
        assert result.exit_code == 1, result.output
        assert "delivered 0, retrying 3" in result.output

        webhook.status = 200
        with engine.begin() as connection:  # skip the backoff wait
            connection.execute(
                outbox_message_table.update().values(next_attempt_at=datetime.now(UTC))
            )
        result = runner.invoke(cli, ["dispatch", "--once", "--batch-size", "2"])
        assert result.exit_code == 0, result.output
        assert "delivered 3, retrying 0, failed 0" in result.output
        assert "outbox now: pending 0, delivered 3" in result.output
        assert len(webhook.accepted) == 3
    finally:
        get_settings.cache_clear()


def test_dispatch_has_help() -> None:
    result = CliRunner().invoke(cli, ["dispatch", "--help"])
    assert result.exit_code == 0
    assert "--once" in result.output


# --- transport details ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# The subject is the SMTP session (STARTTLS, login, certificates): the outbox under it is the
# same as in the delivery tests above, which run on both databases.
@ON_SQLITE_ONLY
# aiosmtpd itself sets the deprecated attribute after a successful login.
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")
def test_smtp_with_starttls_and_authentication(
    engine: Engine, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"cvm", b"pw")
        return AuthResult(success=ok)

    server = SmtpServer(
        kwargs={
            "tls_context": context,
            "require_starttls": True,
            "auth_required": True,
            "authenticator": authenticate,
        }
    )
    server.start()
    try:
        clock = FakeClock()
        open_alerts(engine, clock, NotificationPlan(email_recipients=RECIPIENTS[:1]), 2)
        trusted = ssl.create_default_context(cafile=str(cert))
        # A refused login ends in the client's timeout: keep it short.
        wrong = email_channel(
            server,
            starttls=True,
            ssl_context=trusted,
            username="cvm",
            password="nope",
            timeout_s=0.3,
        )
        refused = make_dispatcher(engine, {"email": wrong}, clock, batch_size=1).run_once()
        assert refused.retried == 1 and not server.inbox.mails
        plain = email_channel(server)  # no STARTTLS: the server refuses to go on
        clock.advance(10)
        refused = make_dispatcher(engine, {"email": plain}, clock).drain()
        assert refused.retried == 2 and not server.inbox.mails
        untrusted = email_channel(server, starttls=True, username="cvm", password="pw")
        clock.advance(10)
        refused = make_dispatcher(engine, {"email": untrusted}, clock).drain()
        assert refused.retried == 2 and "CERTIFICATE_VERIFY_FAILED" in refused.errors[0]
        right = email_channel(
            server, starttls=True, ssl_context=trusted, username="cvm", password="pw"
        )
        clock.advance(30)
        assert make_dispatcher(engine, {"email": right}, clock).drain().delivered == 2
        assert len(server.inbox.mails) == 2
    finally:
        server.stop()


def test_webhook_errors_are_delivery_errors() -> None:
    channel = WebhookChannel(url=f"http://127.0.0.1:{free_port()}/x", secret=SECRET, timeout_s=1)
    message = ClaimedMessage(
        id=str(uuid.uuid4()),
        channel="webhook",
        kind="alert_opened",
        recipient=None,
        alert_id=1,
        payload={"id": 1},
        attempts=1,
        created_at=datetime.now(UTC),
    )
    with pytest.raises(DeliveryError, match="ConnectError"):
        channel.deliver(message)
    channel.shutdown()


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(4)
    for attempt, (low, high) in enumerate([(1, 2), (2, 4), (4, 8), (8, 16)], start=1):
        delays = [retry_delay(attempt, base_s=2, max_s=3600, rng=rng) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high
        assert max(delays) - min(delays) > (high - low) / 2, "jitter spreads the retries"
    assert retry_delay(60, base_s=2, max_s=3600, rng=rng) <= 3600


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"email_enabled": True}, "email_recipients"),
        ({"webhook_enabled": True, "webhook_secret": "x"}, "webhook_url"),
        (
            {
                "webhook_enabled": True,
                "webhook_url": "http://crm.bank.example/x",
                "webhook_secret": "x",
            },
            "https",
        ),
        ({"dispatch_lease_s": 5.0}, "dispatch_lease_s"),
    ],
)
def test_notification_settings_are_checked(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)
    assert Settings(
        webhook_enabled=True, webhook_url="https://crm.bank.example/x", webhook_secret="x"
    )


# --- per-tenant routing (issue 20, item 14) -------------------------------------------------------


def test_each_tenant_receives_only_its_own_alerts_and_an_unrouted_one_is_held(
    engine: Engine,
    database_url: str,
    settings_for: Any,
    registry: ModelRegistry,
    sample_rows: Any,
    smtp: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receivers = {"bank-a": WebhookReceiver(), "bank-b": WebhookReceiver()}
    for tenant, receiver in receivers.items():
        receiver.start()
        monkeypatch.setenv(f"HOOK_KEY_{tenant[-1].upper()}", f"key-of-{tenant}")
    routes = {
        tenant: {
            "webhook_url": receiver.url,
            "webhook_secret_env": f"HOOK_KEY_{tenant[-1].upper()}",
            "email_recipients": [f"retention@{tenant}.example"],
        }
        for tenant, receiver in receivers.items()
    }
    settings = settings_for(
        database_url,
        auth_enabled=True,
        tenant_isolation=True,
        churn_alert_probability=0.000001,  # every customer crosses
        email_enabled=True,
        email_recipients=["global@bank.example"],  # alerts without a tenant only
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
        notification_routes=routes,
        dispatch_in_process=True,
        dispatch_poll_s=0.02,
    )
    model = registry.get(Task.CHURN)
    assert model is not None
    rows = sample_rows["existing"]
    app = create_app(settings, registry)
    scopes = sorted(ALL_SCOPES)
    keys = {
        tenant: create_client(app.state.engine, name=tenant, scopes=scopes, tenant=tenant)[1]
        for tenant in ("bank-a", "bank-b", "bank-c")
    }
    sent: dict[str, str] = {}
    try:
        with TestClient(app) as client:
            for index, tenant in enumerate(keys):
                customer = customer_record(rows.iloc[index], model.schema)
                sent[tenant] = customer["customer_id"]
                answer = client.post(
                    "/v1/churn/scores",
                    json={"customers": [customer]},
                    headers={"X-API-Key": keys[tenant]},
                )
                assert answer.status_code == 200
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (
                any(not r.accepted for r in receivers.values()) or len(smtp.inbox.mails) < 2
            ):
                time.sleep(0.02)
            time.sleep(0.3)  # anything misrouted would arrive by now
    finally:
        for receiver in receivers.values():
            receiver.stop()
    for tenant, receiver in receivers.items():
        (request,) = receiver.accepted
        assert json.loads(request.body)["alert"]["customer_id"] == sent[tenant]
        expected = hmac.new(f"key-of-{tenant}".encode(), request.body, hashlib.sha256)
        assert request.signature == f"sha256={expected.hexdigest()}"
    mails = {mail.recipients[0]: mail for mail in smtp.inbox.mails}
    assert set(mails) == {"retention@bank-a.example", "retention@bank-b.example"}
    assert sent["bank-a"] in mails["retention@bank-a.example"].subject
    # bank-c has no route: its alert's notification is held, visible, and sent nowhere.
    with engine.connect() as connection:
        held = connection.execute(
            select(OutboxMessage.__table__).where(OutboxMessage.status == "held")
        ).all()
    assert [(m.tenant, m.payload["customer_id"]) for m in held] == [("bank-c", sent["bank-c"])]
    assert "no notification route" in (held[0].last_error or "")


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"webhook_url": "http://example.com/x", "webhook_secret_env": "HOME"}, "https://"),
        ({"webhook_url": "https://example.com/x"}, "webhook_secret_env"),
        ({"webhook_url": "https://example.com/x", "webhook_secret_env": "CVM_UNSET_X"}, "set"),
        ({"email_recipients": ["not-an-address"]}, "e-mail addresses"),
        ({"smtp": "x"}, "Extra inputs"),
        (
            {"email_recipients": ["a@b.c"], "branches": {"north": {"email_recipients": ["x"]}}},
            r"branches\['north'\]",
        ),
    ],
)
def test_tenant_routes_are_checked(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        email = "email_recipients" in route
        Settings(email_enabled=email, notification_routes={"bank-a": route})
