"""Wire shapes of the contact policy."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.contact.states import ContactChannel, ContactOutcome, ContactPurpose, ContactRule
from app.scoring.request_schemas import CustomerId

Reason = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*\S[^\x00]*$")]


class ContactQuestion(BaseModel):
    """May the bank contact this customer on this channel for this purpose (now, or then)?"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"customer_id": "C0000042", "channel": "email", "purpose": "retention"}]
        },
    )

    customer_id: CustomerId
    channel: ContactChannel
    purpose: ContactPurpose
    at: AwareDatetime | None = Field(default=None, description="Default: now.")


class ContactDecision(BaseModel):
    """Allowed, or the rule that blocked it and why."""

    allowed: bool
    rule: ContactRule | None = Field(description="The rule that blocked it; None if allowed.")
    detail: str


class ContactRequest(BaseModel):
    """A contact made (refused with 409 and the rule when the policy blocks it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C0000042",
                    "channel": "phone",
                    "purpose": "retention",
                    "outcome": "positive",
                }
            ]
        },
    )

    customer_id: CustomerId
    channel: ContactChannel
    purpose: ContactPurpose
    outcome: ContactOutcome | None = Field(default=None, description="How the customer took it.")


class ContactOut(BaseModel):
    """A recorded contact."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: str
    channel: ContactChannel
    purpose: ContactPurpose
    outcome: ContactOutcome | None
    at: datetime
    recorded_by: str


class DoNotContactRequest(BaseModel):
    """Why the customer must not be contacted."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "asked by letter of 2 March"}]},
    )

    reason: Reason


class DoNotContactOut(BaseModel):
    """A customer flagged do-not-contact."""

    model_config = ConfigDict(from_attributes=True)

    customer_id: str
    reason: str
    recorded_by: str
    created_at: datetime
