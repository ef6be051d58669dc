"""A loaded model: trees, manifest and explainer, with predict and explain on numpy matrices."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from app.scoring.explain import (
    METHOD_TREESHAP,
    Explanation,
    PathExplainer,
    exact_explanation,
    resolve_num_iteration,
)
from app.scoring.feature_schema import FeatureSchema
from app.scoring.manifest import Calibrator, Manifest, Objective
from app.scoring.single_row import PREDICT_RAW_SCORE, SingleRowPredictor

FloatArray = npt.NDArray[np.float64]


class ModelLoadError(RuntimeError):
    """A model directory is missing, malformed or disagrees with its manifest."""


class Predictor(Protocol):
    """A prediction engine that stands in for ``Booster.predict`` with the same outputs."""

    backend: str

    def predict(self, matrix: FloatArray, *, threads: int) -> FloatArray:
        """Outputs of ``Booster.predict`` (not raw scores) for a float64 matrix."""
        ...


class Reason(NamedTuple):
    """One feature's signed push on a score, in the model's raw units, worded for staff.

    A named tuple: five are built for every score, and it is the cheapest immutable record.
    """

    feature: str
    value: str
    contribution: float
    text: str

    @property
    def direction(self) -> str:
        """Whether the feature raises or lowers the score."""
        return "raises" if self.contribution > 0 else "lowers"

    def wire(self) -> dict[str, str | float]:
        """The reason as the API returns and stores it."""
        return {
            "feature": self.feature,
            "value": self.value,
            "contribution": self.contribution,
            "direction": self.direction,
            "text": self.text,
        }


@dataclass(frozen=True)
class RowExplanation:
    """The top reasons of one score; reasons + other + bias == raw score exactly."""

    method: str
    raw_score: float
    bias: float
    reasons: list[Reason]
    other_contribution: float


def sigmoid(raw: FloatArray) -> FloatArray:
    """Binary raw score (log-odds) to probability."""
    return np.asarray(1.0 / (1.0 + np.exp(-raw)), dtype=np.float64)


def softmax(raw: FloatArray) -> FloatArray:
    """Multiclass raw scores to probabilities, row by row."""
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


class ScoringModel:
    """What the service and the batch scorer hold per task."""

    def __init__(
        self,
        manifest: Manifest,
        booster: lgb.Booster,
        value_booster: lgb.Booster | None = None,
        *,
        threads: int = 1,
    ) -> None:
        self.manifest = manifest
        self.threads = threads
        self.booster = booster
        self.value_booster = value_booster
        # None: LightGBM itself, the reference every other engine is checked against.
        self.predictor: Predictor | None = None
        self._explainer: PathExplainer | None = None
        self._explainer_lock = threading.Lock()
        self.calibrate = Calibrator(manifest.calibration)
        self._single_row_raw = SingleRowPredictor(
            booster,
            predict_type=PREDICT_RAW_SCORE,
            num_iteration=resolve_num_iteration(booster, None),  # the explainer's
            n_outputs=booster.num_model_per_iteration(),
        )
        names = booster.feature_name()
        if names != manifest.feature_schema.names:
            raise ModelLoadError(
                f"{manifest.task} v{manifest.version}: model features {names} differ from "
                "the manifest schema"
            )

    @property
    def explainer(self) -> PathExplainer:
        """Path attribution for this model, built on first use (``warm_up`` builds it): scores
        without reasons, as in most batch files, never pay for its tables."""
        if self._explainer is None:
            with self._explainer_lock:
                if self._explainer is None:
                    self._explainer = PathExplainer.from_booster(
                        self.booster, num_threads=self.threads
                    )
        return self._explainer

    @classmethod
    def load(cls, directory: Path, *, threads: int = 1) -> ScoringModel:
        """Load ``model.txt`` and ``manifest.json`` from a model directory."""
        try:
            manifest = Manifest.load(directory)
            booster = lgb.Booster(model_file=str(directory / manifest.model_file))
            value_booster = (
                lgb.Booster(model_file=str(directory / manifest.value_model_file))
                if manifest.value_model_file
                else None
            )
        except (OSError, ValueError, lgb.basic.LightGBMError) as error:
            raise ModelLoadError(f"cannot load the model in {directory}: {error}") from error
        return cls(manifest, booster, value_booster, threads=threads)

    @property
    def schema(self) -> FeatureSchema:
        """The features this model takes, in column order."""
        return self.manifest.feature_schema

    @property
    def classes(self) -> tuple[str, ...]:
        """Output labels (for binary: negative, positive)."""
        return self.manifest.classes

    def warm_up(self) -> None:
        """Run one prediction and one explanation so the first request pays no setup cost, and
        check the single-row fast path against `Booster.predict`."""
        row = np.zeros((1, len(self.schema.features)), dtype=np.float64)
        self.predict(row)
        self.explain(row)
        for probe in (row, np.full_like(row, np.nan)):
            fast = self.raw_scores(probe)
            reference = self.booster.predict(probe, raw_score=True, num_threads=1)
            if not np.allclose(fast.ravel(), np.ravel(reference), rtol=0, atol=1e-9):
                raise ModelLoadError(
                    f"{self.manifest.task} v{self.manifest.version}: the single-row fast path "
                    f"disagrees with Booster.predict ({fast.ravel()} vs {np.ravel(reference)})"
                )
        if self.value_booster is not None:
            self.expected_value_if_converted(row)

    def predict(self, matrix: FloatArray, *, threads: int | None = None) -> FloatArray:
        """Probability of the positive class (binary, shape (n,)), per class (multiclass, (n, k))
        or the value (regression); on ``threads`` threads (default: the model's)."""
        threads = threads or self.threads
        if len(matrix) == 1 and self.predictor is None:  # LightGBM's C single-row path: a
            return self.probabilities_from_raw(self.raw_scores(matrix))  # fifth of the cost
        if self.predictor is not None:
            trees = self.predictor.predict(matrix, threads=threads)
        else:
            trees = np.asarray(self.booster.predict(matrix, num_threads=threads), dtype=np.float64)
        return self.calibrate(trees)

    @property
    def backend(self) -> str:
        """The engine behind ``predict``: "lightgbm" or the predictor's name."""
        return "lightgbm" if self.predictor is None else self.predictor.backend

    def use_predictor(self, predictor: Predictor | None) -> None:
        """Run ``predict`` on another engine (None: back to LightGBM); explanations stay on it."""
        self.predictor = predictor

    def raw_scores(self, matrix: FloatArray) -> FloatArray:
        """Raw scores (n, k), no contributions: log-odds for binary, per class for multiclass."""
        if len(matrix) == 1:
            return self._single_row_raw(matrix[0]).reshape(1, -1)
        raw = np.asarray(
            self.booster.predict(matrix, raw_score=True, num_threads=self.threads),
            dtype=np.float64,
        )
        return raw.reshape(len(matrix), -1)

    def probabilities_from_raw(self, raw: FloatArray) -> FloatArray:
        """The same outputs as ``predict``, from an explanation's raw scores (no second pass)."""
        if self.manifest.objective is Objective.BINARY:
            return self.calibrate(sigmoid(raw[:, 0]))
        if self.manifest.objective is Objective.MULTICLASS:
            return softmax(raw)
        return raw[:, 0]

    def explain(self, matrix: FloatArray, *, exact: bool = False) -> Explanation:
        """Raw scores with per-feature contributions: fast path attribution, or TreeSHAP."""
        if exact:
            return exact_explanation(self.booster, matrix)
        return self.explainer.explain(matrix)

    def expected_value_if_converted(
        self, matrix: FloatArray, *, threads: int | None = None
    ) -> FloatArray:
        """Prospect only: the annual value a prospect would bring once a customer."""
        if self.value_booster is None:
            raise ModelLoadError(f"{self.manifest.task} has no value model")
        return np.asarray(
            self.value_booster.predict(matrix, num_threads=threads or self.threads),
            dtype=np.float64,
        )

    def explain_row(
        self,
        matrix: FloatArray,
        explanation: Explanation,
        row: int,
        class_index: int = 0,
        *,
        top: int = 5,
        exact: bool = False,
    ) -> RowExplanation:
        """The top reasons of one row for one output class, worded from the schema."""
        contributions = explanation.contributions[row, class_index]
        features = contributions[:-1]
        order = np.argsort(-np.abs(features), kind="stable")[:top].tolist()
        # Python floats from here: numpy scalars cost more than they save on a handful of values.
        pushes = features.tolist()
        values = matrix[row].tolist()
        specs = self.schema.features
        reasons = []
        for j in order:
            contribution = pushes[j]
            if contribution == 0.0:
                break
            spec = specs[j]
            described = spec.describe_value(values[j])
            reasons.append(
                Reason(spec.name, described, contribution, spec.reason_text(values[j], described))
            )
        listed = sum(r.contribution for r in reasons)
        return RowExplanation(
            method=METHOD_TREESHAP if exact else self.manifest.explanation_method,
            raw_score=float(explanation.raw_score[row, class_index]),
            bias=float(contributions[-1]),
            reasons=reasons,
            other_contribution=math.fsum(pushes) - listed,
        )
