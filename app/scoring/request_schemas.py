"""Request models built at start-up from each loaded model's feature schema.

A model retrained on a bank's own columns therefore gets a matching, documented endpoint
without code changes: every field carries its type, unit, range and description.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from app.scoring.feature_schema import FeatureKind, FeatureSchema, FeatureSpec
from app.scoring.manifest import Task
from app.scoring.policies import RiskProfile

CustomerId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The bank's customer (or prospect) identifier.",
        examples=["C0000042"],
    ),
]
ReasonCount = Annotated[
    int, Field(ge=0, le=20, description="How many top reasons to return per score.")
]
ExplainMethod = Annotated[
    Literal["fast", "exact"],
    Field(
        description="'fast': path attribution precomputed per leaf (about one extra "
        "prediction). 'exact': TreeSHAP, for audits; about 100x slower."
    ),
]


def integral(value: Any) -> Any:
    """A whole float (``30.0``, as Parquet and pandas write integer columns) as an int.

    Models are strict (no strings for numbers), so this is the one conversion allowed;
    ``30.5`` is refused here, naming the field.
    """
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError(
                "int_from_float",
                "Input should be a whole number, got {value}",
                {"value": value},
            )
        return int(value)
    return value


def feature_annotation(feature: FeatureSpec) -> Any:
    """The pydantic type of one feature, with its constraints and documentation."""
    extra: dict[str, Any] = {}
    if feature.unit:
        extra["unit"] = feature.unit
    if feature.actionable:
        extra["actionable"] = True
    info = Field(description=feature.description, json_schema_extra=extra or None)
    base: Any
    if feature.kind is FeatureKind.CATEGORY:
        assert feature.categories is not None
        base = Literal[feature.categories]
    elif feature.kind is FeatureKind.BOOLEAN:
        base = bool
    else:
        number_type = int if feature.kind is FeatureKind.INTEGER else float
        bounds: dict[str, Any] = {}
        if feature.minimum is not None:
            bounds["ge"] = feature.minimum
        if feature.maximum is not None:
            bounds["le"] = feature.maximum
        if number_type is float:
            bounds["allow_inf_nan"] = False
        base = Annotated[number_type, Field(**bounds)]
        if number_type is int:
            # Outside the bounds, so that the schema still shows minimum and maximum.
            base = Annotated[base, BeforeValidator(integral)]
    return Annotated[base, info]


def _title(task: Task) -> str:
    return "".join(part.title() for part in task.value.split("_"))


def score_request_name(task: Task) -> str:
    """The component name of a task's request schema in the OpenAPI document."""
    return f"{_title(task)}ScoreRequest"


STRICT = ConfigDict(extra="forbid", strict=True)


LifecycleStage = Literal["prospect", "new", "existing", "lost"]
LIFECYCLE_DESCRIPTION = (
    "Lifecycle stage when the bank knows it (a lost customer opens no alert); inferred from "
    "tenure_months when left out (none: prospect, under 3 months: new, else existing)."
)


RISK_PROFILE_DESCRIPTION = (
    "The customer's investment risk profile (C1 most cautious to C5): a product of risk level "
    "R1-R5 is offered only to a profile at least as high; none: no risk-rated product."
)
TIER_DESCRIPTION = (
    "The customer's tier of record (GET /v1/customers/{id}/tier), for products offered to "
    "some tiers only; none: no such product."
)
TierName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]


def _rule_inputs(many: bool) -> dict[str, Any]:
    """What the product rules read besides the features: risk profile and tier."""
    profile: Any = RiskProfile | None
    tier: Any = TierName | None
    if many:
        profile, tier = list[profile] | None, list[tier] | None
    return {
        "risk_profile": (profile, Field(default=None, description=RISK_PROFILE_DESCRIPTION)),
        "tier": (tier, Field(default=None, description=TIER_DESCRIPTION)),
    }


@cache  # one model class per schema: built once however many apps a process makes
def customer_model(task: Task, schema: FeatureSchema) -> type[BaseModel]:
    """One customer: id plus every feature; optional features may be left out or null."""
    fields: dict[str, Any] = {
        "customer_id": (CustomerId, ...),
        "lifecycle": (
            LifecycleStage | None,
            Field(default=None, description=LIFECYCLE_DESCRIPTION),
        ),
        **_rule_inputs(many=False),
    }
    for feature in schema.inputs:
        annotation = feature_annotation(feature)
        if feature.required:
            fields[feature.name] = (annotation, ...)
        else:
            fields[feature.name] = (annotation | None, None)
    return create_model(f"{_title(task)}Customer", __config__=STRICT, **fields)


@cache  # one model class per schema: built once however many apps a process makes
def columns_model(task: Task, schema: FeatureSchema) -> type[BaseModel]:
    """Many customers as columns: one array per feature, all of the same length."""
    fields: dict[str, Any] = {
        "customer_id": (list[CustomerId], ...),
        "lifecycle": (
            list[LifecycleStage | None] | None,
            Field(default=None, description=LIFECYCLE_DESCRIPTION),
        ),
        **_rule_inputs(many=True),
    }
    for feature in schema.inputs:
        item = feature_annotation(feature)
        if feature.required:
            fields[feature.name] = (list[item], ...)  # type: ignore[valid-type]
        else:
            fields[feature.name] = (list[item | None] | None, None)  # type: ignore[valid-type]

    def same_lengths(self: BaseModel) -> BaseModel:
        lengths = {name: len(v) for name, v in self.__dict__.items() if v is not None}
        expected = lengths["customer_id"]
        wrong = sorted(name for name, n in lengths.items() if n != expected)
        if wrong:
            raise ValueError(
                f"every column must have one value per customer_id ({expected}); "
                f"these differ: {wrong}"
            )
        return self

    validators: dict[str, Any] = {"same_lengths": model_validator(mode="after")(same_lengths)}
    return create_model(
        f"{_title(task)}Columns", __config__=STRICT, __validators__=validators, **fields
    )


