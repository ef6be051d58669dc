"""The assessment core: one set of rules computes every score, whoever asks.

API calls, ``cvm score`` (plain and Dask) and, later, event-driven rescoring all call
``assess_task`` on a block of customers (one row or a million): the lifecycle stage, the
model's output, the bank's rules on top of it (product eligibility, tier service plans, the
alert threshold for the customer's stage) and the reasons. Pure: numpy and the models, no I/O,
no web framework, no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from app.scoring.feature_schema import FeatureSchema
from app.scoring.feature_schema import FloatMatrix as FloatArray
from app.scoring.manifest import Objective, Task
from app.scoring.next_tier import find_next_tier_gap
from app.scoring.policies import RULE_FIELDS, EligibilityRules, RuleStage

if TYPE_CHECKING:  # not imported to run: a compiled model alone scores without LightGBM
    from app.scoring.compiled import CompiledModel
    from app.scoring.explain import Explanation
    from app.scoring.model import ScoringModel

    # LightGBM's model (reasons, value models) or its compiled library alone (scores only).
    AnyModel: TypeAlias = ScoringModel | CompiledModel

BoolArray: TypeAlias = npt.NDArray[np.bool_]


class Stage(StrEnum):
    """Where a customer is in the relationship: it decides which scores apply."""

    PROSPECT = "prospect"
    NEW = "new"
    EXISTING = "existing"
    LOST = "lost"


# Stages travel as int8 codes into this tuple: a million customers' stages are one array.
STAGES: tuple[Stage, ...] = tuple(Stage)
STAGE_CODE = {stage: code for code, stage in enumerate(STAGES)}
_NEW, _EXISTING = STAGE_CODE[Stage.NEW], STAGE_CODE[Stage.EXISTING]
# Up to this many customers, plain Python beats numpy's per-call overhead (one API call).
_FEW = 8
StageCodes: TypeAlias = npt.NDArray[np.int8]
BAND_LABELS = ("low", "medium", "high")
_BAND_ARRAY = np.array(BAND_LABELS, dtype=object)
_STAGE_NAMES = np.array([stage.value for stage in STAGES], dtype=object)

# The scores that apply at each stage; a lost customer is not scored for action.
STAGE_TASKS: dict[Stage, tuple[Task, ...]] = {
    Stage.PROSPECT: (Task.PROSPECT,),
    Stage.NEW: (Task.RECOMMENDATION,),
    Stage.EXISTING: (Task.TIER, Task.RECOMMENDATION, Task.CHURN),
    Stage.LOST: (),
}


def stage_codes(values: Sequence[str | None]) -> StageCodes:
    """Stage names as codes; -1 where the stage is not known."""
    return np.array([STAGE_CODE[Stage(v)] if v else -1 for v in values], dtype=np.int8)


def lifecycle_stages(
    count: int,
    *,
    tenure_months: FloatArray | None,
    given: StageCodes | None = None,
    unknown: Stage = Stage.PROSPECT,
    new_customer_months: int = 3,
) -> StageCodes:
    """Each customer's stage code: as given where known (code >= 0), else from tenure;
    ``unknown`` where tenure is missing too (a prospect, unless the task scores customers)."""
    if tenure_months is None:
        codes = np.full(count, STAGE_CODE[unknown], dtype=np.int8)
    elif count <= _FEW:
        codes = np.array(
            [
                STAGE_CODE[unknown] if t != t else _NEW if t < new_customer_months else _EXISTING
                for t in tenure_months.tolist()
            ],
            dtype=np.int8,
        )
    else:
        codes = np.full(count, STAGE_CODE[Stage.EXISTING], dtype=np.int8)
        codes[tenure_months < new_customer_months] = STAGE_CODE[Stage.NEW]
        codes[np.isnan(tenure_months)] = STAGE_CODE[unknown]
    if given is not None and (given >= 0).any():
        known = given >= 0
        codes[known] = given[known]
    return codes


def block_stages(
    task: Task, schema: FeatureSchema, matrix: FloatArray, *, given: StageCodes | None, rules: Rules
) -> StageCodes:
    """The stages of a block scored by one task's model: given where known, else from tenure;
    a model that scores customers only (all but prospect) takes an unknown tenure for an
    existing customer."""
    return lifecycle_stages(
        len(matrix),
        tenure_months=schema.values_of(matrix, "tenure_months"),
        given=given,
        unknown=Stage.PROSPECT if task is Task.PROSPECT else Stage.EXISTING,
        new_customer_months=rules.new_customer_months,
    )


@dataclass(frozen=True)
class AlertThresholds:
    """When a churn score calls for an alert: from a band (or a probability) up, and only at
    the stages where the bank can still act (never for prospects or lost customers)."""

    min_band: str = "high"
    min_probability: float | None = None
    stages: frozenset[Stage] = frozenset({Stage.NEW, Stage.EXISTING})

    def crossed(
        self, probability: FloatArray, band_codes: npt.NDArray[np.int8], stages: StageCodes
    ) -> BoolArray:
        """Per customer, whether the threshold for the customer's stage is crossed."""
        if self.min_probability is not None:
            above = probability >= self.min_probability
        else:
            above = band_codes >= BAND_LABELS.index(self.min_band)
        return np.asarray(above & self._actionable[stages], dtype=bool)

    @property
    def _actionable(self) -> BoolArray:
        """Per stage code, whether the stage may alert; built once."""
        table: BoolArray | None = self.__dict__.get("_table")
        if table is None:
            table = np.array([s in self.stages for s in STAGES], dtype=bool)
            object.__setattr__(self, "_table", table)
        return table

    def acts_at(self, stage: str | None) -> bool:
        """Whether a score at this stage may call for an alert (None: not recorded)."""
        return stage is None or Stage(stage) in self.stages


