"""The alert state machine and every other stored status of the alerts package, defined once.

```
open --acknowledge--> acknowledged --resolve--> resolved
```
"""

from __future__ import annotations

from enum import StrEnum


class AlertStatus(StrEnum):
    """Where an alert is in its lifecycle; active until resolved."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertCause(StrEnum):
    """Why an alert asks for a person: the churn warning, or a need the trail shows
    (app/customers/needs.py). At most one active alert per customer and cause."""

    CHURN = "churn"
    IDLE_INFLOW = "idle_inflow"
    DEPOSIT_MATURING = "deposit_maturing"
    FIRST_SALARY = "first_salary"


NEED_CAUSES = (AlertCause.IDLE_INFLOW, AlertCause.DEPOSIT_MATURING, AlertCause.FIRST_SALARY)


class AlertAction(StrEnum):
    """What staff can do to an alert."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


# The allowed transitions, in one place: action -> (from, to).
TRANSITIONS: dict[AlertAction, tuple[AlertStatus, AlertStatus]] = {
    AlertAction.ACKNOWLEDGE: (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED),
    AlertAction.RESOLVE: (AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED),
}
ACTIVE_STATUSES = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)


class Outcome(StrEnum):
    """How a resolved alert ended."""

    RETAINED = "retained"
    LOST = "lost"
    NOT_REACHABLE = "not_reachable"
    OTHER = "other"


class EventKind(StrEnum):
    """One kind of entry in an alert's history."""

    OPENED = "opened"
    RESCORED = "rescored"
    # A crossing score that did not reopen a recently resolved alert (the cooldown).
    HELD = "held"
    # Kept for history written before scores below the threshold stopped reaching alerts.
    BELOW_THRESHOLD = "below_threshold"
    ABOVE_THRESHOLD = "above_threshold"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class MessageStatus(StrEnum):
    """Where a notification in the outbox is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    # A tenant's alert while no notification route is configured for that tenant: kept, never
    # sent (and never to another tenant's receivers).
    HELD = "held"


def sql_values(enum: type[StrEnum]) -> str:
    """The members as a SQL list, for CHECK constraints: ``'a', 'b'``."""
    return ", ".join(f"'{member.value}'" for member in enum)
