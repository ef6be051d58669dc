"""Delivering the outbox: e-mail over SMTP and a signed HTTPS webhook, retried until they land.

The dispatcher claims due messages with a lease, sends each one, records the attempt and marks
it delivered, or schedules a retry with exponential backoff and jitter. Any number of
dispatchers may run against one database: claims never overlap while a lease holds. A batch
that takes longer than the lease renews it (at half-time, for the messages still held) and
sends only what it still holds, so a slow receiver never makes two dispatchers send one
message. A dispatcher killed mid-send releases its claims when the lease runs out; a receiver
may then see a message twice, always with the same ``Idempotency-Key`` (webhook) or
``Message-ID`` (e-mail), so it can keep exactly one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import smtplib
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

import httpx2
import orjson
from sqlalchemy import Engine

from app.alerts import repository as repo
from app.alerts.repository import ClaimedMessage, DigestItem, OutboxRow
from app.alerts.service import Clock, alert_snapshot, utc_now
from app.alerts.states import MessageStatus
from app.config import Settings
from app.db.errors import describe_db_error

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CVM-Signature"
USER_AGENT = "cvm-dispatcher/1"


class DeliveryError(Exception):
    """The receiver did not take the message; it will be retried."""


class Channel(Protocol):
    """A way to deliver outbox messages (one per ``channel`` value)."""

    name: str

    def deliver(self, message: ClaimedMessage) -> None:
        """Hand the message to the receiver; raise ``DeliveryError`` if it did not take it."""

    def close(self) -> None:
        """Drop connections kept between deliveries (end of a batch)."""

    def shutdown(self) -> None:
        """Release everything for good (the dispatcher stops)."""


# --- webhook -------------------------------------------------------------------------------------


def webhook_body(message: ClaimedMessage) -> bytes:
    """The exact bytes posted: the same on every attempt, so signatures and bodies repeat."""
    return orjson.dumps(message.payload, option=orjson.OPT_SORT_KEYS)


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookChannel:
    """POSTs each message as JSON, signed, with the message id as its idempotency key."""

    name = "webhook"

    def __init__(
        self, *, url: str, secret: str, timeout_s: float, client: httpx2.Client | None = None
    ) -> None:
        self.url = url
        self._secret = secret
        self._client = client or httpx2.Client(
            timeout=timeout_s, headers={"User-Agent": USER_AGENT}, follow_redirects=False
        )

    def deliver(self, message: ClaimedMessage) -> None:
        """POST the message; any 2xx answer means the receiver has it."""
        body = webhook_body(message)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.id,
            SIGNATURE_HEADER: sign(body, self._secret),
        }
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx2.HTTPError as error:
            raise DeliveryError(f"webhook: {type(error).__name__}: {error}") from error
        if not response.is_success:
            raise DeliveryError(f"webhook answered {response.status_code}")

    def close(self) -> None:
        """Nothing to drop between batches: the client keeps its pool for the next one."""

    def shutdown(self) -> None:
        """Close the HTTP client for good."""
        self._client.close()


BRANCH_RECIPIENT = "branch:"


def branch_recipient(branch: str) -> str:
    """The recipient of a webhook message meant for one branch's receiver."""
    return f"{BRANCH_RECIPIENT}{branch}"


def branch_of(recipient: str | None) -> str | None:
    """The branch a webhook message is addressed to, if any."""
    if recipient is None or not recipient.startswith(BRANCH_RECIPIENT):
        return None
    return recipient[len(BRANCH_RECIPIENT) :]


