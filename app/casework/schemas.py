"""Wire shapes of casework: staff, absences, complaints and their audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.casework.states import StaffRole
from app.customers.schemas import Code, Severity
from app.security.principal import MAX_CLIENT_ID_LENGTH
from app.security.text import ID_PATTERN, TEXT_PATTERN

MAX_AMOUNT = 1e15

StaffId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$",
        description="The bank's id of a staff member.",
        examples=["rm-042"],
    ),
]
Money = Annotated[
    float,
    Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="An amount of money, >= 0."),
]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        pattern=r"^[^\x00]*\S[^\x00]*$",
        description="Why, in words (kept in the audit trail).",
    ),
]
Note = Annotated[str, Field(max_length=2000, pattern=TEXT_PATTERN)]
PrincipalId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CLIENT_ID_LENGTH,
        pattern=ID_PATTERN,
        description="The credential this person acts through: an API client id ('cl_...') or "
        "'jwt:' and a token's subject.",
        examples=["jwt:anna.berg"],
    ),
]

STAFF_EXAMPLE: dict[str, Any] = {
    "name": "Anna Berg",
    "email": "anna.berg@bank.example",
    "roles": ["relationship_manager"],
    "branch": "north-01",
    "supervisor": "bs-007",
    "max_severity": "medium",
    "max_amount": 5000.0,
    "principal": "jwt:anna.berg",
}


class StaffRequest(BaseModel):
    """A staff member's record, created or replaced as a whole."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [STAFF_EXAMPLE]})

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    email: str = Field(
        max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
    )
    roles: list[StaffRole] = Field(min_length=1, max_length=len(StaffRole))
    branch: Code
    supervisor: StaffId | None = Field(default=None, description="Who cases escalate to.")
    max_severity: Severity = Field(description="Highest severity this person may own.")
    max_amount: Money = Field(description="Largest amount at stake this person may own.")
    principal: PrincipalId | None = None
    active: bool = True

    @field_validator("roles")
    @classmethod
    def _distinct_roles(cls, roles: list[StaffRole]) -> list[StaffRole]:
        if len(set(roles)) != len(roles):
            raise ValueError("each role once")
        return roles


class AbsenceRequest(BaseModel):
    """A period away (both days included): no case is assigned or escalated to the person."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"starts_on": "2027-01-04", "ends_on": "2027-01-08", "reason": "leave"}]
        },
    )

    starts_on: date = Field(ge=date(2000, 1, 1), le=date(2999, 12, 31))
    ends_on: date = Field(ge=date(2000, 1, 1), le=date(2999, 12, 31))
    reason: Note | None = None

    @field_validator("ends_on")
    @classmethod
    def _ordered(cls, ends_on: date, info: ValidationInfo) -> date:
        starts_on = info.data.get("starts_on")
        if starts_on is not None and ends_on < starts_on:
            raise ValueError("before starts_on")
        return ends_on


class AbsenceOut(BaseModel):
    """A recorded absence."""

    model_config = ConfigDict(from_attributes=True)

    starts_on: date
    ends_on: date
    reason: str | None


class StaffOut(BaseModel):
    """A staff member as stored, with their absences."""

    staff_id: str
    name: str
    email: str
    roles: list[StaffRole]
    branch: str
    supervisor: str | None
    max_severity: Severity
    max_amount: float
    principal: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    absences: list[AbsenceOut]


class StaffPage(BaseModel):
    """One page of staff, by id."""

    total: int
    limit: int
    offset: int
    items: list[StaffOut]


class ImportResult(BaseModel):
    """What a staff import did."""

    created: int
    updated: int
