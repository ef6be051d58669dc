"""Every stored value of the campaigns package, defined once."""

from __future__ import annotations

from enum import StrEnum


class CampaignStatus(StrEnum):
    """A campaign is drafted, then launched once (its contact list written)."""

    DRAFT = "draft"
    LAUNCHED = "launched"


class Arm(StrEnum):
    """Treatment customers are contacted; control customers are held out."""

    TREATMENT = "treatment"
    CONTROL = "control"


# The response that counts as a conversion (app/customers/schemas.py CampaignResponse).
CONVERTING_RESPONSE = "accepted"
