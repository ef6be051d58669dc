"""Ranking a customer's next best actions: pure, plain data in and out, no I/O.

Every configured action goes through the stages in order; the first stage that removes an
action is the one (and only one) it carries:

1. eligibility: the action's lifecycle stages; a product offer's eligibility rule (age,
   occupation, stage) and that the recommendation model scores the product; a retention
   offer needs the churn model's assessment.
2. applicability: a product offer's applicability rule (held, prerequisites, tier, exclusive
   groups); a retention offer from its churn band; a tier-upgrade nudge when a next tier
   exists and its relationship-balance gap is within reach; a service call with an open
   complaint or after a quiet spell.
3. suitability: a product offer's risk level against the customer's risk profile.
4. priority: propensity x context weight x value x lever (a factor switched off counts 1);
   an action at or below the least priority is removed.
5. contact policy: the contact policy's decision for the action's purpose in the channel.
6. volume cap: the most actions of one answer, and of one kind.

Cold start (Pega's smoothed propensity, Pega Academy "Smooth propensity"): with starting
propensity P0, starting evidence S and E responses (accepted or declined) to the action so far,

    smoothed = S / (S + E + 1) * P0 + E / (S + E + 1) * p

where p is the model's propensity (churn model for the retention offer, recommendation model
for a product offer) or, for actions no model scores, the observed acceptance rate
(accepted / E; 0 without evidence). From ``mature_evidence`` responses on, p is used alone.
Ties of priority are broken by the kind's order above, then the action's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from app.actions.policy import PURPOSE, ActionKind, ActionPolicy, ActionRule, Band, Factor
from app.contact.states import ContactChannel, ContactPurpose

KIND_ORDER = {kind: order for order, kind in enumerate(ActionKind)}
BANDS = [band.value for band in Band]


class RemovalStage(StrEnum):
    """The stage that removed an action from the offer."""

    ELIGIBILITY = "eligibility"
    APPLICABILITY = "applicability"
    SUITABILITY = "suitability"
    PRIORITY = "priority"
    CONTACT_POLICY = "contact_policy"
    VOLUME_CAP = "volume_cap"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Responses to an action so far: accepted or declined (E), and accepted."""

    responses: int = 0
    accepted: int = 0


@dataclass(frozen=True)
class CustomerFacts:
    """What the stages read of one customer, as plain values."""

    stage: str  # the scoring core's stage: prospect, new, existing, lost
    tier: str | None = None
    next_tier: str | None = None
    next_tier_gap_share: float | None = None  # relationship-balance gap / next cut-off
    churn_probability: float | None = None  # None: the churn model did not assess
    churn_band: str | None = None
    # Per product the recommendation model scored: its propensity.
    product_propensity: Mapping[str, float] = field(default_factory=dict)
    # Per product the rules refuse: (eligibility | applicability | suitability, why).
    product_refusals: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    open_complaint: bool = False
    days_inactive: float | None = None


@dataclass(frozen=True, slots=True)
class ContactVerdict:
    """The contact policy's answer for one purpose: None when allowed, else the rule."""

    rule: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Propensity:
    """An action's propensity and how it was reached."""

    model: float | None  # the model's propensity; None: no model scores the action
    used: float  # after cold-start smoothing
    evidence: int
    accepted: int
    starting: float
    cold_start: bool  # smoothed (evidence below maturity)


@dataclass(frozen=True, slots=True)
class Offered:
    """An action offered, with each factor of its priority (None: switched off)."""

    rank: int
    name: str
    kind: ActionKind
    product: str | None
    purpose: ContactPurpose
    priority: float
    propensity: Propensity
    context_weight: float | None
    value: float | None
    lever: float | None


@dataclass(frozen=True, slots=True)
class Removed:
    """An action not offered: the one stage that removed it and why."""

    name: str
    kind: ActionKind
    product: str | None
    stage: RemovalStage
    reason: str
    priority: float | None = None


@dataclass(frozen=True, slots=True)
class Ranking:
    """The offered actions, best first, and every other configured action."""

    offered: list[Offered]
    removed: list[Removed]