@dataclass(frozen=True)
class Rules:
    """The bank's rules applied on top of the models."""

    eligibility: EligibilityRules = field(default_factory=EligibilityRules)
    service_plans: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alerts: AlertThresholds | None = field(default_factory=AlertThresholds)  # None: alerts off
    new_customer_months: int = 3


@dataclass(frozen=True)
class Options:
    """What the caller asked for besides the scores themselves."""

    reasons: int = 5
    exact: bool = False
    top_k: int = 3
    next_tier_gap: bool = True


@dataclass(frozen=True)
class Block:
    """Customers to assess with one model: ids, the model's feature matrix, their stages."""

    ids: Sequence[str]
    matrix: FloatArray
    stages: StageCodes
    # What the product rules read besides the features (None: unknown for every customer).
    risk_profiles: Sequence[str | None] | None = None
    tiers: Sequence[str | None] | None = None

    def __len__(self) -> int:
        return len(self.matrix)


@dataclass(frozen=True, slots=True)
class Headline:
    """Per customer: stage, rounded probability, band, alert, as Python values."""

    stages: list[str]
    probability: list[float]
    band: list[str | None]
    alert: list[bool]


@dataclass(frozen=True)
class TaskAssessment:
    """One model's assessment of a block of customers, as columns.

    ``probability`` and ``band`` are the headline every stored row carries: churn risk and
    band, conversion and priority, the predicted tier's probability and name, the first
    offer's propensity and product. ``result(i)`` is customer ``i`` as the API answers it.
    """

    task: Task
    model: AnyModel
    block: Block
    options: Options
    rules: Rules
    probabilities: FloatArray
    probability: FloatArray
    band: npt.NDArray[np.object_]
    alert: BoolArray
    explanation: Explanation | None = None
    class_index: npt.NDArray[np.intp] | None = None
    offers: list[list[int]] | None = None
    cold_start: list[bool] | None = None
    gaps: list[dict[str, Any] | None] | None = None
    value: FloatArray | None = None
    _explained: dict[tuple[int, int], dict[str, Any] | None] = field(
        default_factory=dict, repr=False, compare=False
    )
    _outputs: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    _headline: Headline | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.block)

    @property
    def model_version(self) -> str:
        """The version of the model that scored."""
        return self.model.manifest.version

    def headline(self) -> Headline:
        """The columns every result and stored row repeat, as Python values (built once)."""
        if self._headline is None:
            headline = Headline(
                stages=_STAGE_NAMES[self.block.stages].tolist(),
                probability=np.round(self.probability, 6).tolist(),
                band=self.band.tolist(),
                alert=self.alert.tolist(),
            )
            object.__setattr__(self, "_headline", headline)
        assert self._headline is not None
        return self._headline

    def results(self) -> list[dict[str, Any]]:
        """Every customer's result in the API's shape, in block order."""
        headline = self.headline()
        results = [
            {"customer_id": customer_id, "stage": stage, **outputs}
            for customer_id, stage, outputs in zip(
                self.block.ids, headline.stages, self.outputs(), strict=True
            )
        ]
        if self.task is Task.CHURN:
            for body, alert in zip(results, headline.alert, strict=True):
                body["alert"] = alert
        if self.task is Task.RECOMMENDATION:
            for i, body in enumerate(results):
                body["products"] = self.offered(i, explained=True)
        elif self.explanation is None or self.options.reasons == 0:
            for body in results:  # a batch without reasons: nothing to look up per customer
                body["explanation"] = None
        else:
            for i, body in enumerate(results):
                body["explanation"] = self.explained(i, self.headline_class(i))
        return results

    def outputs(self) -> list[dict[str, Any]]:
        """What the model and rules say of each customer, without the reasons (built once,
        by column where the task allows: a 1,000-customer call builds 1,000 of them)."""
        if self._outputs is None:
            object.__setattr__(self, "_outputs", self._task_outputs())
        assert self._outputs is not None
        return self._outputs

    def _task_outputs(self) -> list[dict[str, Any]]:
        headline = self.headline()
        probability, band = headline.probability, headline.band
        if self.task is Task.CHURN:
            return [
                {"probability": p, "risk_band": b} for p, b in zip(probability, band, strict=True)
            ]
        if self.task is Task.PROSPECT:
            if self.value is None:
                nothing = [None] * len(self)
                worth, expected = nothing, nothing
            else:
                positive = np.maximum(self.value, 0.0)
                worth = np.round(positive, 2).tolist()
                expected = np.round(self.probability * positive, 2).tolist()
            return [
                {
                    "conversion_probability": p,
                    "value_if_converted": w,
                    "expected_value": e,
                    "priority": b,
                }
                for p, w, e, b in zip(probability, worth, expected, band, strict=True)
            ]
        if self.task is Task.TIER:
            classes = self.model.classes
            per_class = np.round(self.probabilities, 6).tolist()
            return [
                {
                    "tier": tier,
                    "probabilities": dict(zip(classes, values, strict=True)),
                    "service_plan": self.rules.service_plans.get(str(tier)),
                    "next_tier_gap": None if self.gaps is None else self.gaps[i],
                }
                for i, (tier, values) in enumerate(zip(band, per_class, strict=True))
            ]
        assert self.cold_start is not None
        return [
            {"cold_start": cold, "products": self.offered(i, explained=False)}
            for i, cold in enumerate(self.cold_start)
        ]

    def offered(self, i: int, *, explained: bool) -> list[dict[str, Any]]:
        """Customer ``i``'s offers, best first, with their propensity (and reasons)."""
        assert self.offers is not None
        offers = []
        for j in self.offers[i]:
            offer: dict[str, Any] = {
                "product": self.model.classes[j],
                "propensity": round(float(self.probabilities[i, j]), 6),
            }
            if explained:
                offer["explanation"] = self.explained(i, j)
            offers.append(offer)
        return offers

    def headline_class(self, i: int) -> int:
        """The output class the headline's reasons explain."""
        if self.class_index is not None:
            return int(self.class_index[i])
        return 0

    def explained(self, i: int, class_index: int) -> dict[str, Any] | None:
        """The wire form of customer ``i``'s reasons for one class (None: none asked for)."""
        key = (i, class_index)
        if key not in self._explained:
            self._explained[key] = self._explain(i, class_index)
        return self._explained[key]

    def _explain(self, i: int, class_index: int) -> dict[str, Any] | None:
        if self.explanation is None or self.options.reasons == 0:
            return None
        model: ScoringModel = self.model  # type: ignore[assignment]  # explained: LightGBM's
        row = model.explain_row(
            self.block.matrix,
            self.explanation,
            i,
            class_index,
            top=self.options.reasons,
            exact=self.options.exact,
        )
        return {
            "method": row.method,
            "raw_score": row.raw_score,
            "bias": row.bias,
            "reasons": [r.wire() for r in row.reasons],
            "other_contribution": row.other_contribution,
        }

    def stored_reasons(self) -> list[list[dict[str, Any]]]:
        """Each customer's reasons as stored: one explanation, or one per offered product."""
        if self.explanation is None or self.options.reasons == 0:
            return [[] for _ in range(len(self))]
        if self.task is Task.RECOMMENDATION:
            assert self.offers is not None
            classes = self.model.classes
            return [
                [{"product": classes[j], "explanation": self.explained(i, j)} for j in offer]
                for i, offer in enumerate(self.offers)
            ]
        return [[self.explained(i, self.headline_class(i))] for i in range(len(self))]  # type: ignore[list-item]

    def reason_texts(self, i: int) -> list[str]:
        """Customer ``i``'s headline reasons worded on one line each (for files)."""
        if self.task is Task.RECOMMENDATION:
            assert self.offers is not None
            if not self.offers[i]:
                return []
            explained = self.explained(i, self.offers[i][0])
        else:
            explained = self.explained(i, self.headline_class(i))
        if explained is None:
            return []
        return [
            f"{r['text']} ({r['direction']} {abs(r['contribution']):.3f})"
            for r in explained["reasons"]
        ]


