"""Next-best-action use cases: read the customer once, assess it through the one assessment
function (nothing saved), gather the facts, evidence and contact decisions, then rank (pure,
app/actions/rank.py).

Evidence: no store of offers exists, so an action's evidence is counted from the campaign
responses in the tenant's trail (``campaign_response`` events): accepted or declined responses
to the action's configured campaigns, and for a product offer every response naming its
product. The counts are kept per tenant for the policy's ``evidence_ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from app.actions.policy import PURPOSE, ActionPolicy, Factor
from app.actions.rank import (
    ContactVerdict,
    CustomerFacts,
    Evidence,
    Offered,
    Ranking,
    Removed,
    rank_actions,
    screened,
)
from app.actions.schemas import (
    NextBestActions,
    OfferedAction,
    PropensityOut,
    RemovedAction,
)
from app.contact.service import ContactPolicy, may_contact
from app.contact.states import ContactChannel, ContactPurpose
from app.customers import service as customers
from app.customers.assessments import CustomerScoring, TrailAssessment
from app.customers.features import Feature
from app.scoring.assess import ProductScreen
from app.scoring.manifest import Task
from app.value.policy import TierEvaluation, TierPolicy, evaluate

DECIDED = {"accepted", "declined"}


@dataclass
class EvidenceCache:
    """Per tenant, each action's evidence counted from the trail, kept for ``ttl_s``."""

    ttl_s: float
    _kept: dict[str | None, tuple[float, dict[str, Evidence]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(
        self, session: Session, *, policy: ActionPolicy, tenant: str | None
    ) -> dict[str, Evidence]:
        """The tenant's evidence per action (counted again once older than the TTL)."""
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(tenant)
        if kept is not None and now - kept[0] < self.ttl_s:
            return kept[1]
        counts = evidence_of(policy, customers.campaign_response_counts(session, tenant=tenant))
        with self._lock:
            self._kept[tenant] = (now, counts)
        return counts


def evidence_of(
    policy: ActionPolicy, counts: list[tuple[str, str | None, str, int]]
) -> dict[str, Evidence]:
    """Each action's evidence from campaign-response counts (campaign, product, response, n)."""
    by_campaign: dict[str, str] = {}
    by_product: dict[str, str] = {}
    for action_name, action in policy.actions.items():
        by_campaign.update(dict.fromkeys(action.campaigns, action_name))
        if action.product is not None:
            by_product[action.product] = action_name
    responses: dict[str, int] = {}
    accepted: dict[str, int] = {}
    for campaign, product, response, n in counts:
        if response not in DECIDED:
            continue
        name = (by_product.get(product) if product else None) or by_campaign.get(campaign)
        if name is None:
            continue
        responses[name] = responses.get(name, 0) + n
        if response == "accepted":
            accepted[name] = accepted.get(name, 0) + n
    return {name: Evidence(responses[name], accepted.get(name, 0)) for name in responses}


@dataclass(frozen=True)
class NextBestActionService:
    """Everything a next-best-action call needs, built once per app."""

    session_factory: sessionmaker[Session]
    scoring: CustomerScoring
    policy: ActionPolicy
    tier_policy: TierPolicy
    contact_policy: ContactPolicy
    screen: ProductScreen
    evidence: EvidenceCache

    def next_best_actions(
        self, *, customer_id: str, tenant: str | None, channel: ContactChannel
    ) -> NextBestActions:
        """The customer's actions ranked for a channel, and why each other one is not offered;
        404 if the caller's tenant has no trail of it."""
        # One session (one connection checkout) for every read of the call.
        with self.session_factory() as session:
            history, known = self.scoring.read_history(session, customer_id, tenant=tenant)
            tier = evaluate(self.tier_policy, [features for _, features in history])
            trail = self.scoring.assess_quietly(
                customer_id,
                history=history,
                known=known,
                tenant=tenant,
                tasks=(Task.CHURN, Task.RECOMMENDATION),
                extra={"tier": tier.tier},
            )
            facts = customer_facts(trail, tier, tier_policy=self.tier_policy, screen=self.screen)
            evidence = self.evidence.get(session, policy=self.policy, tenant=tenant)
            # The contact policy is asked only for the purposes of actions that passed the
            # eligibility, applicability and suitability checks.
            purposes = {PURPOSE[rule.kind] for rule in screened(self.policy, facts).values()}
            contact = self._contact(
                session,
                tenant=tenant,
                customer_id=customer_id,
                channel=channel,
                purposes=purposes,
            )
        ranking = rank_actions(
            self.policy, facts, channel=channel, evidence=evidence, contact=contact
        )
        return answer(customer_id, trail, tier, ranking, policy=self.policy, channel=channel)

    def _contact(
        self,
        session: Session,
        *,
        tenant: str | None,
        customer_id: str,
        channel: ContactChannel,
        purposes: set[ContactPurpose],
    ) -> dict[ContactPurpose, ContactVerdict]:
        """The contact policy's decision per purpose."""
        now = datetime.now(UTC)
        verdicts = {}
        for purpose in sorted(purposes):
            decision = may_contact(
                session,
                policy=self.contact_policy,
                tenant=tenant,
                customer_id=customer_id,
                channel=channel,
                purpose=purpose,
                at=now,
            )
            verdicts[purpose] = ContactVerdict(
                rule=None if decision.allowed else str(decision.rule), detail=decision.detail
            )
        return verdicts


def _number(value: Feature) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def gap_share(policy: TierPolicy, tier: TierEvaluation) -> float | None:
    """The largest gap to the next tier as a share of its cut-off, over its cut-offs (None at
    the top)."""
    if tier.next_tier is None or tier.gap_to_next is None:
        return None
    rank = policy.rank(tier.next_tier)
    assert rank is not None
    cutoffs = policy.tiers[rank].cutoffs
    return max(
        (tier.gap_to_next[m] / cutoff for m, cutoff in cutoffs.items() if cutoff > 0),
        default=0.0,
    )


def customer_facts(
    trail: TrailAssessment,
    tier: TierEvaluation,
    *,
    tier_policy: TierPolicy,
    screen: ProductScreen,
) -> CustomerFacts:
    """What the ranking reads of the customer, from its assessments, tier and features."""
    churn = trail.assessments.get(Task.CHURN)
    recommendation = trail.assessments.get(Task.RECOMMENDATION)
    propensity: dict[str, float] = {}
    refusals: dict[str, tuple[str, str]] = {}
    if recommendation is not None:
        products = recommendation.model.classes
        propensity = {p: float(recommendation.probabilities[0, j]) for j, p in enumerate(products)}
        refusals = {
            p: (stage.value, why) for p, (stage, why) in screen.screen(recommendation).items()
        }
    share = gap_share(tier_policy, tier)
    features = trail.features
    open_complaint = _number(features.get("open_complaint"))
    return CustomerFacts(
        stage=trail.stage,
        tier=tier.tier,
        next_tier=tier.next_tier,
        next_tier_gap_share=share,
        churn_probability=None if churn is None else float(churn.probability[0]),
        churn_band=None if churn is None else str(churn.band[0]),
        product_propensity=propensity,
        product_refusals=refusals,
        open_complaint=bool(open_complaint),
        days_inactive=_number(features.get("days_since_last_activity")),
    )


def answer(
    customer_id: str,
    trail: TrailAssessment,
    tier: TierEvaluation,
    ranking: Ranking,
    *,
    policy: ActionPolicy,
    channel: ContactChannel,
) -> NextBestActions:
    """The ranking in the API's shape."""
    return NextBestActions(
        customer_id=customer_id,
        month=trail.month,
        lifecycle=trail.stage,
        tier=tier.tier,
        channel=channel,
        policy_version=policy.version,
        factors={factor.value: on for factor, on in _factors(policy).items()},
        offered=[_offered(item) for item in ranking.offered],
        not_offered=[_removed(item) for item in ranking.removed],
    )


def _factors(policy: ActionPolicy) -> Mapping[Factor, bool]:
    return {factor: policy.on(factor) for factor in Factor}


def _offered(item: Offered) -> OfferedAction:
    p = item.propensity
    return OfferedAction(
        rank=item.rank,
        action=item.name,
        kind=item.kind,
        product=item.product,
        purpose=item.purpose,
        priority=round(item.priority, 6),
        propensity=PropensityOut(
            model=None if p.model is None else round(p.model, 6),
            smoothed=round(p.used, 6),
            evidence=p.evidence,
            accepted=p.accepted,
            starting=p.starting,
            cold_start=p.cold_start,
        ),
        context_weight=item.context_weight,
        value=None if item.value is None else round(item.value, 2),
        lever=item.lever,
    )


def _removed(item: Removed) -> RemovedAction:
    return RemovedAction(
        action=item.name,
        kind=item.kind,
        product=item.product,
        stage=item.stage,
        reason=item.reason,
        priority=None if item.priority is None else round(item.priority, 6),
    )
