"""Wire shapes of next best actions: the offered actions with each priority factor, and every
other configured action with the one stage that removed it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.actions.policy import ActionKind
from app.actions.rank import RemovalStage
from app.contact.states import ContactChannel, ContactPurpose


class PropensityOut(BaseModel):
    """An action's propensity: the model's, and after cold-start smoothing (Pega's formula)."""

    model: float | None = Field(
        description="The model's propensity (churn model: retention offer; recommendation "
        "model: product offer); null: no model scores the action (the acceptance rate is used)."
    )
    smoothed: float = Field(description="The propensity used: S/(S+E+1)*P0 + E/(S+E+1)*p.")
    evidence: int = Field(description="E: accepted or declined responses to the action so far.")
    accepted: int
    starting: float = Field(description="P0: the configured starting propensity.")
    cold_start: bool = Field(description="False once the evidence reaches the maturity level.")


class OfferedAction(BaseModel):
    """An action offered; a priority factor switched off shows null (it counts 1)."""

    rank: int
    action: str
    kind: ActionKind
    product: str | None
    purpose: ContactPurpose
    priority: float = Field(description="propensity x context weight x value x lever.")
    propensity: PropensityOut
    context_weight: float | None
    value: float | None = Field(description="The action's value x the tier's value weight, EUR.")
    lever: float | None


class RemovedAction(BaseModel):
    """An action not offered: the one stage that removed it, and why."""

    action: str
    kind: ActionKind
    product: str | None
    stage: RemovalStage
    reason: str
    priority: float | None = Field(description="Set for actions removed after prioritising.")


class NextBestActions(BaseModel):
    """A customer's next best actions in a channel, best first, and those not offered."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C-000042",
                    "month": "2026-11",
                    "lifecycle": "existing",
                    "tier": "affluent",
                    "channel": "phone",
                    "policy_version": "2026-12-06",
                    "factors": {
                        "propensity": True,
                        "context_weight": True,
                        "value": True,
                        "levers": True,
                    },
                    "offered": [
                        {
                            "rank": 1,
                            "action": "retention_offer",
                            "kind": "retention_offer",
                            "product": None,
                            "purpose": "retention",
                            "priority": 36.283,
                            "propensity": {
                                "model": 0.71,
                                "smoothed": 0.085,
                                "evidence": 12,
                                "accepted": 5,
                                "starting": 0.1,
                                "cold_start": True,
                            },
                            "context_weight": 1.2,
                            "value": 480.0,
                            "lever": 1.0,
                        }
                    ],
                    "not_offered": [
                        {
                            "action": "offer_brokerage",
                            "kind": "product_offer",
                            "product": "brokerage",
                            "stage": "suitability",
                            "reason": "product rule risk_level=R4 not met",
                            "priority": None,
                        }
                    ],
                }
            ]
        }
    )

    customer_id: str
    month: str = Field(description="The customer's latest month on record (YYYY-MM, UTC).")
    lifecycle: str = Field(description="The scoring core's stage: prospect, new, existing, lost.")
    tier: str = Field(description="The tier under the bank's tier policy.")
    channel: ContactChannel
    policy_version: str
    factors: dict[str, bool] = Field(description="Which priority factors are switched on.")
    offered: list[OfferedAction]
    not_offered: list[RemovedAction]