def assess_task(
    task: Task,
    model: AnyModel,
    block: Block,
    *,
    rules: Rules,
    options: Options,
    threads: int | None = None,
) -> TaskAssessment:
    """Assess a block of customers with one task's model, under the bank's rules."""
    if model.manifest.task is not task:
        raise ValueError(f"a {model.manifest.task.value} model cannot assess {task.value}")
    probabilities, explanation = _outputs(model, block.matrix, options, threads)
    if task is Task.TIER:
        return _tier(model, block, rules, options, probabilities, explanation)
    if task is Task.RECOMMENDATION:
        return _recommend(model, block, rules, options, probabilities, explanation)
    if model.manifest.objective is not Objective.BINARY:
        raise ValueError(f"the {task.value} model must be binary")
    thresholds = model.manifest.thresholds
    band_codes = _band_codes(probabilities, thresholds)
    value = None
    if task is Task.PROSPECT and getattr(model, "value_booster", None) is not None:
        value = model.expected_value_if_converted(block.matrix, threads=threads)  # type: ignore[union-attr]
        band_codes = _band_codes(probabilities * np.maximum(value, 0.0), thresholds)
    alert = (
        rules.alerts.crossed(probabilities, band_codes, block.stages)
        if task is Task.CHURN and rules.alerts is not None
        else np.zeros(len(block), dtype=bool)
    )
    return TaskAssessment(
        task=task,
        model=model,
        block=block,
        options=options,
        rules=rules,
        probabilities=probabilities,
        probability=probabilities,
        band=_BAND_ARRAY[band_codes],
        alert=alert,
        explanation=explanation,
        value=value,
    )


