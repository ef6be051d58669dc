"""The next-best-action configuration: a versioned, validated file, refused at load naming the
key (as the tier policy and the product rules).

It lists the actions (a retention offer, product offers, a tier-upgrade nudge, a service
call), their value, business lever and starting propensity; the context weight per channel
and kind of action; the value weight per tier; which priority factors are on; the cold-start
smoothing (starting evidence, and the evidence from which the model's propensity is used
alone); the least priority worth an action; and the volume caps of one answer.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.contact.states import ContactChannel, ContactPurpose


class ActionKind(StrEnum):
    """What an action does; it decides where its propensity comes from and its checks."""

    RETENTION_OFFER = "retention_offer"
    PRODUCT_OFFER = "product_offer"
    TIER_UPGRADE_NUDGE = "tier_upgrade_nudge"
    SERVICE_CALL = "service_call"


# Why the bank contacts the customer for each kind (the contact policy caps retention and
# marketing; service contacts are blocked by do-not-contact alone).
PURPOSE: dict[ActionKind, ContactPurpose] = {
    ActionKind.RETENTION_OFFER: ContactPurpose.RETENTION,
    ActionKind.PRODUCT_OFFER: ContactPurpose.MARKETING,
    ActionKind.TIER_UPGRADE_NUDGE: ContactPurpose.MARKETING,
    ActionKind.SERVICE_CALL: ContactPurpose.SERVICE,
}


class Factor(StrEnum):
    """The factors of an action's priority (their product)."""

    PROPENSITY = "propensity"
    CONTEXT_WEIGHT = "context_weight"
    VALUE = "value"
    LEVERS = "levers"


class Band(StrEnum):
    """Churn risk bands, lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


LifecycleStage = str  # the scoring core's stages: prospect, new, existing, lost
STAGE_NAMES = ("prospect", "new", "existing", "lost")


class InvalidActionPolicy(ValueError):
    """A configuration that cannot be used; the message names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ActionRule(BaseModel):
    """One action: its kind (the product, for an offer), value, lever and cold start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ActionKind
    product: str | None = Field(default=None, description="The product offered (offers only).")
    value: float = Field(ge=0, description="What the action is worth to the bank, EUR.")
    lever: float = Field(default=1.0, ge=0, description="The business lever (1: neutral).")
    stages: list[str] = Field(
        default_factory=lambda: ["new", "existing"],
        description="Lifecycle stages at which the action is eligible.",
    )
    starting_propensity: float | None = Field(default=None, ge=0, le=1)
    mature_evidence: int | None = Field(default=None, ge=0)
    campaigns: list[str] = Field(
        default_factory=list,
        description="Campaigns whose accepted/declined responses are this action's evidence "
        "(a product offer also counts every response naming its product).",
    )
    # Retention offer: from which churn band it applies.
    min_churn_band: Band = Band.MEDIUM
    # Tier-upgrade nudge: applies when the relationship-balance gap to the next tier is at
    # most this share of the next tier's cut-off.
    max_gap_share: float = Field(default=0.25, gt=0, le=1)
    # Service call: applies with an open complaint, or after this many days without activity.
    inactive_days: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> ActionRule:
        unknown = [s for s in self.stages if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(
                f"stages: unknown stage {unknown[0]!r}; expected one of {', '.join(STAGE_NAMES)}"
            )
        if (self.kind is ActionKind.PRODUCT_OFFER) != (self.product is not None):
            raise ValueError("product: required for a product offer, and only for one")
        return self


class ActionPolicy(BaseModel):
    """The whole next-best-action configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=32)
    factors: dict[Factor, bool] = Field(
        default_factory=lambda: dict.fromkeys(Factor, True),
        description="Which priority factors count (off: the factor is 1).",
    )
    starting_propensity: float = Field(default=0.05, ge=0, le=1)
    starting_evidence: int = Field(default=50, ge=0)
    mature_evidence: int | None = Field(
        default=None,
        ge=0,
        description="Evidence from which the model's propensity is used alone (null: never).",
    )
    min_priority: float = Field(default=0.0, ge=0)
    max_actions: int = Field(default=3, ge=1, le=50)
    max_per_kind: dict[ActionKind, int] = Field(default_factory=dict)
    context_weights: dict[ContactChannel, dict[ActionKind, float]] = Field(default_factory=dict)
    tier_value_weights: dict[str, float] = Field(default_factory=dict)
    evidence_ttl_s: float = Field(default=300.0, ge=0, le=86_400)
    actions: dict[str, ActionRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _checked(self) -> ActionPolicy:
        for channel, weights in self.context_weights.items():
            for kind, weight in weights.items():
                if weight < 0:
                    raise ValueError(
                        f"context_weights.{channel.value}.{kind.value}: {weight:g} is negative"
                    )
        for tier, weight in self.tier_value_weights.items():
            if weight < 0:
                raise ValueError(f"tier_value_weights.{tier}: {weight:g} is negative")
        for kind, cap in self.max_per_kind.items():
            if cap < 0:
                raise ValueError(f"max_per_kind.{kind.value}: {cap} is negative")
        offered: dict[str, str] = {}
        for name, action in self.actions.items():
            if action.product is not None:
                if action.product in offered:
                    raise ValueError(
                        f"actions.{name}.product: {action.product!r} is offered by "
                        f"{offered[action.product]!r} already"
                    )
                offered[action.product] = name
        return self

    def on(self, factor: Factor) -> bool:
        """Whether a priority factor counts."""
        return self.factors.get(factor, True)

    def context_weight(self, channel: ContactChannel, kind: ActionKind) -> float:
        """The weight of a kind of action in a channel (1 when not configured)."""
        return self.context_weights.get(channel, {}).get(kind, 1.0)

    def check_tiers(self, names: list[str]) -> None:
        """Refuse value weights of tiers the tier policy does not have."""
        for tier in self.tier_value_weights:
            if tier not in names:
                raise InvalidActionPolicy(
                    f"tier_value_weights.{tier}",
                    f"not a tier of the tier policy ({', '.join(names)})",
                )


def parse_action_policy(raw: str | bytes) -> ActionPolicy:
    """A configuration from its JSON text; InvalidActionPolicy names the offending key."""
    try:
        return ActionPolicy.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        location = ".".join(str(p) for p in first["loc"] if p != "[key]")
        message = str(first["msg"]).removeprefix("Value error, ")
        if ": " in message and first["type"] == "value_error":  # our validators name the key
            key, _, rest = message.partition(": ")
            raise InvalidActionPolicy(f"{location}.{key}" if location else key, rest) from None
        raise InvalidActionPolicy(location or "policy", message) from None


def load_action_policy(path: Path) -> ActionPolicy:
    """Read and validate the configuration file; InvalidActionPolicy names the offending key."""
    return parse_action_policy(path.read_bytes())
