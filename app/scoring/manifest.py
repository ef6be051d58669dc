"""The model manifest: what a model is, what it takes, and how it did on held-out data."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.scoring.feature_schema import FeatureSchema

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.txt"


class Task(StrEnum):
    """The four things CVM scores."""

    TIER = "tier"
    RECOMMENDATION = "recommendation"
    CHURN = "churn"
    PROSPECT = "prospect"


class Objective(StrEnum):
    """The LightGBM objective family, which decides how raw scores become outputs."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class CalibrationMethod(StrEnum):
    """How a binary model's probabilities are recalibrated after the trees."""

    ISOTONIC = "isotonic"
    VENN_ABERS = "venn_abers"


class Calibration(BaseModel):
    """A monotone map from the trees' probability to the served one: linear between knots,
    flat beyond them. Fitted on out-of-fold predictions of the training window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: CalibrationMethod
    knots: tuple[float, ...] = Field(min_length=2, description="Trees' probability, increasing.")
    values: tuple[float, ...] = Field(min_length=2, description="Served probability at each knot.")

    @model_validator(mode="after")
    def _check_knots(self) -> Calibration:
        if len(self.knots) != len(self.values):
            raise ValueError("a calibration needs one value per knot")
        if any(b <= a for a, b in zip(self.knots, self.knots[1:], strict=False)):
            raise ValueError("calibration knots must increase strictly")
        if any(not 0.0 <= v <= 1.0 for v in self.values):
            raise ValueError("calibrated probabilities lie in [0, 1]")
        return self


class Calibrator:
    """A manifest's calibration as a function of the trees' probabilities (identity if none)."""

    def __init__(self, calibration: Calibration | None) -> None:
        self.calibration = calibration
        self._knots = None if calibration is None else np.asarray(calibration.knots)
        self._values = None if calibration is None else np.asarray(calibration.values)

    def __call__(self, trees: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The served probabilities."""
        if self._knots is None or self._values is None:
            return trees
        return np.asarray(np.interp(trees, self._knots, self._values), dtype=np.float64)


class Manifest(BaseModel):
    """Everything the service needs besides the trees themselves, saved next to ``model.txt``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task: Task
    version: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    objective: Objective
    classes: tuple[str, ...] = Field(
        description="Multiclass: class labels in model output order. Binary: (negative, positive)."
    )
    feature_schema: FeatureSchema = Field(alias="schema")
    target: str
    id_column: str
    model_file: str = MODEL_FILE
    value_model_file: str | None = Field(
        default=None, description="Prospect only: regression model of the value a convert brings."
    )
    params: dict[str, Any]
    num_trees: int
    lightgbm_version: str
    data_fingerprint: str = Field(description="SHA-256 of the training data as used.")
    data_source: str
    training_rows: int
    split: dict[str, Any] = Field(description="How train, validation and test were separated.")
    metrics: dict[str, Any] = Field(description="Measured on the test split only.")
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Decision thresholds, e.g. churn risk bands, chosen on the validation split.",
    )
    explanation_method: str
    calibration: Calibration | None = Field(
        default=None,
        description="Binary only: the map applied to the trees' probability before it is "
        "served; None serves the trees' probability as it is.",
    )
    extras: dict[str, Any] = Field(default_factory=dict)
    card: dict[str, Any] | None = Field(
        default=None,
        description="The model card (app/modelops/resources/model_card.schema.json), written "
        "and validated by `cvm train`; None for models trained before cards existed.",
    )
    created_at: datetime

    @model_validator(mode="after")
    def _check_classes(self) -> Manifest:
        if self.objective is Objective.BINARY and len(self.classes) != 2:
            raise ValueError("a binary model names exactly two classes")
        if self.objective is Objective.MULTICLASS and len(self.classes) < 3:
            raise ValueError("a multiclass model names at least three classes")
        if self.calibration is not None and self.objective is not Objective.BINARY:
            raise ValueError("only a binary model is calibrated")
        return self

    def save(self, directory: Path) -> Path:
        """Write ``manifest.json`` into the model's directory."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / MANIFEST_FILE
        text = json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """Read and validate a model directory's manifest."""
        path = directory / MANIFEST_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


NOT_SERVED_KINDS = frozenset({"tier_movement"})


def why_not_served(manifest: Manifest) -> str | None:
    """Why a trained model may not fill its task's slot (None: it may), e.g. a tier-movement
    model answers down/stay/up where the API returns a tier."""
    kind = manifest.extras.get("model_kind")
    if kind in NOT_SERVED_KINDS:
        return f"a {kind} model is trained, not served: it cannot fill the {manifest.task} slot"
    return None
