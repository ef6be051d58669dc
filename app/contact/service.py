"""The contact policy: ``may_contact`` answers allowed, or the rule that blocks the contact.

Rules, in order: do-not-contact always blocks; marketing waits while a complaint is open
(asked of the casework domain); retention and marketing stop for D days after N negative
outcomes; retention and marketing contacts are capped per channel in a rolling window
(default 1 e-mail and 1 SMS per 7 days). Service contacts (the customer's own business) are
blocked by do-not-contact only. Contacts are recorded through the same policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.casework.service import customers_with_open_complaint, has_open_complaint
from app.config import Settings
from app.contact.schemas import ContactDecision, ContactOut, ContactRequest, DoNotContactOut
from app.contact.states import ContactChannel, ContactOutcome, ContactPurpose, ContactRule
from app.contact.tables import ContactRecord, DoNotContact, contact_record_table
from app.errors import Conflict, NotFound
from app.scoring.repository import TenantScope

CAPPED = frozenset({ContactPurpose.RETENTION, ContactPurpose.MARKETING})


class ContactBlocked(Conflict):
    """The contact policy blocks this contact; the body names the rule."""

    code = "contact_blocked"
    title = "Contact blocked"


@dataclass(frozen=True)
class ContactPolicy:
    """Caps per channel in a rolling window, and the suppression after negative outcomes."""

    caps: Mapping[ContactChannel, int] = field(
        default_factory=lambda: {ContactChannel.EMAIL: 1, ContactChannel.SMS: 1}
    )
    window: timedelta = timedelta(days=7)
    negative_limit: int = 3
    negative_suppression: timedelta = timedelta(days=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> ContactPolicy:
        """The policy the settings describe."""
        return cls(
            caps={ContactChannel(k): v for k, v in settings.contact_caps.items()},
            window=timedelta(days=settings.contact_cap_window_days),
            negative_limit=settings.contact_negative_limit,
            negative_suppression=timedelta(days=settings.contact_negative_days),
        )


def _records(tenant: str | None, customer_id: str) -> list[ColumnElement[bool]]:
    return [
        TenantScope(tenant).condition(ContactRecord.tenant),
        ContactRecord.customer_id == customer_id,
    ]


def _blocked(rule: ContactRule, detail: str) -> ContactDecision:
    return ContactDecision(allowed=False, rule=rule, detail=detail)


def may_contact(
    session: Session,
    *,
    policy: ContactPolicy,
    tenant: str | None,
    customer_id: str,
    channel: ContactChannel,
    purpose: ContactPurpose,
    at: datetime,
) -> ContactDecision:
    """Allowed, or the first rule that blocks the contact (and why)."""
    flag = session.scalars(
        select(DoNotContact).where(
            TenantScope(tenant).condition(DoNotContact.tenant),
            DoNotContact.customer_id == customer_id,
        )
    ).one_or_none()
    if flag is not None:
        return _blocked(ContactRule.DO_NOT_CONTACT, f"do not contact: {flag.reason}")
    if purpose is ContactPurpose.MARKETING and has_open_complaint(
        session, tenant=tenant, customer_id=customer_id
    ):
        return _blocked(ContactRule.OPEN_COMPLAINT, "no marketing while a complaint is open")
    if purpose not in CAPPED:
        return ContactDecision(allowed=True, rule=None, detail="service contact")
    since = at - policy.negative_suppression
    negatives = session.scalar(
        select(func.count()).where(
            *_records(tenant, customer_id),
            ContactRecord.outcome == ContactOutcome.NEGATIVE.value,
            ContactRecord.at > since,
            ContactRecord.at <= at,
        )
    )
    if (negatives or 0) >= policy.negative_limit:
        days = policy.negative_suppression.days
        return _blocked(
            ContactRule.NEGATIVE_OUTCOMES,
            f"{negatives} negative outcomes in the last {days} days "
            f"(limit {policy.negative_limit})",
        )
    cap = policy.caps.get(channel)
    if cap is not None:
        made = session.scalar(
            select(func.count()).where(
                *_records(tenant, customer_id),
                ContactRecord.channel == channel.value,
                ContactRecord.purpose.in_([p.value for p in CAPPED]),
                ContactRecord.at > at - policy.window,
                ContactRecord.at <= at,
            )
        )
        if (made or 0) >= cap:
            return _blocked(
                ContactRule.CHANNEL_CAP,
                f"{made} {channel.value} contact(s) in the last {policy.window.days} days "
                f"(cap {cap})",
            )
    return ContactDecision(allowed=True, rule=None, detail="no rule blocks it")


def record_contact(
    session: Session,
    *,
    policy: ContactPolicy,
    tenant: str | None,
    request: ContactRequest,
    recorded_by: str,
    at: datetime,
) -> ContactOut:
    """Record a contact the policy allows (409 naming the rule otherwise)."""
    decision = may_contact(
        session,
        policy=policy,
        tenant=tenant,
        customer_id=request.customer_id,
        channel=request.channel,
        purpose=request.purpose,
        at=at,
    )
    if not decision.allowed:
        session.rollback()
        raise ContactBlocked(decision.detail, extra={"rule": decision.rule})
    record = ContactRecord(
        tenant=tenant,
        customer_id=request.customer_id,
        channel=request.channel.value,
        purpose=request.purpose.value,
        outcome=request.outcome.value if request.outcome else None,
        at=at,
        recorded_by=recorded_by,
    )
    session.add(record)
    session.commit()
    return ContactOut.model_validate(record)


def set_do_not_contact(
    session: Session,
    *,
    tenant: str | None,
    customer_id: str,
    reason: str,
    recorded_by: str,
    at: datetime,
) -> DoNotContactOut:
    """Flag the customer do-not-contact (the reason is replaced if already flagged)."""
    flag = session.scalars(
        select(DoNotContact).where(
            TenantScope(tenant).condition(DoNotContact.tenant),
            DoNotContact.customer_id == customer_id,
        )
    ).one_or_none()
    if flag is None:
        flag = DoNotContact(tenant=tenant, customer_id=customer_id, created_at=at)
        session.add(flag)
    flag.reason = reason
    flag.recorded_by = recorded_by
    try:
        session.commit()
    except IntegrityError as error:  # flagged at the same moment by another request
        session.rollback()
        raise Conflict("the customer was flagged concurrently; retry") from error
    return DoNotContactOut.model_validate(flag)


def clear_do_not_contact(session: Session, *, tenant: str | None, customer_id: str) -> None:
    """Lift the flag (404 when the customer is not flagged)."""
    flag = session.scalars(
        select(DoNotContact).where(
            TenantScope(tenant).condition(DoNotContact.tenant),
            DoNotContact.customer_id == customer_id,
        )
    ).one_or_none()
    if flag is None:
        raise NotFound(f"customer {customer_id!r} is not flagged do-not-contact")
    session.delete(flag)
    session.commit()


def blocked_customers(
    session: Session,
    *,
    policy: ContactPolicy,
    tenant: str | None,
    channel: ContactChannel,
    purpose: ContactPurpose,
    at: datetime,
) -> dict[str, ContactRule]:
    """Every customer of the tenant the policy blocks for this channel and purpose at ``at``,
    with the first rule that blocks it: ``may_contact``'s rules, in its order, as a few
    set-based reads (a campaign's whole audience is checked at once)."""
    blocked: dict[str, ContactRule] = {}

    def add(customers: Iterable[str], rule: ContactRule) -> None:
        for customer in customers:
            blocked.setdefault(customer, rule)

    add(
        session.scalars(
            select(DoNotContact.customer_id).where(
                TenantScope(tenant).condition(DoNotContact.tenant)
            )
        ),
        ContactRule.DO_NOT_CONTACT,
    )
    if purpose is ContactPurpose.MARKETING:
        add(customers_with_open_complaint(session, tenant=tenant), ContactRule.OPEN_COMPLAINT)
    if purpose not in CAPPED:
        return blocked
    add(
        session.scalars(
            select(ContactRecord.customer_id)
            .where(
                TenantScope(tenant).condition(ContactRecord.tenant),
                ContactRecord.outcome == ContactOutcome.NEGATIVE.value,
                ContactRecord.at > at - policy.negative_suppression,
                ContactRecord.at <= at,
            )
            .group_by(ContactRecord.customer_id)
            .having(func.count() >= policy.negative_limit)
        ),
        ContactRule.NEGATIVE_OUTCOMES,
    )
    cap = policy.caps.get(channel)
    if cap is not None:
        add(
            session.scalars(
                select(ContactRecord.customer_id)
                .where(
                    TenantScope(tenant).condition(ContactRecord.tenant),
                    ContactRecord.channel == channel.value,
                    ContactRecord.purpose.in_([p.value for p in CAPPED]),
                    ContactRecord.at > at - policy.window,
                    ContactRecord.at <= at,
                )
                .group_by(ContactRecord.customer_id)
                .having(func.count() >= cap)
            ),
            ContactRule.CHANNEL_CAP,
        )
    return blocked


def record_contacts(
    session: Session,
    *,
    tenant: str | None,
    customer_ids: Sequence[str],
    channel: ContactChannel,
    purpose: ContactPurpose,
    at: datetime,
    recorded_by: str,
) -> None:
    """Record contacts already cleared by ``blocked_customers`` (an outbound run), in the
    caller's transaction: the caller commits."""
    rows = [
        {
            "tenant": tenant,
            "customer_id": customer_id,
            "channel": channel.value,
            "purpose": purpose.value,
            "outcome": None,
            "at": at,
            "recorded_by": recorded_by,
        }
        for customer_id in customer_ids
    ]
    # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues"):
    # a plain executemany is one round trip a row on psycopg.
    if rows:
        session.execute(insert(contact_record_table).returning(contact_record_table.c.id), rows)


def customer_contacts(
    session: Session, *, tenant: str | None, customer_ids: Sequence[str], limit: int = 20
) -> list[ContactOut]:
    """The contacts recorded with a customer (any of its id forms) in the tenant, newest
    first."""
    found = session.scalars(
        select(ContactRecord)
        .where(
            TenantScope(tenant).condition(ContactRecord.tenant),
            ContactRecord.customer_id.in_(customer_ids),
        )
        .order_by(ContactRecord.at.desc(), ContactRecord.id.desc())
        .limit(limit)
    )
    return [ContactOut.model_validate(record) for record in found]
