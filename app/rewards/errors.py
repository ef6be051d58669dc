"""Why a posting or a redemption is refused; each carries its status and a stable code."""

from __future__ import annotations

from app.errors import Conflict, NotFound
from app.security.errors import Forbidden


class InsufficientPoints(Conflict):
    """More points asked for than the customer has available."""

    code = "insufficient_points"
    title = "Insufficient points"


class OutOfStock(Conflict):
    """The tenant's stock of the gift is exhausted."""

    code = "out_of_stock"
    title = "Out of stock"


class LimitReached(Conflict):
    """The customer has redeemed the gift as often as allowed."""

    code = "limit_reached"
    title = "Limit per customer reached"


class KeyReused(Conflict):
    """An idempotency key already used for another posting: a retry must repeat its request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"


class GiftInactive(Conflict):
    """The gift is outside its active window."""

    code = "gift_inactive"
    title = "Gift not active"


class NotReversible(Conflict):
    """Only earn entries can be reversed."""

    code = "not_reversible"
    title = "Entry not reversible"


class GiftNotVisible(Forbidden):
    """The gift is not offered to the customer's tier."""

    code = "gift_not_visible"
    title = "Gift not offered to this tier"


class UnknownGift(NotFound):
    """No such gift in the catalogue."""

    code = "unknown_gift"


class UnknownEntry(NotFound):
    """No such entry in the customer's ledger."""

    code = "unknown_entry"
