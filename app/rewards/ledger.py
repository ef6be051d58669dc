"""The points ledger replayed (pure): which earned lots are left, oldest first.

Every debit consumes lots: a reversal its own lot first, an expiry only its lot, a
redemption the lots available when it was made, oldest first. A redemption reversed (the
gift given back) returns its points to the lots it took them from, except lots an expiry has
closed since: those points would have expired anyway. A lot is pending until its
``available_at``. The balance is the sum of the entries, and, as long as no debit exceeds
what it may take, equals what is left of the lots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from app.rewards.tables import EntryKind


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger entry as the replay needs it."""

    id: int
    kind: EntryKind
    points: int
    created_at: datetime
    refers_to: int | None = None
    available_at: datetime | None = None
    expires_on: date | None = None


@dataclass(frozen=True, slots=True)
class Lot:
    """What is left of one earn."""

    id: int
    remaining: int
    available_at: datetime
    expires_on: date | None


@dataclass(frozen=True, slots=True)
class Balance:
    """A customer's points at an instant; ``total`` is the sum of the entries."""

    available: int
    pending: int
    total: int


def _take(remaining: dict[int, int], amount: int, order: Iterable[int]) -> list[tuple[int, int]]:
    """Consume up to ``amount`` from the lots in ``order``; what was taken from which lot."""
    taken: list[tuple[int, int]] = []
    for lot_id in order:
        if amount <= 0:
            break
        part = min(remaining[lot_id], amount)
        remaining[lot_id] -= part
        amount -= part
        taken.append((lot_id, part))
    return taken


@dataclass
class _Replay:
    """The ledger's state while its postings are replayed in id order."""

    remaining: dict[int, int]
    earns: dict[int, Posting]
    redeemed: dict[int, list[tuple[int, int]]]  # a redemption's points, by lot
    closed: set[int]  # lots an expiry has closed

    def returnable(self, redemption_id: int) -> list[tuple[int, int]]:
        """What giving a redemption back returns, by lot: only to lots still open."""
        return [
            (lot_id, part)
            for lot_id, part in self.redeemed.get(redemption_id, [])
            if lot_id not in self.closed
        ]

    def apply(self, posting: Posting) -> None:
        remaining, amount = self.remaining, -posting.points
        if posting.kind is EntryKind.EARN:
            remaining[posting.id] = posting.points
            self.earns[posting.id] = posting
        elif posting.kind is EntryKind.EXPIRY and posting.refers_to in remaining:
            self.closed.add(posting.refers_to)
            _take(remaining, amount, [posting.refers_to])
        elif posting.kind is EntryKind.REVERSAL and posting.refers_to in self.redeemed:
            for lot_id, part in self.returnable(posting.refers_to):
                remaining[lot_id] += part
            del self.redeemed[posting.refers_to]
        elif posting.kind is EntryKind.REVERSAL and posting.refers_to in remaining:
            rest = [i for i in remaining if i != posting.refers_to]
            _take(remaining, amount, [posting.refers_to, *rest])
        else:
            at = posting.created_at
            usable = [i for i in remaining if _available_at(self.earns[i]) <= at]
            later = [i for i in remaining if _available_at(self.earns[i]) > at]
            taken = _take(remaining, amount, usable + later)
            if posting.kind is EntryKind.REDEMPTION:
                self.redeemed[posting.id] = taken


def _replayed(postings: Sequence[Posting]) -> _Replay:
    state = _Replay(remaining={}, earns={}, redeemed={}, closed=set())
    for posting in sorted(postings, key=lambda p: p.id):
        state.apply(posting)
    return state


def replay(postings: Sequence[Posting]) -> list[Lot]:
    """The lots left after the postings (in id order), oldest first, spent ones included."""
    state = _replayed(postings)
    earns = state.earns
    return [
        Lot(i, left, _available_at(earns[i]), earns[i].expires_on)
        for i, left in state.remaining.items()
    ]


def refundable(postings: Sequence[Posting], redemption_id: int) -> int:
    """The points giving redemption ``redemption_id`` back returns now (0 once given back)."""
    return sum(part for _, part in _replayed(postings).returnable(redemption_id))


def _available_at(earn: Posting) -> datetime:
    return earn.available_at or earn.created_at


def balance(postings: Sequence[Posting], *, now: datetime) -> Balance:
    """Available and pending points at ``now``, and the sum of the entries."""
    lots = replay(postings)
    available = sum(lot.remaining for lot in lots if lot.available_at <= now)
    pending = sum(lot.remaining for lot in lots if lot.available_at > now)
    return Balance(available=available, pending=pending, total=sum(p.points for p in postings))


def expiring(postings: Sequence[Posting], *, as_of: date) -> list[Lot]:
    """Lots whose last day is before ``as_of`` and that no expiry entry has closed yet."""
    closed = {p.refers_to for p in postings if p.kind is EntryKind.EXPIRY}
    return [
        lot
        for lot in replay(postings)
        if lot.expires_on is not None and lot.expires_on < as_of and lot.id not in closed
    ]
