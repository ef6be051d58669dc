"""Wire shapes of the behaviour trail: one payload model per event type, objects or columns.

Every event type is a model with the common fields (event id, customer id, occurrence time)
and its own; the request is a list of them discriminated on ``type``, or the same fields as
columns (one array per field, null where a field does not apply to an event's type). The
columns model is built from the event models, so the two forms can never disagree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.scoring.manifest import Task
from app.scoring.policies import RiskProfile
from app.scoring.request_schemas import CustomerId, integral
from app.scoring.schemas import AssessmentResponse


class EventType(StrEnum):
    """What happened to or with a customer."""

    CUSTOMER_PROFILE = "customer_profile"
    ACCOUNT_OPENED = "account_opened"
    ACCOUNT_CLOSED = "account_closed"
    BALANCE_SNAPSHOT = "balance_snapshot"
    TRANSACTION = "transaction"
    DIGITAL_SESSION = "digital_session"
    CONTACT = "contact"
    COMPLAINT = "complaint"
    CAMPAIGN_RESPONSE = "campaign_response"


class Direction(StrEnum):
    """Money in (credit) or out (debit) of the customer's accounts."""

    CREDIT = "credit"
    DEBIT = "debit"


class TransactionChannel(StrEnum):
    """Where a transaction was made."""

    BRANCH = "branch"
    ATM = "atm"
    CARD = "card"
    ONLINE = "online"
    MOBILE = "mobile"
    TRANSFER = "transfer"
    DIRECT_DEBIT = "direct_debit"
    OTHER = "other"


class Platform(StrEnum):
    """Where a digital session took place."""

    WEB = "web"
    MOBILE_APP = "mobile_app"
    WEBSITE = "website"  # the bank's public website, not logged in (prospects too)


class ContactKind(StrEnum):
    """How the customer and the bank spoke."""

    BRANCH_VISIT = "branch_visit"
    CALL = "call"
    EMAIL = "email"
    CHAT = "chat"
    VIDEO_CALL = "video_call"


class Severity(StrEnum):
    """How serious a complaint is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ComplaintStatus(StrEnum):
    """Whether the event opens or closes a complaint."""

    OPENED = "opened"
    RESOLVED = "resolved"


class CampaignResponse(StrEnum):
    """How far a customer went with a campaign."""

    CONTACTED = "contacted"
    OPENED = "opened"
    CLICKED = "clicked"
    ACCEPTED = "accepted"
    DECLINED = "declined"


# Earliest occurrence accepted: older times are typing errors, and a year-1 time in a zone
# east of UTC would not convert to UTC at all.
EARLIEST_OCCURRENCE = datetime(1900, 1, 1, tzinfo=UTC)
MAX_AMOUNT = 1e15

EventId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The source system's id of the event, unique per tenant: an event sent "
        "again with the same id is counted as a duplicate and not stored twice.",
        examples=["txn-2026-11-30-000184"],
    ),
]
Code = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:/&+-]*$",
        description="A code of the bank's own (product, branch, segment, category...).",
    ),
]
Amount = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="A positive amount; the direction says which way it went.",
    ),
]
Balance = Annotated[
    float,
    Field(
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="Balance or holding value at the time (negative: overdrawn or owed).",
    ),
]
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code; the bank's own if left out.")
]


def _check_occurrence(value: datetime, info: ValidationInfo) -> datetime:
    """Within [1900, now + tolerance], as UTC; the bound comes with the validation context."""
    if value < EARLIEST_OCCURRENCE:
        raise PydanticCustomError(
            "occurred_too_early",
            "occurred_at must be in 1900 or later, got {value}",
            {"value": value.isoformat()},
        )
    context = info.context or {}
    latest: datetime | None = context.get("latest_occurrence")
    if latest is not None and value > latest:
        raise PydanticCustomError(
            "occurred_in_future",
            "occurred_at is later than the server's clock allows ({tolerance} s ahead)",
            {"tolerance": f"{context.get('future_tolerance_s', 0.0):g}"},
        )
    return value.astimezone(UTC)


class EventBase(BaseModel):
    """What every event has."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event_id: EventId
    customer_id: CustomerId
    occurred_at: AwareDatetime = Field(
        description="When it happened (ISO 8601 with a zone). Late and out-of-order events are "
        "accepted; each is stored with this time and the time it was received.",
        examples=["2026-11-30T09:15:00Z"],
    )

    _occurrence = field_validator("occurred_at")(_check_occurrence)