class TenantWebhooks:
    """The webhook channel with one receiver per tenant: a message goes to its own tenant's
    receiver (the default one for messages without a tenant), never to another's."""

    name = "webhook"

    def __init__(
        self,
        *,
        default: WebhookChannel | None,
        tenants: Mapping[str, WebhookChannel],
        branches: Mapping[tuple[str, str], WebhookChannel] | None = None,
    ) -> None:
        self.default = default
        self.tenants = dict(tenants)
        self.branches = dict(branches or {})

    def deliver(self, message: ClaimedMessage) -> None:
        """Hand the message to its branch's receiver when it is addressed to a branch that has
        one, else to its tenant's; DeliveryError (retried) without one."""
        branch = branch_of(message.recipient)
        if message.tenant is not None and branch is not None:
            found = self.branches.get((message.tenant, branch))
            if found is not None:
                found.deliver(message)
                return
        channel = self.default if message.tenant is None else self.tenants.get(message.tenant)
        if channel is None:
            raise DeliveryError("webhook: no receiver is configured for this message's tenant")
        channel.deliver(message)

    def close(self) -> None:
        """Nothing to drop between batches."""

    def shutdown(self) -> None:
        """Close every receiver's HTTP client."""
        for channel in (self.default, *self.tenants.values(), *self.branches.values()):
            if channel is not None:
                channel.shutdown()


# --- e-mail --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to hand e-mail over."""

    host: str
    port: int
    starttls: bool
    username: str | None
    password: str | None
    timeout_s: float
    sender: str
    ssl_context: ssl.SSLContext | None = None


def message_id_header(message_id: str, sender: str) -> str:
    """An RFC 5322 Message-ID derived from the outbox id: a retry repeats it exactly."""
    domain = sender.rpartition("@")[2] or "cvm.invalid"
    return f"<{message_id}@{domain}>"


def _percent(probability: float) -> str:
    return f"{probability * 100:.1f}%"


def render_email(message: ClaimedMessage, *, sender: str) -> EmailMessage:
    """The e-mail for an alert or a digest; every header is derived from the stored message."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.recipient or ""
    email["Date"] = format_datetime(message.created_at)
    email["Message-ID"] = message_id_header(message.id, sender)
    email["X-CVM-Message-ID"] = message.id
    payload = message.payload
    if message.kind == CASEWORK_DIGEST:
        return _casework_digest(email, payload)
    if message.kind == CASEWORK_ROUTED:
        return _casework_routed(email, payload)
    if message.kind == "digest":
        alerts = payload["alerts"]
        email["Subject"] = f"CVM: {len(alerts)} new churn alert{'s' if len(alerts) != 1 else ''}"
        lines = [f"{len(alerts)} customer(s) crossed the churn alert threshold:", ""]
        for alert in alerts:
            lines.extend(_alert_lines(alert))
            lines.append("")
        email.set_content("\n".join(lines))
        return email
    email["Subject"] = (
        f"CVM churn alert: customer {payload['customer_id']} "
        f"({payload['risk_band']} risk, {_percent(payload['probability'])})"
    )
    email["X-CVM-Alert-ID"] = str(payload["id"])
    body = [*_alert_lines(payload), "", "Acknowledge it to take ownership:"]
    body.append(f"POST {payload['href']}/acknowledge")
    email.set_content("\n".join(body))
    return email


CASEWORK_DIGEST = "casework_digest"
CASEWORK_ROUTED = "casework_routed"


def _casework_routed(email: EmailMessage, payload: Mapping[str, Any]) -> EmailMessage:
    """A churn alert routed to someone of the branch."""
    email["Subject"] = (
        f"CVM churn alert {payload['alert_id']} for {payload['assignee'] or 'the central queue'}"
    )
    email.set_content(
        "\n".join(
            [
                f"Alert {payload['alert_id']}: customer {payload['customer_id']}, branch "
                f"{payload['branch']}, assigned to {payload['assignee'] or 'the central queue'}.",
                f"Accept by {payload['accept_by']}: POST /v1/casework/alerts/"
                f"{payload['alert_id']}/accept",
                f"Why: {payload['reason']}",
            ]
        )
    )
    return email


def _casework_digest(email: EmailMessage, payload: Mapping[str, Any]) -> EmailMessage:
    """One person's daily list of the churn alerts routed to them."""
    items = payload["alerts"]
    email["Subject"] = f"CVM: {len(items)} churn alert{'s' if len(items) != 1 else ''} for you"
    lines = [f"Good morning {payload['name']}, these alerts are yours ({payload['day']}):", ""]
    for item in items:
        waiting = f", accept by {item['accept_by']}" if item["status"] == "assigned" else ""
        lines.append(
            f"- alert {item['alert_id']}: customer {item['customer_id']}, {item['status']}{waiting}"
        )
        lines.append(f"  GET /v1/casework/alerts/{item['alert_id']}")
    email.set_content("\n".join(lines))
    return email


