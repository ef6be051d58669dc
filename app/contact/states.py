"""Every stored value of the contact package, defined once."""

from __future__ import annotations

from enum import StrEnum


class ContactChannel(StrEnum):
    """How the bank reaches the customer."""

    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    LETTER = "letter"


class ContactPurpose(StrEnum):
    """Why: service (the customer's own business) is never capped; retention and marketing are."""

    SERVICE = "service"
    RETENTION = "retention"
    MARKETING = "marketing"


class ContactOutcome(StrEnum):
    """How the customer took it."""

    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


class ContactRule(StrEnum):
    """The rule that blocked a contact."""

    DO_NOT_CONTACT = "do_not_contact"
    OPEN_COMPLAINT = "open_complaint"
    NEGATIVE_OUTCOMES = "negative_outcomes"
    CHANNEL_CAP = "channel_cap"


def sql_values(enum: type[StrEnum]) -> str:
    """The members as a SQL list, for CHECK constraints: ``'a', 'b'``."""
    return ", ".join(f"'{member.value}'" for member in enum)