def smoothed_propensity(
    model: float | None,
    *,
    starting: float,
    starting_evidence: int,
    evidence: Evidence,
    mature_evidence: int | None,
) -> Propensity:
    """Pega's smoothed propensity (see the module's docstring)."""
    observed = (
        model
        if model is not None
        else (evidence.accepted / evidence.responses if evidence.responses else 0.0)
    )
    mature = mature_evidence is not None and evidence.responses >= mature_evidence
    if mature:
        used = observed
    else:
        total = starting_evidence + evidence.responses + 1.0
        used = starting_evidence / total * starting + evidence.responses / total * observed
    return Propensity(
        model=model,
        used=used,
        evidence=evidence.responses,
        accepted=evidence.accepted,
        starting=starting,
        cold_start=not mature,
    )


def _eligibility(rule: ActionRule, facts: CustomerFacts) -> str | None:
    """Why the action is not eligible (None: it is)."""
    if facts.stage not in rule.stages:
        return f"not offered at lifecycle stage {facts.stage} (stages: {', '.join(rule.stages)})"
    if rule.kind is ActionKind.RETENTION_OFFER and facts.churn_probability is None:
        return f"the churn model does not assess customers at stage {facts.stage}"
    if rule.kind is ActionKind.PRODUCT_OFFER:
        assert rule.product is not None
        if rule.product not in facts.product_propensity:
            return f"the recommendation model does not score {rule.product} for this customer"
        refusal = facts.product_refusals.get(rule.product)
        if refusal is not None and refusal[0] == RemovalStage.ELIGIBILITY.value:
            return refusal[1]
    return None


def _applicability(rule: ActionRule, facts: CustomerFacts) -> str | None:
    """Why the action does not apply (None: it does)."""
    if rule.kind is ActionKind.PRODUCT_OFFER:
        assert rule.product is not None
        refusal = facts.product_refusals.get(rule.product)
        if refusal is not None and refusal[0] == RemovalStage.APPLICABILITY.value:
            return refusal[1]
    elif rule.kind is ActionKind.RETENTION_OFFER:
        band = facts.churn_band or Band.LOW.value
        if BANDS.index(band) < BANDS.index(rule.min_churn_band.value):
            return f"churn risk band {band} is below {rule.min_churn_band.value}"
    elif rule.kind is ActionKind.TIER_UPGRADE_NUDGE:
        if facts.next_tier is None or facts.next_tier_gap_share is None:
            return "the customer is in the top tier"
        if facts.next_tier_gap_share > rule.max_gap_share:
            return (
                f"the gap to {facts.next_tier} is {facts.next_tier_gap_share:.0%} of its "
                f"cut-off (within reach: {rule.max_gap_share:.0%})"
            )
    elif rule.kind is ActionKind.SERVICE_CALL and not facts.open_complaint:
        quiet = facts.days_inactive
        if quiet is None or quiet < rule.inactive_days:
            return f"no open complaint and active within {rule.inactive_days} days"
    return None


def _suitability(rule: ActionRule, facts: CustomerFacts) -> str | None:
    """Why the action does not suit the customer (None: it does)."""
    if rule.kind is ActionKind.PRODUCT_OFFER:
        assert rule.product is not None
        refusal = facts.product_refusals.get(rule.product)
        if refusal is not None and refusal[0] == RemovalStage.SUITABILITY.value:
            return refusal[1]
    return None


def _model_propensity(rule: ActionRule, facts: CustomerFacts) -> float | None:
    if rule.kind is ActionKind.RETENTION_OFFER:
        return facts.churn_probability
    if rule.kind is ActionKind.PRODUCT_OFFER:
        assert rule.product is not None
        return facts.product_propensity.get(rule.product)
    return None


@dataclass(frozen=True, slots=True)
class _Scored:
    name: str
    rule: ActionRule
    priority: float
    propensity: Propensity
    context_weight: float | None
    value: float | None
    lever: float | None


