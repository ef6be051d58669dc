"""Campaign use cases: draft, check, launch (the contact list under the contact policy), report
and collect the outcomes. Keyword-only; each use case commits once.

Targeting reads the book set-wise: the customers' stages (customers domain), tiers of record
(value domain) and latest scores (scoring domain) as subqueries, and the contact policy's
blocks for the whole tenant at once (contact domain).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Subquery,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.campaigns import stats
from app.campaigns.charts import report_svg
from app.campaigns.schemas import (
    ArmResult,
    BlockedCount,
    CampaignOut,
    CampaignPage,
    CampaignReport,
    CampaignRequest,
    CostResult,
    DecileRow,
    LaunchResult,
    LiftResult,
    PowerCheck,
    Segment,
    UpliftResult,
)
from app.campaigns.states import CONVERTING_RESPONSE, Arm, CampaignStatus
from app.campaigns.tables import (
    Campaign,
    CampaignMember,
    CampaignReportRow,
    campaign_member_table,
)
from app.contact import service as contact
from app.contact.service import ContactPolicy
from app.contact.states import ContactChannel, ContactPurpose
from app.customers import service as customers
from app.customers.stages import stages_of_record
from app.errors import Conflict, InvalidInput, NotFound
from app.scoring.repository import latest_scores
from app.value.service import tiers_of_record

UNTAGGED_KEY = ""
BOOTSTRAP_ROUNDS = 1000
QINI_BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_SEED = 20261206
INSERT_CHUNK = 10_000
# Customers the priority task never scored rank after every scored one.
UNSCORED = -1.0
# The charts' source language (the console's English is the same code: one stored chart).
ENGLISH = "en"


class CampaignLaunched(Conflict):
    """The campaign was launched already: its contact list exists and is never written twice."""

    code = "campaign_launched"
    title = "Campaign already launched"


class CampaignNotLaunched(Conflict):
    """A report needs a launched campaign."""

    code = "campaign_not_launched"
    title = "Campaign not launched"


class CampaignCodeTaken(Conflict):
    """Another campaign of the tenant has this code (the trail's responses name it)."""

    code = "campaign_code_taken"
    title = "Campaign code taken"


def _key(tenant: str | None) -> str:
    return UNTAGGED_KEY if tenant is None else tenant


def _tenant(campaign: Campaign) -> str | None:
    return campaign.tenant or None


def campaign_out(campaign: Campaign) -> CampaignOut:
    """The wire shape of a stored campaign."""
    return CampaignOut.model_validate(
        {
            **{c.name: getattr(campaign, c.name) for c in Campaign.__table__.columns},
            "target": Segment.model_validate(campaign.target),
        }
    )


def create_campaign(
    session: Session,
    *,
    tenant: str | None,
    request: CampaignRequest,
    tier_names: list[str],
    created_by: str,
    now: datetime,
) -> CampaignOut:
    """Draft a campaign (422 naming a tier the policy lacks; 409 when the code is taken)."""
    unknown = [
        {
            "field": f"body.target.tiers[{i}]",
            "message": f"no tier {tier!r} in the tier policy",
            "type": "unknown_tier",
        }
        for i, tier in enumerate(request.target.tiers or [])
        if tier not in tier_names
    ]
    if unknown:
        raise InvalidInput(
            "invalid field(s): " + ", ".join(e["field"] for e in unknown), extra={"errors": unknown}
        )
    campaign = Campaign(
        tenant=_key(tenant),
        code=request.code,
        name=request.name,
        action=request.action,
        channel=request.channel.value,
        purpose=request.purpose.value,
        target=request.target.model_dump(mode="json", exclude_none=True),
        priority_task=request.priority_task.value if request.priority_task else None,
        starts_at=request.starts_at,
        ends_at=request.ends_at,
        period=request.period or request.starts_at.astimezone(UTC).strftime("%Y-%m"),
        control_rate=request.control_rate,
        volume_cap=request.volume_cap,
        budget=request.budget,
        cost_per_contact=request.cost_per_contact,
        baseline_rate=request.baseline_rate,
        minimum_lift=request.minimum_lift,
        status=CampaignStatus.DRAFT.value,
        created_by=created_by,
        created_at=now,
        launched_at=None,
    )
    session.add(campaign)
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        raise CampaignCodeTaken(f"a campaign with code {request.code!r} exists") from error
    return campaign_out(campaign)


def _load(session: Session, *, tenant: str | None, campaign_id: int) -> Campaign:
    campaign = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.tenant == _key(tenant))
    ).one_or_none()
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


