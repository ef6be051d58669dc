"""Rewards use cases: service plans, points postings, redemptions and the nightly expiry.

A posting first locks the customer's account row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite runs one writer at a time), so the checks against the balance and the entry written
after them see the same ledger. Stock is taken with a conditional ``UPDATE ... WHERE
remaining > 0`` in the same transaction. The customer's tier comes from the value domain.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.rewards.errors import (
    GiftInactive,
    GiftNotVisible,
    InsufficientPoints,
    KeyReused,
    LimitReached,
    NotReversible,
    OutOfStock,
    UnknownEntry,
    UnknownGift,
)
from app.rewards.ledger import Posting, balance, expiring, refundable
from app.rewards.policy import Gift, RewardsPolicy
from app.rewards.schemas import (
    ExpiryRun,
    GiftOffer,
    PointsBalance,
    PointsEntryView,
    PointsPage,
    PostingResult,
    ServicePlanView,
)
from app.rewards.tables import UNTAGGED_KEY, EntryKind, GiftStock, PointsAccount, PointsEntry
from app.security.pseudonyms import Pseudonymizer
from app.value import service as value
from app.value.policy import TierPolicy


def tenant_key(tenant: str | None) -> str:
    """The tenant as stored ('' when untagged)."""
    return UNTAGGED_KEY if tenant is None else tenant


def stored_id(customer_id: str, *, tenant: str | None, pseudonymizer: Pseudonymizer | None) -> str:
    """The form a customer's ledger rows are stored under for this tenant."""
    return pseudonymizer.pseudonym(customer_id, tenant) if pseudonymizer else customer_id


def customer_tier(
    session: Session,
    *,
    tier_policy: TierPolicy,
    customer_id: str,
    caller_tenant: str | None,
    pseudonymizer: Pseudonymizer | None,
) -> str:
    """The customer's policy tier; 404 if the caller's tenant has no trail of it."""
    return value.customer_tier(
        session,
        policy=tier_policy,
        customer_id=customer_id,
        caller_tenant=caller_tenant,
        pseudonymizer=pseudonymizer,
    ).tier


# --- service plan ------------------------------------------------------------------------------


def service_plan(
    session: Session,
    *,
    rewards: RewardsPolicy,
    tier: str,
    tenant: str | None,
    customer_id: str,
    today: date,
) -> ServicePlanView:
    """The tier's plan and the gifts it may redeem today, with the tenant's remaining stock."""
    plan = rewards.plans[tier]
    gifts = [g for g in rewards.gifts if tier in g.tiers and g.active_on(today)]
    rows = session.execute(
        select(GiftStock.gift_id, GiftStock.remaining).where(
            GiftStock.tenant == tenant_key(tenant),
            GiftStock.gift_id.in_([g.gift_id for g in gifts]),
        )
    )
    stored = {row.gift_id: row.remaining for row in rows}
    return ServicePlanView(
        customer_id=customer_id,
        tier=tier,
        policy_version=rewards.version,
        plan_name=plan.name,
        services=plan.services,
        promotions=plan.promotions,
        points_multiplier=plan.points_multiplier,
        gifts=[
            GiftOffer(
                gift_id=g.gift_id,
                name=g.name,
                points_cost=g.points_cost,
                remaining_stock=stored.get(g.gift_id, g.stock),
                limit_per_customer=g.limit_per_customer,
                active_until=g.active_until,
            )
            for g in gifts
        ],
    )


# --- postings ----------------------------------------------------------------------------------


def earn(
    session: Session,
    *,
    rewards: RewardsPolicy,
    tier: str,
    tenant: str | None,
    customer_id: str,
    points: int,
    idempotency_key: str,
    description: str | None,
    now: datetime,
) -> PostingResult:
    """Post earned points (times the tier's multiplier), pending for the lock period and
    expiring by the policy; a repeated key returns the first posting and changes nothing."""
    key = tenant_key(tenant)
    digest = request_digest(EntryKind.EARN, points, description)
    _lock_account(session, tenant=key, customer_id=customer_id, now=now)
    if (found := _by_key(session, key, customer_id, idempotency_key, digest)) is not None:
        return _result(session, found, replayed=True, now=now)
    entry = PointsEntry(
        tenant=key,
        customer_id=customer_id,
        kind=EntryKind.EARN.value,
        request_digest=digest,
        points=max(1, math.floor(points * rewards.plans[tier].points_multiplier + 0.5)),
        idempotency_key=idempotency_key,
        tier=tier,
        description=description,
        created_at=now,
        available_at=now + timedelta(days=rewards.lock_days),
        expires_on=rewards.expiry.last_day(now.date()),
    )
    return _commit(session, entry, now=now)