class CustomerProfile(EventBase):
    """Who the customer is and how the bank serves them; fields left out are unchanged."""

    type: Literal[EventType.CUSTOMER_PROFILE]
    age: Annotated[int, Field(ge=0, le=130), BeforeValidator(integral)] | None = Field(
        default=None, description="Age in years (a whole float such as 41.0 is taken)."
    )
    occupation: Code | None = Field(default=None, examples=["employee"])
    income: Amount | None = Field(default=None, description="Yearly income.")
    region: Code | None = Field(default=None, examples=["north"])
    branch: Code | None = Field(default=None, description="Home branch.", examples=["B-012"])
    relationship_manager: Code | None = Field(
        default=None, description="Staff id of the customer's relationship manager."
    )
    segment: Code | None = Field(default=None, examples=["affluent"])
    customer_since: date | None = Field(
        default=None,
        description="When the relationship began (the first product); none for a prospect.",
        examples=["2019-04-01"],
    )
    acquisition_channel: Code | None = Field(
        default=None,
        description="How the customer or prospect came to the bank.",
        examples=["referral"],
    )
    monthly_profit: float | None = Field(
        default=None,
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="Profit the customer contributed in the month of occurred_at, as the "
        "bank's profitability system computes it (negative: a loss).",
    )
    risk_profile: RiskProfile | None = Field(
        default=None,
        description="Investment risk profile from the suitability questionnaire, C1 (most "
        "cautious) to C5: products of risk level R1-R5 are offered up to the same level.",
    )


class AccountOpened(EventBase):
    """A product or account opened."""

    type: Literal[EventType.ACCOUNT_OPENED]
    product: Code = Field(examples=["savings"])
    account_id: Code | None = None
    maturity_date: date | None = Field(
        default=None,
        description="When a term product (a term deposit) matures; the needs warning offers "
        "its renewal ahead of it (setting needs_rules.deposit_maturing).",
        examples=["2027-03-31"],
    )


class AccountClosed(EventBase):
    """A product or account closed."""

    type: Literal[EventType.ACCOUNT_CLOSED]
    product: Code = Field(examples=["savings"])
    account_id: Code | None = None
    reason: Code | None = Field(default=None, examples=["moved_to_competitor"])


class BalanceSnapshot(EventBase):
    """The balance of one product at a time: deposits, wealth holdings (funds, insurance,
    pension) and loans alike."""

    type: Literal[EventType.BALANCE_SNAPSHOT]
    product: Code = Field(examples=["investment_fund"])
    balance: Balance
    account_id: Code | None = None
    currency: Currency | None = None


class Transaction(EventBase):
    """Money moved in or out."""

    type: Literal[EventType.TRANSACTION]
    amount: Amount
    direction: Direction
    channel: TransactionChannel
    category: Code | None = Field(default=None, examples=["salary"])
    currency: Currency | None = None
    account_id: Code | None = None


class DigitalSession(EventBase):
    """A login to online or mobile banking."""

    type: Literal[EventType.DIGITAL_SESSION]
    platform: Platform
    duration_s: float | None = Field(default=None, ge=0, le=86_400, allow_inf_nan=False)


class Contact(EventBase):
    """A branch visit, call or message between the customer and the bank."""

    type: Literal[EventType.CONTACT]
    kind: ContactKind
    branch: Code | None = None
    topic: Code | None = Field(default=None, examples=["mortgage_advice"])


class Complaint(EventBase):
    """A complaint opened or resolved."""

    type: Literal[EventType.COMPLAINT]
    complaint_id: Code = Field(description="Ties the opening and the resolution together.")
    status: ComplaintStatus = ComplaintStatus.OPENED
    severity: Severity = Severity.MEDIUM
    category: Code | None = Field(default=None, examples=["fees"])