def _alert_lines(alert: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Alert {alert['id']}: customer {alert['customer_id']}, {alert['risk_band']} risk "
        f"({_percent(alert['probability'])}), opened {alert['opened_at']}",
    ]
    reasons = [r for r in alert.get("reasons", []) if r.get("direction") == "raises"]
    if reasons:
        lines.append("  Why:")
        lines.extend(f"  - {r['text']}" for r in reasons)
    lines.append("  Recommended:")
    lines.extend(f"  - {action}" for action in alert.get("actions", []))
    lines.append(f"  Details: GET {alert['href']}")
    return lines


class EmailChannel:
    """Sends each message to its one recipient; one SMTP session serves a whole batch."""

    name = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None

    def deliver(self, message: ClaimedMessage) -> None:
        """Hand the message to the SMTP server; its 250 answer to DATA means it has it."""
        if not message.recipient:
            raise DeliveryError("e-mail message without a recipient")
        email = render_email(message, sender=self.config.sender)
        try:
            smtp = self._session()
            smtp.send_message(email, from_addr=self.config.sender, to_addrs=[message.recipient])
        except (smtplib.SMTPException, OSError) as error:
            self.close()  # the session may be half-broken: start afresh next time
            raise DeliveryError(f"smtp: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        """End the SMTP session, politely if it still answers."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def shutdown(self) -> None:
        """Same as ``close``."""
        self.close()

    def _session(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        config = self.config
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        try:
            smtp.ehlo()
            if config.starttls:
                smtp.starttls(context=config.ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password or "")
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp


# --- dispatcher ----------------------------------------------------------------------------------


def retry_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * 2**(attempt - 1), capped, times 0.5 to 1."""
    exponential = min(max_s, base_s * 2.0 ** min(attempt - 1, 32))
    # Jitter spreads the retries of messages that failed together (receiver down) so they
    # do not all return at the same instant.
    return exponential * (0.5 + rng.random() / 2)


@dataclass
class DispatchReport:
    """What one round did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    digests: int = 0
    renewed: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: DispatchReport) -> None:
        """Accumulate another round's counts."""
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retried += other.retried
        self.failed += other.failed
        self.released += other.released
        self.digests += other.digests
        self.renewed += other.renewed
        self.lost += other.lost
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class DispatchPolicy:
    """How hard and how often to try."""

    batch_size: int = 50
    lease_s: float = 120.0
    max_attempts: int = 30
    backoff_base_s: float = 2.0
    backoff_max_s: float = 3600.0
    poll_s: float = 1.0
    digest_interval_s: float = 0.0


def dispatcher_name() -> str:
    """host:pid:random, so attempts show which process made them."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Delivers pending outbox messages through the configured channels."""

    def __init__(
        self,
        *,
        engine: Engine,
        channels: Mapping[str, Channel],
        policy: DispatchPolicy,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        name: str | None = None,
    ) -> None:
        self.engine = engine
        self.channels = dict(channels)
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.name = name or dispatcher_name()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # -- one round ---------------------------------------------------------------------------

    def run_once(self) -> DispatchReport:
        """Compose due digests, claim one batch of due messages and try each of them once."""
        report = DispatchReport()
        if "email" in self.channels and self.policy.digest_interval_s > 0:
            report.digests = self.compose_digests()
        now = self.clock()
        with self.engine.begin() as connection:
            claimed = repo.claim_messages(
                connection,
                channels=sorted(self.channels),
                dispatcher=self.name,
                now=now,
                claimed_until=now + timedelta(seconds=self.policy.lease_s),
                limit=self.policy.batch_size,
            )
        report.claimed = len(claimed)
        lease = timedelta(seconds=self.policy.lease_s)
        held, held_until = {m.id for m in claimed}, now + lease
        try:
            for index, message in enumerate(claimed):
                if self._stop.is_set():
                    report.released = self._release(claimed[index:])
                    break
                at = self.clock()
                if at >= held_until - lease / 2:
                    # Half the lease is gone: extend it for the rest of the batch, so a batch
                    # that outlasts the lease is never claimed (and sent) by another too.
                    held, held_until = self._renew(claimed[index:], at, at + lease), at + lease
                    report.renewed += 1
                if message.id not in held:
                    report.lost += 1  # the lease ran out (a stall): its new holder sends it
                    continue
                self._deliver(message, report)
        finally:
            for channel in self.channels.values():
                channel.close()
        return report

    def drain(self, *, max_rounds: int = 1_000_000) -> DispatchReport:
        """Run rounds until nothing due is left (messages waiting for a retry stay)."""
        total = DispatchReport()
        for _ in range(max_rounds):
            report = self.run_once()
            total.add(report)
            if report.claimed < self.policy.batch_size or self._stop.is_set():
                break
        return total

    def compose_digests(self) -> int:
        """Turn the undigested alerts of each due recipient into one digest message."""
        now = self.clock()
        cutoff = now - timedelta(seconds=self.policy.digest_interval_s)
        with self.engine.begin() as connection:
            recipients = repo.due_digest_recipients(connection, cutoff=cutoff)
        composed = 0
        for recipient in recipients:
            message_id = str(uuid.uuid4())
            with self.engine.begin() as connection:
                items = repo.claim_digest_entries(
                    connection, recipient=recipient, message_id=message_id
                )
                if not items:
                    continue  # another dispatcher took them
                repo.insert_outbox_messages(
                    connection, rows=[_digest_row(message_id, recipient, items, now)]
                )
            composed += 1
        return composed

    def _deliver(self, message: ClaimedMessage, report: DispatchReport) -> None:
        channel = self.channels[message.channel]
        started = self.clock()
        error: str | None = None
        if message.attempts > self.policy.max_attempts:
            # Claimed this often without an attempt ever being recorded: each try killed its
            # dispatcher. Stop here rather than take down every dispatcher in turn.
            error = "gave up: earlier attempts never finished (dispatcher killed mid-send?)"
        else:
            try:
                channel.deliver(message)
            except DeliveryError as failure:
                error = str(failure)
            except Exception as failure:  # a bug in a channel must not stop the other messages
                logger.exception("channel %s failed unexpectedly", message.channel)
                error = f"{type(failure).__name__}: {failure}"
        finished = self.clock()
        with self.engine.begin() as connection:
            repo.record_attempt(
                connection,
                message_id=message.id,
                number=message.attempts,
                dispatcher=self.name,
                started_at=started,
                finished_at=finished,
                error=error,
            )
            if error is None:
                repo.mark_delivered(connection, message_id=message.id, delivered_at=finished)
                report.delivered += 1
                return
            give_up = message.attempts >= self.policy.max_attempts
            delay = retry_delay(
                message.attempts,
                base_s=self.policy.backoff_base_s,
                max_s=self.policy.backoff_max_s,
                rng=self.rng,
            )
            repo.schedule_retry(
                connection,
                message_id=message.id,
                dispatcher=self.name,
                next_attempt_at=finished + timedelta(seconds=delay),
                error=error,
                give_up=give_up,
            )
        if give_up:
            report.failed += 1
            logger.error(
                "message %s (%s) failed after %d attempts: %s",
                message.id,
                message.channel,
                message.attempts,
                error,
            )
        else:
            report.retried += 1
            report.errors.append(error)
            logger.warning(
                "message %s (%s) attempt %d failed, retry in %.1f s: %s",
                message.id,
                message.channel,
                message.attempts,
                delay,
                error,
            )

    def _renew(self, messages: list[ClaimedMessage], now: datetime, until: datetime) -> set[str]:
        with self.engine.begin() as connection:
            return repo.renew_claims(
                connection,
                message_ids=[m.id for m in messages],
                dispatcher=self.name,
                now=now,
                claimed_until=until,
            )

    def _release(self, messages: list[ClaimedMessage]) -> int:
        with self.engine.begin() as connection:
            return repo.release_claims(
                connection, message_ids=[m.id for m in messages], dispatcher=self.name
            )

    # -- running -----------------------------------------------------------------------------

    def run(self, *, on_round: Callable[[DispatchReport], None] | None = None) -> None:
        """Dispatch until ``stop`` is called: back to back while busy, polling when idle."""
        failures = 0
        while not self._stop.is_set():
            try:
                report = self.run_once()
            except Exception as error:
                # Database down: keep the process up and try again later, ever more slowly.
                failures += 1
                wait = min(self.policy.poll_s * 2**failures, 60.0)
                logger.warning(
                    "dispatch round failed (%s); next in %.0f s", describe_db_error(error), wait
                )
                self._sleep(wait)
                continue
            failures = 0
            if on_round is not None and (report.claimed or report.digests):
                on_round(report)
            if report.claimed < self.policy.batch_size:
                self._sleep(self.policy.poll_s)

    def start(self) -> None:
        """Run in a background thread (the in-process dispatcher)."""
        if self._thread is not None:
            raise RuntimeError("dispatcher already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="cvm-dispatcher", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask ``run`` to end after the message in hand (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the message in hand, give back the rest of the batch, and end."""
        self.request_stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        for channel in self.channels.values():
            channel.shutdown()

    def wake(self) -> None:
        """Poll now rather than at the end of the idle wait."""
        self._wake.set()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()


def _digest_row(
    message_id: str, recipient: str, items: list[DigestItem], now: datetime
) -> OutboxRow:
    alerts = [
        {
            **alert_snapshot(
                alert_id=item.alert_id,
                customer_id=item.customer_id,
                risk_band=item.risk_band,
                probability=item.probability,
                reasons=item.reasons,
                actions=item.actions,
                model_version=None,
                opened_at=item.opened_at,
            ),
            "status": item.status,
        }
        for item in items
    ]
    return OutboxRow(
        id=message_id,
        channel="email",
        kind="digest",
        recipient=recipient,
        alert_id=None,
        payload={"alerts": alerts},
        status=MessageStatus.PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )


# --- wiring --------------------------------------------------------------------------------------


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The channels the settings turn on (possibly none)."""
    channels: dict[str, Channel] = {}
    if settings.email_enabled:
        channels["email"] = EmailChannel(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                timeout_s=settings.smtp_timeout_s,
                sender=settings.email_from,
                ssl_context=(
                    ssl.create_default_context(cafile=str(settings.smtp_ca_file))
                    if settings.smtp_ca_file is not None
                    else None
                ),
            )
        )
    webhooks = {
        tenant: WebhookChannel(
            url=route.webhook_url,
            secret=route.webhook_secret(),
            timeout_s=settings.webhook_timeout_s,
        )
        for tenant, route in settings.notification_routes.items()
        if route.webhook_url is not None
    }
    branches = {
        (tenant, branch): WebhookChannel(
            url=branch_route.webhook_url,
            secret=branch_route.webhook_secret(),
            timeout_s=settings.webhook_timeout_s,
        )
        for tenant, route in settings.notification_routes.items()
        for branch, branch_route in route.branches.items()
        if branch_route.webhook_url is not None
    }
    default: WebhookChannel | None = None
    if settings.webhook_enabled:
        assert settings.webhook_url is not None and settings.webhook_secret is not None
        default = WebhookChannel(
            url=settings.webhook_url,
            secret=settings.webhook_secret.get_secret_value(),
            timeout_s=settings.webhook_timeout_s,
        )
    if default is not None or webhooks or branches:
        channels["webhook"] = TenantWebhooks(default=default, tenants=webhooks, branches=branches)
    return channels


def dispatch_policy(settings: Settings) -> DispatchPolicy:
    """The dispatcher's pace and patience from the settings."""
    return DispatchPolicy(
        batch_size=settings.dispatch_batch_size,
        lease_s=settings.dispatch_lease_s,
        max_attempts=settings.dispatch_max_attempts,
        backoff_base_s=settings.dispatch_backoff_base_s,
        backoff_max_s=settings.dispatch_backoff_max_s,
        poll_s=settings.dispatch_poll_s,
        digest_interval_s=settings.email_digest_minutes * 60,
    )


def build_dispatcher(settings: Settings, engine: Engine) -> Dispatcher | None:
    """A dispatcher for the enabled channels, or None when every channel is off."""
    channels = build_channels(settings)
    if not channels:
        return None
    return Dispatcher(engine=engine, channels=channels, policy=dispatch_policy(settings))