def reverse(
    session: Session,
    *,
    tenant: str | None,
    customer_id: str,
    entry_id: int,
    description: str | None,
    now: datetime,
) -> PostingResult:
    """Reverse an earn or a redemption with a new entry referring to it; reversing it again
    returns the first reversal. An earn is taken back in full (409 when the points are no
    longer there: spent or expired); a redemption (the gift given back) returns its points to
    the lots they came from that have not expired since, and its unit to the stock."""
    key = tenant_key(tenant)
    _lock_account(session, tenant=key, customer_id=customer_id, now=now)
    original = session.scalars(
        select(PointsEntry).where(
            PointsEntry.id == entry_id,
            PointsEntry.tenant == key,
            PointsEntry.customer_id == customer_id,
        )
    ).first()
    if original is None:
        session.rollback()
        raise UnknownEntry(f"no entry {entry_id} in this customer's ledger")
    if original.kind not in (EntryKind.EARN.value, EntryKind.REDEMPTION.value):
        session.rollback()
        raise NotReversible(
            f"entry {entry_id} is a {original.kind}; only earns and redemptions are reversed"
        )
    reversal_key = f"reversal:{entry_id}"
    if (found := _by_key(session, key, customer_id, reversal_key)) is not None:
        return _result(session, found, replayed=True, now=now)
    if original.kind == EntryKind.REDEMPTION.value:
        return _give_back(session, original, description=description, now=now)
    held = balance(_postings(session, key, customer_id), now=now)
    if held.total < original.points:
        session.rollback()
        raise InsufficientPoints(
            f"the earn of {original.points} points cannot be reversed: the customer holds"
            f" {held.total}",
            extra={"reason": "balance", "balance": held.total},
        )
    entry = PointsEntry(
        tenant=key,
        customer_id=customer_id,
        kind=EntryKind.REVERSAL.value,
        points=-original.points,
        idempotency_key=reversal_key,
        refers_to=original.id,
        description=description,
        created_at=now,
    )
    return _commit(session, entry, now=now)


def redeem(
    session: Session,
    *,
    rewards: RewardsPolicy,
    tier: str,
    tenant: str | None,
    customer_id: str,
    gift_id: str,
    idempotency_key: str,
    now: datetime,
) -> PostingResult:
    """Redeem a gift: its points and one unit of stock in one transaction. 403 when the tier
    may not see it; 409 beyond the balance, the stock, the limit or the active window."""
    gift = _visible_gift(rewards, gift_id, tier)
    key = tenant_key(tenant)
    digest = request_digest(EntryKind.REDEMPTION, gift_id)
    _lock_account(session, tenant=key, customer_id=customer_id, now=now)
    if (found := _by_key(session, key, customer_id, idempotency_key, digest)) is not None:
        return _result(session, found, replayed=True, now=now)
    try:
        _check_redeemable(session, gift, tenant=key, customer_id=customer_id, now=now)
    except (GiftInactive, LimitReached, InsufficientPoints, OutOfStock):
        session.rollback()
        raise
    entry = PointsEntry(
        tenant=key,
        customer_id=customer_id,
        kind=EntryKind.REDEMPTION.value,
        request_digest=digest,
        points=-gift.points_cost,
        idempotency_key=idempotency_key,
        gift_id=gift.gift_id,
        tier=tier,
        created_at=now,
    )
    return _commit(session, entry, now=now)


def _give_back(
    session: Session, redemption: PointsEntry, *, description: str | None, now: datetime
) -> PostingResult:
    """A redemption reversed: its open lots' points back, its unit back in stock."""
    tenant, customer_id = redemption.tenant, redemption.customer_id
    returned = refundable(_postings(session, tenant, customer_id), redemption.id)
    session.execute(
        update(GiftStock)
        .where(GiftStock.tenant == tenant, GiftStock.gift_id == redemption.gift_id)
        .values(remaining=GiftStock.remaining + 1)
    )
    entry = PointsEntry(
        tenant=tenant,
        customer_id=customer_id,
        kind=EntryKind.REVERSAL.value,
        points=returned,
        idempotency_key=f"reversal:{redemption.id}",
        refers_to=redemption.id,
        gift_id=redemption.gift_id,
        description=description,
        created_at=now,
    )
    return _commit(session, entry, now=now)