def _score(
    name: str,
    rule: ActionRule,
    *,
    policy: ActionPolicy,
    facts: CustomerFacts,
    channel: ContactChannel,
    evidence: Evidence,
) -> _Scored:
    propensity = smoothed_propensity(
        _model_propensity(rule, facts),
        starting=(
            rule.starting_propensity
            if rule.starting_propensity is not None
            else policy.starting_propensity
        ),
        starting_evidence=policy.starting_evidence,
        evidence=evidence,
        mature_evidence=(
            rule.mature_evidence if rule.mature_evidence is not None else policy.mature_evidence
        ),
    )
    tier_weight = policy.tier_value_weights.get(facts.tier, 1.0) if facts.tier else 1.0
    factors: dict[Factor, float | None] = {
        Factor.PROPENSITY: propensity.used,
        Factor.CONTEXT_WEIGHT: policy.context_weight(channel, rule.kind),
        Factor.VALUE: rule.value * tier_weight,
        Factor.LEVERS: rule.lever,
    }
    priority = 1.0
    for factor, amount in factors.items():
        if policy.on(factor):
            assert amount is not None
            priority *= amount
        else:
            factors[factor] = None
    return _Scored(
        name=name,
        rule=rule,
        priority=priority,
        propensity=propensity,
        context_weight=factors[Factor.CONTEXT_WEIGHT],
        value=factors[Factor.VALUE],
        lever=factors[Factor.LEVERS],
    )


CHECKS = (
    (RemovalStage.ELIGIBILITY, _eligibility),
    (RemovalStage.APPLICABILITY, _applicability),
    (RemovalStage.SUITABILITY, _suitability),
)


def _first_refusal(rule: ActionRule, facts: CustomerFacts) -> tuple[RemovalStage, str] | None:
    """The first check that removes the action, and why (None: it passes all three)."""
    for stage, check in CHECKS:
        why = check(rule, facts)
        if why is not None:
            return stage, why
    return None


def screened(policy: ActionPolicy, facts: CustomerFacts) -> dict[str, ActionRule]:
    """The actions that pass eligibility, applicability and suitability (by name)."""
    return {
        name: rule for name, rule in policy.actions.items() if _first_refusal(rule, facts) is None
    }


def rank_actions(
    policy: ActionPolicy,
    facts: CustomerFacts,
    *,
    channel: ContactChannel,
    evidence: Mapping[str, Evidence],
    contact: Mapping[ContactPurpose, ContactVerdict],
) -> Ranking:
    """Every configured action through the stages; the offered ones ranked by priority."""
    removed: list[Removed] = []
    scored: list[_Scored] = []
    for name in sorted(policy.actions):
        rule = policy.actions[name]
        refusal = _first_refusal(rule, facts)
        if refusal is not None:
            removed.append(Removed(name, rule.kind, rule.product, *refusal))
        else:
            scored.append(
                _score(
                    name,
                    rule,
                    policy=policy,
                    facts=facts,
                    channel=channel,
                    evidence=evidence.get(name, Evidence()),
                )
            )
    scored.sort(key=lambda s: (-s.priority, KIND_ORDER[s.rule.kind], s.name))
    offered: list[Offered] = []
    per_kind: dict[ActionKind, int] = {}
    for item in scored:
        rule = item.rule
        purpose = PURPOSE[rule.kind]
        verdict = contact.get(purpose, ContactVerdict())
        cap = policy.max_per_kind.get(rule.kind)
        stage: RemovalStage | None = None
        reason = ""
        if item.priority <= policy.min_priority:
            stage = RemovalStage.PRIORITY
            reason = f"priority {item.priority:.6g} is not above {policy.min_priority:g}"
        elif verdict.rule is not None:
            stage, reason = RemovalStage.CONTACT_POLICY, f"{verdict.rule}: {verdict.detail}"
        elif len(offered) >= policy.max_actions:
            stage = RemovalStage.VOLUME_CAP
            reason = f"{policy.max_actions} actions already offered (max_actions)"
        elif cap is not None and per_kind.get(rule.kind, 0) >= cap:
            stage = RemovalStage.VOLUME_CAP
            reason = f"{cap} {rule.kind.value} action(s) already offered (max_per_kind)"
        if stage is not None:
            removed.append(
                Removed(item.name, rule.kind, rule.product, stage, reason, item.priority)
            )
            continue
        per_kind[rule.kind] = per_kind.get(rule.kind, 0) + 1
        offered.append(
            Offered(
                rank=len(offered) + 1,
                name=item.name,
                kind=rule.kind,
                product=rule.product,
                purpose=purpose,
                priority=item.priority,
                propensity=item.propensity,
                context_weight=item.context_weight,
                value=item.value,
                lever=item.lever,
            )
        )
    return Ranking(offered=offered, removed=removed)