def _outputs(
    model: AnyModel, matrix: FloatArray, options: Options, threads: int | None
) -> tuple[FloatArray, Explanation | None]:
    """The model's outputs, with the contributions when reasons are asked for."""
    if options.reasons == 0 and not options.exact:
        return model.predict(matrix, threads=threads), None
    if not hasattr(model, "explain"):
        raise ValueError("reasons are worded from LightGBM: load the model with it")
    explainable = cast("ScoringModel", model)
    explanation = explainable.explain(matrix, exact=options.exact)
    return explainable.probabilities_from_raw(explanation.raw_score), explanation


def _band_codes(values: FloatArray, thresholds: Mapping[str, float]) -> npt.NDArray[np.int8]:
    """0 (low), 1 (medium) or 2 (high) against the manifest's thresholds."""
    codes = np.zeros(len(values), dtype=np.int8)
    for code, label in ((1, "medium"), (2, "high")):  # the higher band wins: applied last
        if label in thresholds:
            codes[values >= thresholds[label]] = code
    return codes


def _tier(
    model: AnyModel,
    block: Block,
    rules: Rules,
    options: Options,
    probabilities: FloatArray,
    explanation: Explanation | None,
) -> TaskAssessment:
    tiers = probabilities.argmax(axis=1)
    gaps = None
    if options.next_tier_gap and len(block):
        gaps = find_next_tier_gap(model, block.matrix, tiers)  # type: ignore[arg-type]
    return TaskAssessment(
        task=Task.TIER,
        model=model,
        block=block,
        options=options,
        rules=rules,
        probabilities=probabilities,
        probability=probabilities[np.arange(len(block)), tiers],
        band=np.array(model.classes, dtype=object)[tiers],
        alert=np.zeros(len(block), dtype=bool),
        explanation=explanation,
        class_index=tiers,
        gaps=gaps,
    )


@dataclass(frozen=True)
class ProductInputs:
    """What the product rules read of a block's customers: holdings from the recommendation
    model's features, age and occupation, stage, tier and risk profile."""

    held: FloatArray
    cold_start: BoolArray
    age: FloatArray | None
    occupation: Sequence[str | None] | None
    stages: list[str]
    tiers: Sequence[str | None] | None
    risk_profiles: Sequence[str | None] | None

    def arguments(self, *, holdings: bool = True) -> dict[str, Any]:
        """Keyword arguments of ``EligibilityRules.allowed`` (holdings unknown when not
        ``holdings``: nothing is then refused for being held)."""
        return {
            "held": self.held if holdings else np.full_like(self.held, np.nan),
            "cold_start": self.cold_start,
            "age": self.age,
            "occupation": self.occupation,
            "stages": self.stages,
            "tiers": self.tiers,
            "risk_profiles": self.risk_profiles,
        }