def _visible_gift(rewards: RewardsPolicy, gift_id: str, tier: str) -> Gift:
    gift = rewards.gift(gift_id)
    if gift is None:
        raise UnknownGift(f"no gift {gift_id!r} in the catalogue")
    if tier not in gift.tiers:
        raise GiftNotVisible(f"gift {gift_id!r} is not offered to the {tier} tier")
    return gift


def _check_redeemable(
    session: Session, gift: Gift, *, tenant: str, customer_id: str, now: datetime
) -> None:
    """Raise the first reason the locked customer cannot redeem ``gift``; else take a unit."""
    if not gift.active_on(now.date()):
        raise GiftInactive(
            f"gift {gift.gift_id!r} is not active on {now.date()}", extra={"reason": "inactive"}
        )
    if gift.limit_per_customer is not None:
        mine = (PointsEntry.tenant == tenant, PointsEntry.customer_id == customer_id)
        given_back = select(PointsEntry.refers_to).where(
            *mine, PointsEntry.kind == EntryKind.REVERSAL.value, PointsEntry.gift_id.is_not(None)
        )
        redeemed = session.scalar(
            select(func.count()).where(
                *mine,
                PointsEntry.kind == EntryKind.REDEMPTION.value,
                PointsEntry.gift_id == gift.gift_id,
                PointsEntry.id.not_in(given_back),
            )
        )
        if (redeemed or 0) >= gift.limit_per_customer:
            raise LimitReached(
                f"gift {gift.gift_id!r} may be redeemed {gift.limit_per_customer} times per"
                " customer",
                extra={"reason": "limit", "limit": gift.limit_per_customer},
            )
    held = balance(_postings(session, tenant, customer_id), now=now)
    if held.available < gift.points_cost:
        raise InsufficientPoints(
            f"gift {gift.gift_id!r} costs {gift.points_cost} points; {held.available} available",
            extra={"reason": "balance", "available": held.available},
        )
    _seed_stock(session, tenant=tenant, gift=gift)
    taken = session.execute(
        update(GiftStock)
        .where(
            GiftStock.tenant == tenant,
            GiftStock.gift_id == gift.gift_id,
            GiftStock.remaining > 0,
        )
        .values(remaining=GiftStock.remaining - 1)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise OutOfStock(f"gift {gift.gift_id!r} is out of stock", extra={"reason": "stock"})


# --- reading -----------------------------------------------------------------------------------


def held(
    session: Session, *, tenant: str | None, customer_id: str, now: datetime
) -> PointsBalance | None:
    """A customer's balance at ``now``; None when it has no ledger."""
    postings = _postings(session, tenant_key(tenant), customer_id)
    if not postings:
        return None
    found = balance(postings, now=now)
    return _balance_view(found.available, found.pending, found.total)


def points(
    session: Session,
    *,
    tenant: str | None,
    customer_id: str,
    shown_id: str,
    limit: int,
    offset: int,
    now: datetime,
) -> PointsPage:
    """The balance and a page of entries, newest first."""
    key = tenant_key(tenant)
    held = balance(_postings(session, key, customer_id), now=now)
    mine = (PointsEntry.tenant == key, PointsEntry.customer_id == customer_id)
    total = session.scalar(select(func.count()).where(*mine)) or 0
    rows = session.scalars(
        select(PointsEntry).where(*mine).order_by(PointsEntry.id.desc()).offset(offset).limit(limit)
    ).all()
    return PointsPage(
        customer_id=shown_id,
        balance=_balance_view(held.available, held.pending, held.total),
        entries=[_view(row) for row in rows],
        total_entries=total,
        limit=limit,
        offset=offset,
    )


# --- expiry ------------------------------------------------------------------------------------


def expire(session: Session, *, as_of: date, now: datetime) -> ExpiryRun:
    """Close every lot whose last day is before ``as_of`` with an expiry entry for what is
    left of it (0 when spent), oldest first; running again changes nothing. One transaction
    per customer, so a long run never holds the whole book's accounts."""
    closed = select(PointsEntry.refers_to).where(
        PointsEntry.kind == EntryKind.EXPIRY.value, PointsEntry.refers_to.is_not(None)
    )
    due = session.execute(
        select(PointsEntry.tenant, PointsEntry.customer_id)
        .where(
            PointsEntry.kind == EntryKind.EARN.value,
            PointsEntry.expires_on < as_of,
            PointsEntry.id.not_in(closed),
        )
        .group_by(PointsEntry.tenant, PointsEntry.customer_id)
        .order_by(PointsEntry.tenant, PointsEntry.customer_id)
    ).all()
    session.rollback()
    entries = points_expired = 0
    for tenant, customer_id in due:
        _lock_account(session, tenant=tenant, customer_id=customer_id, now=now)
        for lot in expiring(_postings(session, tenant, customer_id), as_of=as_of):
            session.add(
                PointsEntry(
                    tenant=tenant,
                    customer_id=customer_id,
                    kind=EntryKind.EXPIRY.value,
                    points=-lot.remaining,
                    idempotency_key=f"expiry:{lot.id}",
                    refers_to=lot.id,
                    description=f"expired after {lot.expires_on}",
                    created_at=now,
                )
            )
            entries += 1
            points_expired += lot.remaining
        session.commit()
    return ExpiryRun(as_of=as_of, customers=len(due), entries=entries, points=points_expired)


# --- helpers -----------------------------------------------------------------------------------


def _lock_account(session: Session, *, tenant: str, customer_id: str, now: datetime) -> None:
    """Create the account row if new and lock it until the transaction ends."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(PointsAccount)
        .values(tenant=tenant, customer_id=customer_id, opened_at=now)
        .on_conflict_do_nothing()
    )
    session.execute(
        select(PointsAccount.tenant)
        .where(PointsAccount.tenant == tenant, PointsAccount.customer_id == customer_id)
        .with_for_update()
    )


def _seed_stock(session: Session, *, tenant: str, gift: Gift) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(GiftStock)
        .values(tenant=tenant, gift_id=gift.gift_id, remaining=gift.stock)
        .on_conflict_do_nothing()
    )


def request_digest(kind: EntryKind, *request: object) -> str:
    """A fingerprint of what a client asked for under its idempotency key."""
    return hashlib.sha256(json.dumps([kind.value, *request]).encode()).hexdigest()


def _by_key(
    session: Session, tenant: str, customer_id: str, key: str, digest: str | None = None
) -> PointsEntry | None:
    """The entry posted under ``key``, if any; 409 when it was posted for another request."""
    found = session.scalars(
        select(PointsEntry).where(
            PointsEntry.tenant == tenant,
            PointsEntry.customer_id == customer_id,
            PointsEntry.idempotency_key == key,
        )
    ).first()
    if found is not None and digest is not None and found.request_digest not in (None, digest):
        session.rollback()
        raise KeyReused(
            f"idempotency key {key!r} was used for another request (entry {found.id}, a"
            f" {found.kind} of {found.points} points); a retry repeats its request, a new"
            " posting needs a new key"
        )
    return found


def _postings(session: Session, tenant: str, customer_id: str) -> list[Posting]:
    rows = session.scalars(
        select(PointsEntry)
        .where(PointsEntry.tenant == tenant, PointsEntry.customer_id == customer_id)
        .order_by(PointsEntry.id)
    ).all()
    return [
        Posting(
            id=row.id,
            kind=EntryKind(row.kind),
            points=row.points,
            created_at=row.created_at,
            refers_to=row.refers_to,
            available_at=row.available_at,
            expires_on=row.expires_on,
        )
        for row in rows
    ]


def _commit(session: Session, entry: PointsEntry, *, now: datetime) -> PostingResult:
    session.add(entry)
    session.flush()
    result = _result(session, entry, replayed=False, now=now)
    session.commit()
    return result


def _result(
    session: Session, entry: PointsEntry, *, replayed: bool, now: datetime
) -> PostingResult:
    held = balance(_postings(session, entry.tenant, entry.customer_id), now=now)
    view = _view(entry)
    if replayed:
        session.rollback()  # the account row's lock; nothing was written
    return PostingResult(
        entry=view,
        balance=_balance_view(held.available, held.pending, held.total),
        replayed=replayed,
    )


def _balance_view(available: int, pending: int, total: int) -> PointsBalance:
    return PointsBalance(available=available, pending=pending, total=total)


def _view(row: PointsEntry) -> PointsEntryView:
    return PointsEntryView(
        id=row.id,
        kind=row.kind,
        points=row.points,
        refers_to=row.refers_to,
        gift_id=row.gift_id,
        tier=row.tier,
        description=row.description,
        created_at=row.created_at,
        available_at=row.available_at,
        expires_on=row.expires_on,
    )