def example_value(feature: FeatureSpec) -> Any:
    """A valid value of one feature for the documented example body."""
    if feature.kind is FeatureKind.CATEGORY:
        assert feature.categories is not None
        return feature.categories[0]
    if feature.kind is FeatureKind.BOOLEAN:
        return True
    value: float = 25_000.0 if feature.unit == "EUR" else 36.0
    if feature.minimum is not None:
        value = max(value, feature.minimum)
    if feature.maximum is not None:
        value = min(value, feature.maximum)
    return int(value) if feature.kind is FeatureKind.INTEGER else value


def example_customer(schema: FeatureSchema, customer_id: str = "C0000042") -> dict[str, Any]:
    """One customer with every feature of a schema, as the documented example."""
    return {"customer_id": customer_id, **{f.name: example_value(f) for f in schema.inputs}}


def _document_example(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # The one_layout rule, stated in the schema too (clients and fuzzers read it there), and
    # the example body Swagger UI shows.
    schema["oneOf"] = [{"required": ["customers"]}, {"required": ["columns"]}]
    example = getattr(model, "example_body", None)
    if example is not None:
        schema["examples"] = [example]


class ScoreRequestBase(BaseModel):
    """Options common to every scoring call."""

    model_config = ConfigDict(**STRICT, json_schema_extra=_document_example)

    reasons: ReasonCount = 5
    explain: ExplainMethod = "fast"


@cache  # one model class per schema: built once however many apps a process makes
def score_request_model(task: Task, schema: FeatureSchema) -> type[ScoreRequestBase]:
    """The body of ``POST /v1/<task>``: customers as objects, or as columns."""
    customer = customer_model(task, schema)
    columns = columns_model(task, schema)

    def one_layout(self: ScoreRequestBase) -> ScoreRequestBase:
        given = [name for name in ("customers", "columns") if getattr(self, name) is not None]
        if len(given) == 2:
            raise PydanticCustomError(
                "customers_and_columns",
                "the body has both 'customers' and 'columns'; send one of them, not both",
            )
        if not given:
            raise PydanticCustomError(
                "customers_or_columns",
                "the body has neither 'customers' (objects) nor 'columns' (arrays); send one",
            )
        return self

    extra_fields: dict[str, Any] = {}
    if task is Task.RECOMMENDATION:
        extra_fields["top_k"] = (
            Annotated[int, Field(ge=1, le=13, description="Products to return.")],
            3,
        )
    if task is Task.TIER:
        extra_fields["next_tier_gap"] = (
            Annotated[bool, Field(description="Search the smallest change lifting one tier.")],
            True,
        )
    fields: dict[str, Any] = {
        "customers": (
            list[customer] | None,  # type: ignore[valid-type]
            Field(default=None, min_length=1, description="One object per customer."),
        ),
        "columns": (columns | None, Field(default=None, description="One array per feature.")),
        **extra_fields,
    }
    validators: dict[str, Any] = {"one_layout": model_validator(mode="after")(one_layout)}
    model = create_model(
        score_request_name(task),
        __base__=ScoreRequestBase,
        __validators__=validators,
        **fields,
    )
    model.example_body = {"customers": [example_customer(schema)], "reasons": 3}  # type: ignore[attr-defined]
    return model


def assessment_request_model(schemas: dict[Task, FeatureSchema]) -> type[BaseModel]:
    """One customer with the union of every model's features, all optional at this level.

    Which features are required depends on the lifecycle group, so each applicable model's
    own customer model validates its part afterwards and names what is missing.
    """
    return _assessment_request_model(tuple(schemas.items()))


@cache
def _assessment_request_model(tasks: tuple[tuple[Task, FeatureSchema], ...]) -> type[BaseModel]:
    schemas = dict(tasks)
    fields: dict[str, Any] = {
        "customer_id": (CustomerId, ...),
        "lifecycle": (
            LifecycleStage | None,
            Field(default=None, description=LIFECYCLE_DESCRIPTION + " A lost one gets no scores."),
        ),
        **_rule_inputs(many=False),
        "reasons": (ReasonCount, 5),
        "explain": (ExplainMethod, "fast"),
    }
    specs: dict[str, list[FeatureSpec]] = {}
    for schema in schemas.values():
        for feature in schema.inputs:
            specs.setdefault(feature.name, []).append(feature)
    for name, same_name in specs.items():
        if name in fields:
            continue
        if all(spec == same_name[0] for spec in same_name):
            fields[name] = (feature_annotation(same_name[0]) | None, None)
        else:  # models disagree on the type (a bank's own model): each checks its own part
            fields[name] = (JsonScalar | None, Field(default=None, description=_shared(same_name)))
    example: dict[str, Any] = {"lifecycle": "existing", "risk_profile": "C3", "reasons": 3}
    for schema in schemas.values():
        example = {**example_customer(schema), **example}
    config = ConfigDict(**STRICT, json_schema_extra={"examples": [example]})
    return create_model("AssessmentRequest", __config__=config, **fields)


JsonScalar = bool | int | float | str


def _shared(specs: list[FeatureSpec]) -> str:
    return "; ".join(dict.fromkeys(spec.description for spec in specs))