class CampaignResponseEvent(EventBase):
    """A customer's response to a campaign."""

    type: Literal[EventType.CAMPAIGN_RESPONSE]
    campaign_id: Code
    response: CampaignResponse
    product: Code | None = None


EVENT_MODELS: dict[EventType, type[EventBase]] = {
    EventType.CUSTOMER_PROFILE: CustomerProfile,
    EventType.ACCOUNT_OPENED: AccountOpened,
    EventType.ACCOUNT_CLOSED: AccountClosed,
    EventType.BALANCE_SNAPSHOT: BalanceSnapshot,
    EventType.TRANSACTION: Transaction,
    EventType.DIGITAL_SESSION: DigitalSession,
    EventType.CONTACT: Contact,
    EventType.COMPLAINT: Complaint,
    EventType.CAMPAIGN_RESPONSE: CampaignResponseEvent,
}
assert set(EVENT_MODELS) == set(EventType)

Event = Annotated[
    CustomerProfile
    | AccountOpened
    | AccountClosed
    | BalanceSnapshot
    | Transaction
    | DigitalSession
    | Contact
    | Complaint
    | CampaignResponseEvent,
    Field(discriminator="type"),
]
COMMON_FIELDS = ("event_id", "type", "customer_id", "occurred_at")


def _payload_fields() -> dict[str, Any]:
    """Every type-specific field once, nullable, with its annotation (the same wherever it
    appears: a column holds that field for every type)."""
    fields: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    for model in EVENT_MODELS.values():
        for name, info in model.model_fields.items():
            if name in COMMON_FIELDS:
                continue
            annotation = _optional(info.rebuild_annotation())
            shape = _shape(TypeAdapter(annotation).json_schema())
            if shapes.setdefault(name, shape) != shape:
                raise TypeError(f"{name} has two types: {shapes[name]} and {shape}")
            fields.setdefault(name, annotation)
    return fields


def _shape(schema: Any) -> Any:
    """A JSON schema without its documentation: what it accepts."""
    if isinstance(schema, dict):
        return {
            k: _shape(v) for k, v in schema.items() if k not in ("description", "examples", "title")
        }
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


def _optional(annotation: Any) -> Any:
    return annotation if type(None) in getattr(annotation, "__args__", ()) else annotation | None


def _same_lengths(self: BaseModel) -> BaseModel:
    lengths = {name: len(value) for name, value in self.__dict__.items() if value is not None}
    expected = lengths["event_id"]
    wrong = sorted(name for name, n in lengths.items() if n != expected)
    if wrong:
        raise ValueError(
            f"every column must have one value per event_id ({expected}); these differ: {wrong}"
        )
    return self


def _columns_model() -> type[BaseModel]:
    """Events as columns: one array per field, null where a field does not apply."""
    fields: dict[str, Any] = {
        "event_id": (list[EventId], Field(min_length=1)),
        "type": (list[EventType], ...),
        "customer_id": (list[CustomerId], ...),
        "occurred_at": (list[AwareDatetime], ...),
    }
    for name, annotation in _payload_fields().items():
        fields[name] = (list[annotation] | None, None)  # type: ignore[valid-type]
    validators: dict[str, Any] = {"same_lengths": model_validator(mode="after")(_same_lengths)}
    return create_model(
        "EventColumns",
        __config__=ConfigDict(extra="forbid", strict=True),
        __validators__=validators,
        __doc__="Many events as columns: event_id, type, customer_id and occurred_at for "
        "every event, and the fields of each type, null where they do not apply.",
        **fields,
    )


EventColumns = _columns_model()
PAYLOAD_COLUMNS: tuple[str, ...] = tuple(
    name for name in EventColumns.model_fields if name not in COMMON_FIELDS
)

