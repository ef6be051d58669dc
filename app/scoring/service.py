"""Scoring use cases: validated request -> matrix -> predict + explain -> persist -> respond.

Each function reads top to bottom in that order. Everything between parsing and persisting is
numpy on the model's own schema; nothing here knows about HTTP.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import numpy as np
from pydantic import BaseModel, ValidationError

from app.db.errors import PersistenceUnavailable
from app.errors import BatchTooLarge, DatabaseUnavailable, InvalidInput, ModelUnavailable
from app.scoring.explain import Explanation
from app.scoring.manifest import Task
from app.scoring.model import FloatArray, ScoringModel
from app.scoring.next_tier import find_next_tier_gap
from app.scoring.policies import EligibilityRules
from app.scoring.policy import AlertThresholds, alert_threshold_crossed, lifecycle_stage
from app.scoring.registry import ModelRegistry
from app.scoring.repository import AlertCandidateRow, ScoreRow
from app.scoring.request_schemas import (
    ScoreRequestBase,
    assessment_request_model,
    customer_model,
    score_request_model,
)
from app.scoring.schemas import ServicePlan
from app.scoring.writer import Announcement, ScoreWriter
from app.security.pseudonyms import Pseudonymizer

# Above this many customers the numeric work runs in a worker thread (LightGBM releases the
# GIL), so a 1,000-customer call does not hold up the single-customer calls around it.
INLINE_MAX_ROWS = 32


@dataclass(frozen=True)
class ScoreOptions:
    """What the caller asked for besides the scores themselves."""

    reasons: int = 5
    exact: bool = False
    top_k: int = 3
    next_tier_gap: bool = True

    @classmethod
    def of(cls, request: BaseModel) -> ScoreOptions:
        """Options from a validated request (fields a task does not have keep defaults)."""
        given = request.__dict__
        return cls(
            reasons=given.get("reasons", 5),
            exact=given.get("explain") == "exact",
            top_k=given.get("top_k", 3),
            next_tier_gap=given.get("next_tier_gap", True),
        )


@dataclass(frozen=True)
class CustomerBatch:
    """Validated customers of one call: ids, the model's matrix, and the inputs as sent."""

    ids: list[str]
    matrix: FloatArray
    inputs: list[dict[str, Any]]


def field_path(location: Sequence[int | str]) -> str:
    """A pydantic error location as a readable field path: ``customers[0].age``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def invalid_input(error: ValidationError) -> InvalidInput:
    """A 422 naming every offending field."""
    errors = [
        {"field": field_path(e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(e["field"] for e in errors[:5])
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return InvalidInput(f"invalid field(s): {fields}{more}", extra={"errors": errors})


# Up to this many values, plain Python beats numpy's per-call overhead.
_SCALAR_MAX = 8


def bands(values: FloatArray, thresholds: dict[str, float]) -> list[str]:
    """low / medium / high against the manifest's thresholds, for a whole batch at once."""
    order = [(label, thresholds[label]) for label in ("high", "medium") if label in thresholds]
    if len(values) <= _SCALAR_MAX:
        return [next((label for label, cut in order if v >= cut), "low") for v in values.tolist()]
    labels = np.full(len(values), "low", dtype=object)
    for label, cut in reversed(order):  # the higher band wins: applied last
        labels[values >= cut] = label
    return list(labels)


def rounded(values: FloatArray, digits: int) -> list[float]:
    """Python floats rounded for the wire (one numpy call instead of a round() per value)."""
    if len(values) <= _SCALAR_MAX:
        return [round(v, digits) for v in values.tolist()]
    return list(np.round(values, digits).tolist())