def get_campaign(session: Session, *, tenant: str | None, campaign_id: int) -> CampaignOut:
    """One campaign of the caller's tenant (404 otherwise)."""
    return campaign_out(_load(session, tenant=tenant, campaign_id=campaign_id))


def list_campaigns(
    session: Session,
    *,
    tenant: str | None,
    limit: int,
    offset: int,
    status: CampaignStatus | None = None,
) -> CampaignPage:
    """A page of the tenant's campaigns, newest first (of one status when given)."""
    where = Campaign.tenant == _key(tenant)
    if status is not None:
        where = where & (Campaign.status == status.value)
    total = session.scalar(select(func.count()).select_from(Campaign).where(where)) or 0
    rows = session.scalars(
        select(Campaign).where(where).order_by(Campaign.id.desc()).limit(limit).offset(offset)
    )
    return CampaignPage(
        total=total, limit=limit, offset=offset, items=[campaign_out(c) for c in rows]
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """A campaign's contact list as it would be written now: members in rank order."""

    customer_ids: list[str]
    control: np.ndarray[Any, np.dtype[np.bool_]]
    scores: list[float | None]
    segment_customers: int
    blocked: Counter[str]
    contact_limit: int | None

    @property
    def treatment_count(self) -> int:
        """Customers contacted."""
        return int(self.control.size - self.control.sum())

    @property
    def control_count(self) -> int:
        """Customers held out."""
        return int(self.control.sum())


def contact_limit(campaign: Campaign) -> int | None:
    """The most customers the campaign may contact: its volume cap and what its budget buys."""
    limits = [] if campaign.volume_cap is None else [campaign.volume_cap]
    if campaign.budget is not None and campaign.cost_per_contact > 0:
        limits.append(math.floor(campaign.budget / campaign.cost_per_contact))
    return min(limits) if limits else None


def audience_query(campaign: Campaign) -> Select[Any]:
    """The segment's customers (stored ids) and the priority task's latest score."""
    tenant = _tenant(campaign)
    segment = Segment.model_validate(campaign.target)
    stage = stages_of_record(tenant=tenant)
    # One subquery per task: the priority and a band on the same task share it.
    scores: dict[str, Subquery] = {}

    def latest(task: str) -> Subquery:
        if task not in scores:
            scores[task] = latest_scores(task=task, tenant=tenant, name=f"score_{len(scores)}")
        return scores[task]

    joined: FromClause = stage
    conditions: list[ColumnElement[bool]] = []
    if segment.stages:
        conditions.append(stage.c.stage.in_([s.value for s in segment.stages]))
    if segment.tiers:
        tiers = tiers_of_record(tenant=tenant)
        joined = joined.join(tiers, tiers.c.customer_id == stage.c.customer_id)
        conditions.append(tiers.c.tier.in_(segment.tiers))
    for task in sorted({band.task.value for band in segment.scores}):
        banded = latest(task)
        joined = joined.join(banded, banded.c.customer_id == stage.c.customer_id)
    for band in segment.scores:
        column = scores[band.task.value].c.probability
        if band.min is not None:
            conditions.append(column >= band.min)
        if band.max is not None:
            conditions.append(column <= band.max)
    if campaign.priority_task is None:
        priority_column: ColumnElement[Any] = literal(None).label("probability")
    else:
        known = campaign.priority_task in scores
        priority = latest(campaign.priority_task)
        if not known:  # unscored customers stay, ranked last
            joined = joined.outerjoin(priority, priority.c.customer_id == stage.c.customer_id)
        priority_column = priority.c.probability
    query = select(stage.c.customer_id, priority_column).select_from(joined).where(*conditions)
    return query


def plan(session: Session, *, campaign: Campaign, policy: ContactPolicy, at: datetime) -> Plan:
    """Target the segment, drop whom the contact policy blocks, split the arms by the stable
    hash, rank by priority (ties by customer id) and fill the contact limit highest first;
    control customers are kept down to the rank where the limit filled, so both arms come from
    the same ranks."""
    rows = session.execute(audience_query(campaign)).all()
    blocked = contact.blocked_customers(
        session,
        policy=policy,
        tenant=_tenant(campaign),
        channel=ContactChannel(campaign.channel),
        purpose=ContactPurpose(campaign.purpose),
        at=at,
    )
    counts: Counter[str] = Counter()
    kept: list[str] = []
    kept_scores: list[float | None] = []
    for customer_id, score in rows:
        rule = blocked.get(customer_id)
        if rule is not None:
            counts[rule.value] += 1
            continue
        kept.append(customer_id)
        kept_scores.append(score)
    ids = np.array(kept, dtype=str)
    priority = np.array([UNSCORED if s is None else s for s in kept_scores], dtype=np.float64)
    order = np.lexsort((ids, -priority)) if ids.size else np.zeros(0, dtype=np.int64)
    draws = np.fromiter(
        (stats.control_draw(c, campaign.period) for c in kept), dtype=np.float64, count=len(kept)
    )
    control = (draws < campaign.control_rate)[order]
    limit = contact_limit(campaign)
    if limit is not None:
        treated = (~control).astype(np.int64)
        # A row is kept while the treatment contacted before it is below the limit.
        within = (np.cumsum(treated) - treated) < limit
        order, control = order[within], control[within]
    return Plan(
        customer_ids=[kept[i] for i in order],
        control=control,
        scores=[kept_scores[i] for i in order],
        segment_customers=len(rows),
        blocked=counts,
        contact_limit=limit,
    )


def power_check(campaign: Campaign, planned: Plan) -> PowerCheck:
    """Whether the planned arms can detect the campaign's minimum lift on its baseline."""
    needed = stats.required_sample(
        baseline_rate=campaign.baseline_rate,
        minimum_lift=campaign.minimum_lift,
        control_share=campaign.control_rate,
    )
    treated, held = planned.treatment_count, planned.control_count
    sufficient = treated >= needed.treatment and held >= needed.control
    warning = None
    if not sufficient:
        warning = (
            f"audience too small: {held} held out and {treated} contacted, but {needed.control}"
            f" and {needed.treatment} are needed to detect a lift of {campaign.minimum_lift:g}"
            f" on a baseline rate of {campaign.baseline_rate:g}"
        )
    return PowerCheck(
        segment_customers=planned.segment_customers,
        blocked=[BlockedCount(rule=r, customers=n) for r, n in sorted(planned.blocked.items())],
        contact_limit=planned.contact_limit,
        treatment=treated,
        control=held,
        required_treatment=needed.treatment,
        required_control=needed.control,
        sufficient=sufficient,
        warning=warning,
    )


def check_campaign(
    session: Session,
    *,
    tenant: str | None,
    campaign_id: int,
    policy: ContactPolicy,
    now: datetime,
) -> PowerCheck:
    """The pre-launch check: the audience that launching now would write, and its power."""
    campaign = _load(session, tenant=tenant, campaign_id=campaign_id)
    return power_check(campaign, plan(session, campaign=campaign, policy=policy, at=now))


def launch_campaign(
    session: Session,
    *,
    tenant: str | None,
    campaign_id: int,
    policy: ContactPolicy,
    now: datetime,
) -> LaunchResult:
    """Write the contact list once: claim the draft (409 when launched already, by this call's
    twin too), plan, store every member with its arm and record the treatment's contacts
    through the contact policy; one commit."""
    campaign = _load(session, tenant=tenant, campaign_id=campaign_id)
    claimed = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.status == CampaignStatus.DRAFT.value)
        .values(status=CampaignStatus.LAUNCHED.value, launched_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise CampaignLaunched(f"campaign {campaign_id} was launched already")
    planned = plan(session, campaign=campaign, policy=policy, at=now)
    rows: list[dict[str, Any]] = [
        {
            "campaign_id": campaign.id,
            "customer_id": customer_id,
            "arm": (Arm.CONTROL if held else Arm.TREATMENT).value,
            "rank": rank,
            "score": score,
        }
        for rank, (customer_id, held, score) in enumerate(
            zip(planned.customer_ids, planned.control.tolist(), planned.scores, strict=True),
            start=1,
        )
    ]
    # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues"):
    # a plain executemany is one round trip a row on psycopg.
    if rows:
        session.execute(insert(campaign_member_table).returning(campaign_member_table.c.id), rows)
    contact.record_contacts(
        session,
        tenant=_tenant(campaign),
        customer_ids=[r["customer_id"] for r in rows if r["arm"] == Arm.TREATMENT.value],
        channel=ContactChannel(campaign.channel),
        purpose=ContactPurpose(campaign.purpose),
        at=now,
        recorded_by=f"campaign:{campaign.id}",
    )
    session.commit()
    session.refresh(campaign)
    return LaunchResult(campaign=campaign_out(campaign), check=power_check(campaign, planned))


@dataclass(frozen=True, slots=True)
class Outcomes:
    """A launched campaign's members with what they did, in rank order."""

    customer_ids: list[str]
    treated: np.ndarray[Any, np.dtype[np.int64]]
    converted: np.ndarray[Any, np.dtype[np.int64]]
    scores: np.ndarray[Any, np.dtype[np.float64]]
    last_response: dict[str, tuple[str, datetime]]
    converted_at: dict[str, datetime]


def outcomes(session: Session, *, campaign: Campaign) -> Outcomes:
    """Each member's arm, score and conversion, read from the trail's campaign_response events
    (``campaign_id`` = the campaign's code) between launch and the campaign's end."""
    if campaign.launched_at is None:
        raise CampaignNotLaunched(f"campaign {campaign.id} is not launched")
    members = session.execute(
        select(CampaignMember.customer_id, CampaignMember.arm, CampaignMember.score)
        .where(CampaignMember.campaign_id == campaign.id)
        .order_by(CampaignMember.rank)
    ).all()
    responses = customers.responses_to_campaign(
        session,
        tenant=_tenant(campaign),
        campaign_code=campaign.code,
        since=campaign.launched_at,
        until=campaign.ends_at,
    )
    last: dict[str, tuple[str, datetime]] = {}
    converted_at: dict[str, datetime] = {}
    for event in responses:
        last[event.customer_id] = (event.response, event.occurred_at)
        if event.response == CONVERTING_RESPONSE:
            converted_at.setdefault(event.customer_id, event.occurred_at)
    return Outcomes(
        customer_ids=[m.customer_id for m in members],
        treated=np.array([m.arm == Arm.TREATMENT.value for m in members], dtype=np.int64),
        converted=np.array([m.customer_id in converted_at for m in members], dtype=np.int64),
        scores=np.array(
            [UNSCORED if m.score is None else m.score for m in members], dtype=np.float64
        ),
        last_response=last,
        converted_at=converted_at,
    )


def _arm(arm: Arm, customers_: int, conversions: int, replicates: Any) -> ArmResult:
    interval = stats.percentile_interval(replicates) if customers_ else None
    return ArmResult(
        arm=arm,
        customers=customers_,
        conversions=conversions,
        rate=conversions / customers_ if customers_ else None,
        rate_low=interval[0] if interval else None,
        rate_high=interval[1] if interval else None,
    )


def _uplift(campaign: Campaign, seen: Outcomes, rounds: int, seed: int) -> UpliftResult | None:
    if campaign.priority_task is None or seen.treated.size < 10:
        return None
    arms = set(seen.treated.tolist())
    qini = low = high = None
    if arms == {0, 1} and seen.converted.any():
        qini = stats.qini_coefficient(seen.converted, seen.scores, seen.treated)
        replicates = stats.bootstrap_qini(
            seen.converted, seen.scores, seen.treated, rounds=rounds, seed=seed
        )
        interval = stats.percentile_interval(replicates)
        low, high = interval if interval else (None, None)
        qini = qini if math.isfinite(qini) else None
    deciles = stats.uplift_by_decile(seen.converted, seen.scores, seen.treated)
    return UpliftResult(
        score_task=campaign.priority_task,
        qini=qini,
        qini_low=low,
        qini_high=high,
        deciles=[DecileRow.model_validate(d, from_attributes=True) for d in deciles],
    )


def report(
    session: Session,
    *,
    tenant: str | None,
    campaign_id: int,
    now: datetime,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = BOOTSTRAP_SEED,
) -> CampaignReport:
    """Per arm customers, conversions and rate; lift over control (delta-method and bootstrap
    intervals, significance); Qini and uplift by decile for a model-targeted campaign; cost
    per conversion. Bootstrap draws are seeded: the same report twice is the same."""
    campaign = _load(session, tenant=tenant, campaign_id=campaign_id)
    seen = outcomes(session, campaign=campaign)
    assert campaign.launched_at is not None  # outcomes() refuses a draft
    n_t = int(seen.treated.sum())
    n_c = int(seen.treated.size - n_t)
    conv_t = int((seen.converted * seen.treated).sum())
    conv_c = int(seen.converted.sum() - conv_t)
    pt_reps, pc_reps = stats.bootstrap_rates(
        treated=max(n_t, 1),
        treated_conversions=conv_t,
        control=max(n_c, 1),
        control_conversions=conv_c,
        rounds=rounds,
        seed=seed,
    )
    lift_result = None
    if n_t and n_c:
        delta = stats.lift(
            treated=n_t, treated_conversions=conv_t, control=n_c, control_conversions=conv_c
        )
        ratio = (
            np.divide(pt_reps, pc_reps, out=np.full_like(pt_reps, np.nan), where=pc_reps > 0) - 1
        )
        boot = stats.percentile_interval(ratio)
        lift_result = LiftResult(
            absolute=delta.absolute,
            absolute_low=delta.absolute_low,
            absolute_high=delta.absolute_high,
            relative=delta.relative,
            relative_low=delta.relative_low,
            relative_high=delta.relative_high,
            bootstrap_relative_low=boot[0] if boot else None,
            bootstrap_relative_high=boot[1] if boot else None,
            significant=delta.significant,
        )
    cost = n_t * campaign.cost_per_contact
    incremental = conv_t - n_t * conv_c / n_c if n_c else None
    return CampaignReport(
        campaign_id=campaign.id,
        code=campaign.code,
        launched_at=campaign.launched_at,
        responses_until=min(campaign.ends_at, now) if campaign.ends_at else now,
        arms=[
            _arm(Arm.TREATMENT, n_t, conv_t, pt_reps),
            _arm(Arm.CONTROL, n_c, conv_c, pc_reps),
        ],
        lift=lift_result,
        uplift=_uplift(campaign, seen, min(rounds, QINI_BOOTSTRAP_ROUNDS), seed),
        cost=CostResult(
            contacts=n_t,
            cost=cost,
            per_conversion=cost / conv_t if conv_t else None,
            incremental_conversions=incremental,
            per_incremental_conversion=cost / incremental
            if incremental and incremental > 0
            else None,
        ),
        bootstrap_rounds=rounds,
        bootstrap_seed=seed,
    )


def _responses_mark(session: Session, campaign: Campaign, rounds: int, seed: int) -> str:
    count, last = customers.campaign_response_mark(
        session,
        tenant=_tenant(campaign),
        since=campaign.launched_at or campaign.created_at,
        until=campaign.ends_at,
    )
    ends = campaign.ends_at.isoformat() if campaign.ends_at else ""
    return f"{count}:{last}:{ends}:{rounds}:{seed}"


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A campaign's report and its chart in the reader's language."""

    report: CampaignReport
    chart: str | None


def _same(message: str) -> str:
    return message


def stored_report(
    session: Session,
    *,
    tenant: str | None,
    campaign_id: int,
    now: datetime,
    language: str | None = None,
    translate: Callable[[str], str] = _same,
) -> StoredReport:
    """The report as ``report`` computes it, read from its stored copy while no response has
    arrived since, and its chart in ``language`` (when given; drawn once with ``translate``
    and stored beside it); computed and stored again when a response has arrived. One commit
    when something was stored."""
    campaign = _load(session, tenant=tenant, campaign_id=campaign_id)
    if campaign.launched_at is None:
        raise CampaignNotLaunched(f"campaign {campaign.id} is not launched")
    mark = _responses_mark(session, campaign, BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED)
    row = session.get(CampaignReportRow, campaign.id)
    fresh = row is None or row.responses_mark != mark
    if fresh:
        found = report(session, tenant=tenant, campaign_id=campaign_id, now=now)
        if row is None:
            row = CampaignReportRow(campaign_id=campaign.id)
            session.add(row)
        row.responses_mark, row.charts, row.computed_at = mark, {}, now
        row.report = found.model_dump(mode="json")
    else:
        assert row is not None
        # No response arrived since: the stored figures hold up to now.
        found = CampaignReport.model_validate(row.report).model_copy(
            update={"responses_until": min(campaign.ends_at, now) if campaign.ends_at else now}
        )
    chart = None if language is None else row.charts.get(language)
    if language is not None and chart is None:
        chart = report_svg(found, translate)
        row.charts = {**row.charts, language: chart}
        fresh = True
    if fresh:
        try:
            session.commit()
        except IntegrityError:  # another view stored the same report first
            session.rollback()
    return StoredReport(report=found, chart=None if chart is None else str(chart))


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One member's outcome as retraining reads it."""

    customer_id: str
    arm: Arm
    score: float | None
    response: str | None
    responded_at: datetime | None
    converted: bool


def collect_outcomes(session: Session, *, tenant: str | None, campaign_id: int) -> list[OutcomeRow]:
    """Store each member's latest response and whether it converted on its member row (what
    an uplift model trains on: arm = treatment flag, converted = label); running it again
    rewrites the same values. One commit."""
    campaign = _load(session, tenant=tenant, campaign_id=campaign_id)
    seen = outcomes(session, campaign=campaign)
    ids = dict(
        session.execute(
            select(CampaignMember.customer_id, CampaignMember.id).where(
                CampaignMember.campaign_id == campaign.id
            )
        ).all()
    )
    rows: list[OutcomeRow] = []
    updates: list[dict[str, Any]] = []
    for customer_id, treated, score in zip(
        seen.customer_ids, seen.treated.tolist(), seen.scores.tolist(), strict=True
    ):
        response, at = seen.last_response.get(customer_id, (None, None))
        converted = customer_id in seen.converted_at
        updates.append(
            {
                "id": ids[customer_id],
                "response": response,
                "responded_at": at,
                "converted": converted,
            }
        )
        rows.append(
            OutcomeRow(
                customer_id=customer_id,
                arm=Arm.TREATMENT if treated else Arm.CONTROL,
                score=None if score == UNSCORED else score,
                response=response,
                responded_at=at,
                converted=converted,
            )
        )
    for start in range(0, len(updates), INSERT_CHUNK):
        session.execute(update(CampaignMember), updates[start : start + INSERT_CHUNK])
    session.commit()
    return rows