EXAMPLE_BODY: dict[str, Any] = {
    "events": [
        {
            "event_id": "crm-000912",
            "type": "customer_profile",
            "customer_id": "C0000042",
            "occurred_at": "2026-11-02T08:00:00Z",
            "age": 41,
            "occupation": "employee",
            "income": 52000.0,
            "region": "north",
            "branch": "B-012",
            "relationship_manager": "rm-042",
            "segment": "emerging_affluent",
            "customer_since": "2026-10-01",
            "acquisition_channel": "branch",
            "monthly_profit": 18.4,
        },
        {
            "event_id": "txn-000184",
            "type": "transaction",
            "customer_id": "C0000042",
            "occurred_at": "2026-11-30T09:15:00+01:00",
            "amount": 2450.0,
            "direction": "credit",
            "channel": "transfer",
            "category": "salary",
        },
        {
            "event_id": "bal-savings-2026-11",
            "type": "balance_snapshot",
            "customer_id": "C0000042",
            "occurred_at": "2026-11-30T23:59:59Z",
            "product": "savings",
            "balance": 18250.5,
        },
    ]
}


class EventsRequest(BaseModel):
    """Up to the configured number of events (10,000 by default), as objects or as columns."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "oneOf": [{"required": ["events"]}, {"required": ["columns"]}],
            "examples": [EXAMPLE_BODY],
        },
    )

    events: list[Event] | None = Field(
        default=None, min_length=1, description="One object per event, its fields by its type."
    )
    columns: EventColumns | None = Field(  # type: ignore[valid-type]
        default=None, description="One array per field (for bulk loads)."
    )

    @model_validator(mode="after")
    def _one_layout(self) -> EventsRequest:
        if self.events is not None and self.columns is not None:
            raise PydanticCustomError(
                "events_and_columns",
                "the body has both 'events' and 'columns'; send one of them, not both",
            )
        if self.events is None and self.columns is None:
            raise PydanticCustomError(
                "events_or_columns",
                "the body has neither 'events' (objects) nor 'columns' (arrays); send one",
            )
        return self


class IntakeResult(BaseModel):
    """What became of a call's events: all were validated, the new ones stored."""

    received: int = Field(description="Events in the call.")
    new: int = Field(description="Events stored by this call.")
    duplicates: int = Field(
        description="Events whose id was already stored (or repeated within the call): not "
        "stored again."
    )
    received_at: datetime = Field(description="The time stored with every new event.")


class StoredEvent(BaseModel):
    """One event of a customer's trail as stored."""

    event_id: str
    type: EventType
    occurred_at: datetime
    received_at: datetime
    payload: dict[str, Any] = Field(description="The fields of the event's type.")


class EventPage(BaseModel):
    """A page of a customer's trail, latest occurrence first."""

    customer_id: str
    total: int
    limit: int
    offset: int
    items: list[StoredEvent]


MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


class MonthFeatures(BaseModel):
    """A customer's model features in one month, derived from its trail by the definitions
    training uses (app/customers/features.py); null where the trail does not tell."""

    customer_id: str
    month: str = Field(description="YYYY-MM (UTC).", examples=["2026-11"])
    features: dict[str, float | int | str | bool | None]


class AssessmentByIdRequest(BaseModel):
    """What to assess of a customer known by its trail; every field may be left out."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[Task] | None = Field(
        default=None,
        min_length=1,
        description="Only these models (of those its lifecycle stage calls for); all if left out.",
        examples=[["churn", "tier"]],
    )
    month: str | None = Field(
        default=None,
        pattern=MONTH_PATTERN,
        description="Month of the features (YYYY-MM, UTC); the customer's latest if left out.",
        examples=["2026-11"],
    )


BULK_ASSESSMENT_EXAMPLE: dict[str, Any] = {"customer_ids": ["C0000042"]}


class BulkAssessmentRequest(AssessmentByIdRequest):
    """Many customers known by their trails, assessed and saved together."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [BULK_ASSESSMENT_EXAMPLE]}
    )

    customer_ids: list[CustomerId] = Field(min_length=1)


class CustomerAssessment(AssessmentResponse):
    """An assessment from the trail, with the month its features are of."""

    month: str = Field(description="YYYY-MM (UTC).")


class CustomerAssessments(BaseModel):
    """Assessments of many customers, in the order asked, saved together."""

    request_id: str
    results: list[CustomerAssessment]


ASSESSMENT_BY_ID_EXAMPLE: dict[str, Any] = {"tasks": ["churn"], "month": "2026-11"}