def _product_inputs(model: AnyModel, block: Block) -> ProductInputs:
    products = model.classes
    schema = model.schema
    held = np.full((len(block), len(products)), np.nan)
    for j, product in enumerate(products):
        flags = schema.values_of(block.matrix, f"has_{product}")
        if flags is not None:
            held[:, j] = flags
    return ProductInputs(
        held=held,
        cold_start=np.isnan(held).all(axis=1),
        age=schema.values_of(block.matrix, "age"),
        occupation=schema.labels_of(block.matrix, "occupation"),
        stages=_STAGE_NAMES[block.stages].tolist(),
        tiers=block.tiers,
        risk_profiles=block.risk_profiles,
    )


@dataclass(frozen=True)
class ProductScreen:
    """The product rules split into their three checks, built once from the bank's rules."""

    rules: EligibilityRules
    _by_stage: dict[RuleStage, EligibilityRules] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_by_stage", {stage: self.rules.only(stage) for stage in RuleStage}
        )

    def screen(self, assessment: TaskAssessment, i: int = 0) -> dict[str, tuple[RuleStage, str]]:
        """Per product the recommendation model scores that customer ``i`` may not be offered,
        the first check that refuses it and why (products absent: all three checks pass)."""
        if assessment.task is not Task.RECOMMENDATION:
            raise ValueError("products are screened on a recommendation assessment")
        products = assessment.model.classes
        inputs = _product_inputs(assessment.model, assessment.block)
        by_stage = self._by_stage
        refused: dict[str, tuple[RuleStage, str]] = {}
        for stage in RuleStage:
            holdings = stage is RuleStage.APPLICABILITY
            allowed = by_stage[stage].allowed(products, **inputs.arguments(holdings=holdings))[i]
            for j, product in enumerate(products):
                if not allowed[j] and product not in refused:
                    refused[product] = (stage, self._why(stage, product, products, inputs, i))
        return refused

    def _why(
        self, stage: RuleStage, product: str, products: Sequence[str], inputs: ProductInputs, i: int
    ) -> str:
        """The rule field that refuses the product (its value as configured)."""
        j = products.index(product)
        if stage is RuleStage.APPLICABILITY and inputs.held[i, j] == 1.0:
            return "already held"
        rule = self.rules.products.get(product)
        holdings = stage is RuleStage.APPLICABILITY
        for name in RULE_FIELDS[stage]:
            if rule is None or name not in rule.model_fields_set:
                continue
            one = self.rules.only(stage, name).model_copy(update={"exclusive_groups": []})
            if not one.allowed(products, **inputs.arguments(holdings=holdings))[i, j]:
                value = getattr(rule, name)
                shown = value.value if isinstance(value, StrEnum) else value
                return f"product rule {name}={shown} not met"
        return "excluded with a product held (exclusive group)"


def _recommend(
    model: AnyModel,
    block: Block,
    rules: Rules,
    options: Options,
    probabilities: FloatArray,
    explanation: Explanation | None,
) -> TaskAssessment:
    products = model.classes
    n = len(block)
    inputs = _product_inputs(model, block)
    cold_start = inputs.cold_start
    allowed = rules.eligibility.allowed(products, **inputs.arguments())
    ranked = np.argsort(-np.where(allowed, probabilities, -np.inf), axis=1, kind="stable")
    offers = []
    for row in range(n):
        candidates = [int(j) for j in ranked[row] if allowed[row, j]]
        offers.append(rules.eligibility.without_conflicts(products, candidates)[: options.top_k])
    first = [o[0] if o else None for o in offers]
    return TaskAssessment(
        task=Task.RECOMMENDATION,
        model=model,
        block=block,
        options=options,
        rules=rules,
        probabilities=probabilities,
        probability=np.array(
            [np.nan if j is None else probabilities[i, j] for i, j in enumerate(first)],
            dtype=np.float64,
        ),
        band=np.array([None if j is None else products[j] for j in first], dtype=object),
        alert=np.zeros(n, dtype=bool),
        explanation=explanation,
        offers=offers,
        cold_start=cold_start.tolist(),
    )