class ScoringService:
    """Everything a scoring call needs, built once at start-up."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        writer: ScoreWriter,
        service_plans: dict[str, ServicePlan],
        eligibility: EligibilityRules,
        max_batch_size: int,
        alert_thresholds: AlertThresholds | None = None,
        alert_wakeup: threading.Event | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.registry = registry
        # None: churn alerts are off, and no score is a candidate for one.
        self.alert_thresholds = alert_thresholds
        # Set once candidates are committed, so the alert processor need not wait for its poll.
        self.alert_wakeup = alert_wakeup
        self.pseudonymizer = pseudonymizer
        self.writer = writer
        self.service_plans = {k: v.model_dump() for k, v in service_plans.items()}
        self.eligibility = eligibility
        self.max_batch_size = max_batch_size
        self.request_models: dict[Task, type[ScoreRequestBase]] = {
            task: score_request_model(task, model.schema) for task, model in registry.loaded.items()
        }
        self._compute: dict[Task, Callable[[ScoreOptions, CustomerBatch], list[dict[str, Any]]]] = {
            Task.CHURN: self._churn,
            Task.TIER: self._tier,
            Task.PROSPECT: self._prospect,
            Task.RECOMMENDATION: self._recommend,
        }
        self.customer_models = {
            task: customer_model(task, model.schema) for task, model in registry.loaded.items()
        }
        self.assessment_model = assessment_request_model(
            {task: model.schema for task, model in registry.loaded.items()}
        )

    def model(self, task: Task) -> ScoringModel:
        """The active model of a task, or 503."""
        model = self.registry.get(task)
        if model is None:
            raise ModelUnavailable(f"no {task.value} model is loaded")
        return model

    def parse(self, task: Task, body: bytes) -> tuple[ScoreOptions, CustomerBatch]:
        """Validate a raw JSON body against the task's schema and build the feature matrix."""
        model = self.model(task)
        try:
            request = self.request_models[task].model_validate_json(body)
        except ValidationError as error:
            raise invalid_input(error) from error
        customers: list[BaseModel] | None = request.__dict__["customers"]
        columns: BaseModel | None = request.__dict__["columns"]
        column_ids = columns.__dict__["customer_id"] if columns is not None else []
        count = len(customers) if customers is not None else len(column_ids)
        if count > self.max_batch_size:
            raise BatchTooLarge(
                f"{count} customers in one call; the limit is {self.max_batch_size}",
                extra={"limit": self.max_batch_size},
            )
        if customers is not None:
            rows = [dict(c.__dict__) for c in customers]
            ids = [row.pop("customer_id") for row in rows]
            matrix = model.schema.encode_rows(rows)
        else:
            assert columns is not None
            data = dict(columns.__dict__)
            ids = data.pop("customer_id")
            matrix = model.schema.encode_columns(data)
            names = [n for n, v in data.items() if v is not None]
            rows = [
                dict(zip(names, values, strict=True))
                for values in zip(*map(data.get, names), strict=True)
            ]
        return ScoreOptions.of(request), CustomerBatch(ids=ids, matrix=matrix, inputs=rows)

    async def persist(
        self,
        rows: list[ScoreRow],
        *,
        candidates: Sequence[AlertCandidateRow] = (),
        announcement: Announcement | None = None,
    ) -> None:
        """Wait until the rows (and their alert candidates) are committed; 503 if not."""
        try:
            await self.writer.write(rows, candidates=candidates, announcement=announcement)
        except PersistenceUnavailable as error:
            raise DatabaseUnavailable(
                "the database is unavailable; nothing was saved, retry later"
            ) from error
        if candidates and self.alert_wakeup is not None:
            self.alert_wakeup.set()

    async def score(
        self, task: Task, body: bytes, request_id: str, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """One scoring call: parse, compute, persist, respond (all or nothing)."""
        # Announced from the start, so that the writer keeps its group open for this call's
        # rows while other calls' rows are committed (see app/db/group_commit.py).
        with self.writer.announce() as announcement:
            options, batch = self.parse(task, body)
            compute = self._compute[task]
            if len(batch.ids) > INLINE_MAX_ROWS:
                results = await anyio.to_thread.run_sync(compute, options, batch)
            else:
                results = compute(options, batch)
            model = self.model(task)
            stored = self.stored_batch(batch)
            candidates = self._alert_candidates(task, model, request_id, stored, results, tenant)
            rows = self._rows(task, model, request_id, stored, results, tenant)
            await self.persist(rows, candidates=candidates, announcement=announcement)
        return {
            "request_id": request_id,
            "model": {"task": task.value, "version": model.manifest.version},
            "saved": True,
            "results": results,
        }

    async def assess(
        self, body: bytes, request_id: str, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """Everything that applies to one customer, by lifecycle group, saved together."""
        try:
            request = self.assessment_model.model_validate_json(body)
        except ValidationError as error:
            raise invalid_input(error) from error
        given = {k: v for k, v in request.__dict__.items() if v is not None}
        lifecycle: str = given.pop("lifecycle", None) or (
            "prospect"
            if given.get("tenure_months") is None
            else "new"
            if given["tenure_months"] < NEW_CUSTOMER_MONTHS
            else "existing"
        )
        options = ScoreOptions.of(request)
        given.pop("reasons")
        given.pop("explain")
        customer_id = given["customer_id"]
        response: dict[str, Any] = {
            "request_id": request_id,
            "customer_id": customer_id,
            "lifecycle": lifecycle,
            "saved": True,
            "models": [],
            **dict.fromkeys(_ASSESSMENT_KEYS.values()),
        }
        rows: list[ScoreRow] = []
        candidates: list[AlertCandidateRow] = []
        for task in LIFECYCLE_TASKS[lifecycle]:
            model = self.model(task)
            names = {"customer_id", *model.schema.names}
            record = {k: v for k, v in given.items() if k in names}
            try:
                customer = self.customer_models[task].model_validate(record)
            except ValidationError as error:
                raise invalid_input(error) from error
            inputs = dict(customer.__dict__)
            inputs.pop("customer_id")
            batch = CustomerBatch(
                ids=[customer_id], matrix=model.schema.encode_rows([inputs]), inputs=[inputs]
            )
            results = self._compute[task](options, batch)
            response[_ASSESSMENT_KEYS[task]] = results[0]
            response["models"].append({"task": task.value, "version": model.manifest.version})
            stored = self.stored_batch(batch)
            rows.extend(self._rows(task, model, request_id, stored, results, tenant))
            candidates.extend(
                self._alert_candidates(
                    task, model, request_id, stored, results, tenant, stages=[lifecycle]
                )
            )
        await self.persist(rows, candidates=candidates)
        return response

    def stored_batch(self, batch: CustomerBatch) -> CustomerBatch:
        """The batch as it is saved: customer ids pseudonymised when a secret is configured."""
        if self.pseudonymizer is None:
            return batch
        return replace(batch, ids=self.pseudonymizer.pseudonyms(batch.ids))

    def _alert_candidates(
        self,
        task: Task,
        model: ScoringModel,
        request_id: str,
        batch: CustomerBatch,
        results: list[dict[str, Any]],
        tenant: str | None = None,
        stages: Sequence[str | None] | None = None,
    ) -> list[AlertCandidateRow]:
        """The churn results that call for an alert, stored with the scores for the alert
        processor (plain rows: the writer knows nothing of alerts). Stages: from tenure
        unless given."""
        thresholds = self.alert_thresholds
        if task is not Task.CHURN or thresholds is None:
            return []
        if stages is None:
            stages = [lifecycle_stage(inputs.get("tenure_months")) for inputs in batch.inputs]
        now = datetime.now(UTC)
        return [
            AlertCandidateRow(
                request_id=request_id,
                customer_id=customer_id,
                tenant=tenant,
                stage=stage,
                probability=result["probability"],
                band=result["risk_band"],
                reasons=list(e["reasons"]) if (e := result.get("explanation")) else [],
                model_version=model.manifest.version,
                source="api",
                created_at=now,
            )
            for customer_id, result, stage in zip(batch.ids, results, stages, strict=True)
            if alert_threshold_crossed(
                result["probability"], result["risk_band"], stage, thresholds
            )
        ]

    @staticmethod
    def _rows(
        task: Task,
        model: ScoringModel,
        request_id: str,
        batch: CustomerBatch,
        results: list[dict[str, Any]],
        tenant: str | None = None,
    ) -> list[ScoreRow]:
        now = datetime.now(UTC)
        name = task.value
        version = model.manifest.version
        rows: list[ScoreRow] = []
        for customer_id, inputs, result in zip(batch.ids, batch.inputs, results, strict=True):
            outputs = {k: v for k, v in result.items() if k not in ("customer_id", "explanation")}
            reasons = result.get("explanation")
            if task is Task.RECOMMENDATION:
                reasons = [
                    {"product": p["product"], "explanation": p["explanation"]}
                    for p in result["products"]
                ]
                outputs["products"] = [
                    {"product": p["product"], "propensity": p["propensity"]}
                    for p in result["products"]
                ]
            rows.append(
                ScoreRow(
                    request_id=request_id,
                    task=name,
                    customer_id=customer_id,
                    model_name=name,
                    model_version=version,
                    outputs=outputs,
                    reasons=[]
                    if reasons is None
                    else [reasons]
                    if isinstance(reasons, dict)
                    else reasons,
                    features=inputs,
                    created_at=now,
                    tenant=tenant,
                )
            )
        return rows

    # --- per task -------------------------------------------------------------------------

    @staticmethod
    def _explanations(
        model: ScoringModel,
        options: ScoreOptions,
        matrix: FloatArray,
        class_index: Sequence[int] | None = None,
    ) -> tuple[Explanation, list[dict[str, Any] | None]]:
        if options.reasons == 0 and not options.exact:
            # No reasons asked for: a plain prediction is half the work of an explanation.
            raw = model.raw_scores(matrix)
            return Explanation(raw_score=raw, contributions=np.empty((len(matrix), 0, 0))), [
                None
            ] * len(matrix)
        explanation = model.explain(matrix, exact=options.exact)
        outputs: list[dict[str, Any] | None] = []
        for row in range(len(matrix)):
            if options.reasons == 0:
                outputs.append(None)
                continue
            index = 0 if class_index is None else class_index[row]
            outputs.append(explanation_dict(model, matrix, explanation, row, index, options))
        return explanation, outputs

    def _churn(self, options: ScoreOptions, batch: CustomerBatch) -> list[dict[str, Any]]:
        model = self.model(Task.CHURN)
        explanation, explained = self._explanations(model, options, batch.matrix)
        probability = model.probabilities_from_raw(explanation.raw_score)
        return [
            {
                "customer_id": customer_id,
                "probability": p,
                "risk_band": risk_band,
                "explanation": reasons,
            }
            for customer_id, p, risk_band, reasons in zip(
                batch.ids,
                rounded(probability, 6),
                bands(probability, model.manifest.thresholds),
                explained,
                strict=True,
            )
        ]

    def _prospect(self, options: ScoreOptions, batch: CustomerBatch) -> list[dict[str, Any]]:
        model = self.model(Task.PROSPECT)
        explanation, explained = self._explanations(model, options, batch.matrix)
        probability = model.probabilities_from_raw(explanation.raw_score)
        value = (
            model.expected_value_if_converted(batch.matrix)
            if model.value_booster is not None
            else None
        )
        worth = None if value is None else np.maximum(value, 0.0)
        expected = None if worth is None else probability * worth
        n = len(batch.ids)
        priorities = bands(probability if expected is None else expected, model.manifest.thresholds)
        return [
            {
                "customer_id": customer_id,
                "conversion_probability": p,
                "value_if_converted": worth_i,
                "expected_value": expected_i,
                "priority": priority,
                "explanation": reasons,
            }
            for customer_id, p, worth_i, expected_i, priority, reasons in zip(
                batch.ids,
                rounded(probability, 6),
                [None] * n if worth is None else rounded(worth, 2),
                [None] * n if expected is None else rounded(expected, 2),
                priorities,
                explained,
                strict=True,
            )
        ]

    def _tier(self, options: ScoreOptions, batch: CustomerBatch) -> list[dict[str, Any]]:
        model = self.model(Task.TIER)
        raw = model.explain(batch.matrix, exact=options.exact)
        probabilities = model.probabilities_from_raw(raw.raw_score)
        tiers = probabilities.argmax(axis=1)
        explained = [
            None
            if options.reasons == 0
            else explanation_dict(model, batch.matrix, raw, row, int(tiers[row]), options)
            for row in range(len(batch.ids))
        ]
        gaps = (
            find_next_tier_gap(model, batch.matrix, tiers)
            if options.next_tier_gap
            else [None] * len(batch.ids)
        )
        classes = model.classes
        return [
            {
                "customer_id": customer_id,
                "tier": classes[int(tiers[i])],
                "probabilities": {
                    c: round(float(probabilities[i, j]), 6) for j, c in enumerate(classes)
                },
                "service_plan": self.service_plans.get(classes[int(tiers[i])]),
                "next_tier_gap": gaps[i],
                "explanation": explained[i],
            }
            for i, customer_id in enumerate(batch.ids)
        ]

    def _recommend(self, options: ScoreOptions, batch: CustomerBatch) -> list[dict[str, Any]]:
        model = self.model(Task.RECOMMENDATION)
        products = model.classes
        names = model.schema.names
        flag_columns = [names.index(f"has_{p}") if f"has_{p}" in names else None for p in products]
        explanation = model.explain(batch.matrix, exact=options.exact)
        probabilities = model.probabilities_from_raw(explanation.raw_score)
        results = []
        for row, customer_id in enumerate(batch.ids):
            flags = [math.nan if j is None else batch.matrix[row, j] for j in flag_columns]
            cold_start = all(math.isnan(f) for f in flags)
            held = None if cold_start else np.array([f == 1.0 for f in flags], dtype=bool)
            allowed = self.eligibility.eligible(products, held, batch.inputs[row])
            ranked = [
                products[j] for j in np.argsort(-probabilities[row], kind="stable") if allowed[j]
            ]
            chosen = self.eligibility.drop_conflicts(ranked)[: options.top_k]
            results.append(
                {
                    "customer_id": customer_id,
                    "cold_start": cold_start,
                    "products": [
                        {
                            "product": product,
                            "propensity": round(
                                float(probabilities[row, products.index(product)]), 6
                            ),
                            "explanation": None
                            if options.reasons == 0
                            else explanation_dict(
                                model,
                                batch.matrix,
                                explanation,
                                row,
                                products.index(product),
                                options,
                            ),
                        }
                        for product in chosen
                    ],
                }
            )
        return results


def explanation_dict(
    model: ScoringModel,
    matrix: FloatArray,
    explanation: Explanation,
    row: int,
    class_index: int,
    options: ScoreOptions,
) -> dict[str, Any]:
    """The wire form of one row's explanation."""
    explained = model.explain_row(
        matrix, explanation, row, class_index, top=options.reasons, exact=options.exact
    )
    return {
        "method": explained.method,
        "raw_score": explained.raw_score,
        "bias": explained.bias,
        "reasons": [r.wire() for r in explained.reasons],
        "other_contribution": explained.other_contribution,
    }


_ASSESSMENT_KEYS = {
    Task.TIER: "tier",
    Task.RECOMMENDATION: "recommendations",
    Task.CHURN: "churn",
    Task.PROSPECT: "prospect",
}
LIFECYCLE_TASKS: dict[str, tuple[Task, ...]] = {
    "prospect": (Task.PROSPECT,),
    "new": (Task.RECOMMENDATION,),
    "existing": (Task.TIER, Task.RECOMMENDATION, Task.CHURN),
}
NEW_CUSTOMER_MONTHS = 3
