"""The feature schema: the one definition of a model's inputs, shared by training and serving.

A schema travels inside the model's manifest, so the code that feeds a model can never disagree
with the model: the API builds its request models from it, the batch scorer validates files
against it, and reason codes are worded from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from functools import cached_property, partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

FloatMatrix = npt.NDArray[np.float64]
# Up to this many rows, encoding row by row into one flat list is fastest; above, by column.
_ROW_WISE_MAX_ROWS = 16


def _label(labels: tuple[str, ...], code: float) -> str:
    return labels[int(code)]


def _decoded_column(spec: FeatureSpec, values: FloatMatrix) -> list[Any]:
    """One column of a matrix as Python values of the feature's kind, None where missing."""
    missing = np.isnan(values)
    if spec.kind is FeatureKind.CATEGORY:
        labels = np.asarray([*(spec.categories or ()), None], dtype=object)
        return list(labels[np.where(missing, len(labels) - 1, values).astype(np.intp)].tolist())
    if spec.kind is FeatureKind.BOOLEAN:
        column: list[Any] = (values != 0).tolist()
    elif spec.kind is FeatureKind.INTEGER:
        column = np.nan_to_num(values).astype(np.int64).tolist()
    else:
        column = values.tolist()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            column[i] = None
    return column


class FeatureKind(StrEnum):
    """How a feature's values are typed on the wire and encoded for LightGBM."""

    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    CATEGORY = "category"


class Derivation(StrEnum):
    """A feature computed from other features of the same schema, never sent by a caller."""

    # The day of the year of a (month, day of month) pair as an angle on the year's circle:
    # December 31 sits next to January 1, which a plain day number cannot say to a tree.
    YEAR_ANGLE_SIN = "year_angle_sin"
    YEAR_ANGLE_COS = "year_angle_cos"


MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
# First day of each month as a day of a common year, less one (January 1 is day 0).
_MONTH_START = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30], dtype=np.float64)


def month_number(label: str) -> int | None:
    """1-12 for a month's name, its three-letter abbreviation or its number; else None."""
    text = label.strip().lower()
    if text.isdigit():
        number = int(text)
        return number if 1 <= number <= 12 else None
    for number, name in enumerate(MONTH_NAMES, start=1):
        if len(text) >= 3 and name.startswith(text):
            return number
    return None


class DerivedFrom(BaseModel):
    """How a derived feature is computed: the function and the features it reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    function: Derivation
    month: str = Field(description="The feature holding the month (name, abbreviation or 1-12).")
    day: str = Field(description="The feature holding the day of the month (1-31).")


class FeatureSpec(BaseModel):
    """One model input: its type, unit, allowed values and the words used to explain it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    kind: FeatureKind
    description: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    required: bool = True
    actionable: bool = False
    source: str | None = Field(
        default=None, description="Column name in the bank's own files, where it differs."
    )
    reason: str = Field(
        default="",
        description="Plain-language template read by staff; '{value}' is replaced by the value.",
    )
    derived: DerivedFrom | None = Field(
        default=None,
        description="Computed from other features by the schema itself (training and serving "
        "alike); callers never send it.",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> FeatureSpec:
        if self.derived is not None and (self.kind is not FeatureKind.NUMBER or self.required):
            raise ValueError(f"derived feature {self.name!r} must be an optional number")
        if self.kind is FeatureKind.CATEGORY and not self.categories:
            raise ValueError(f"categorical feature {self.name!r} needs its categories")
        if self.kind is not FeatureKind.CATEGORY and self.categories:
            raise ValueError(f"only categorical features take categories ({self.name!r})")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum above maximum for {self.name!r}")
        return self

    @property
    def column(self) -> str:
        """The column holding this feature in a bank's files."""
        return self.source or self.name

    @cached_property
    def describer(self) -> Callable[[float], str]:
        """The function behind ``describe_value``, chosen once per feature: it runs for every
        reason of every score."""
        if self.kind is FeatureKind.CATEGORY:
            names = self.categories or ()
            return lambda value: "unknown" if math.isnan(value) else names[int(value)]
        if self.kind is FeatureKind.BOOLEAN:
            return lambda value: "unknown" if math.isnan(value) else "yes" if value else "no"
        if self.unit == "%":
            return lambda value: "unknown" if math.isnan(value) else f"{value:+.0f}%"
        suffix = f" {self.unit}" if self.unit and self.unit != "count" else ""
        whole = self.kind is FeatureKind.INTEGER

        def number(value: float) -> str:
            if math.isnan(value):
                return "unknown"
            if whole or float(value).is_integer():
                return f"{value:,.0f}{suffix}"
            return f"{value:,.2f}{suffix}"

        return number

    def describe_value(self, value: float) -> str:
        """The encoded value as staff would read it (categories by name, money with unit)."""
        return self.describer(value)

    def reason_text(self, value: float, described: str | None = None) -> str:
        """The reason sentence for this feature at this value (``described``: the value as
        ``describe_value`` words it, when the caller already has it)."""
        if math.isnan(value):
            return f"not on file yet: {self.description.rstrip('.').lower()}"
        template = self.reason or f"{self.description}: {{value}}"
        return template.replace("{value}", described or self.describe_value(value))

    def problems(self, values: FloatMatrix) -> list[tuple[npt.NDArray[np.bool_], str]]:
        """The rows of one encoded column that break this feature's rules, each mask with its
        message; a row in several masks takes the last one. Masks that hold no row are left out."""
        missing = np.isnan(values)
        found: list[tuple[npt.NDArray[np.bool_], str]] = []
        if self.required:
            found.append((missing, f"{self.name}: required value is missing"))
        found.append((np.isinf(values), f"{self.name}: must be finite"))
        # Comparisons with NaN are false: a missing value is never below or above a bound.
        if self.minimum is not None:
            found.append((values < self.minimum, f"{self.name}: below minimum {self.minimum:g}"))
        if self.maximum is not None:
            found.append((values > self.maximum, f"{self.name}: above maximum {self.maximum:g}"))
        if self.kind in (FeatureKind.INTEGER, FeatureKind.BOOLEAN):
            # Infinities round to themselves, so only present fractional values are caught.
            fractional = ~missing & (np.round(values) != values)
            found.append((fractional, f"{self.name}: must be a whole number"))
        return [(mask, message) for mask, message in found if mask.any()]


class FeatureSchema(BaseModel):
    """An ordered list of features: the column order of the model's matrix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[FeatureSpec, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSchema:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        if not names:
            raise ValueError("a schema needs at least one feature")
        inputs = {f.name: f for f in self.inputs}
        for feature in self.features:
            if feature.derived is None:
                continue
            for read in (feature.derived.month, feature.derived.day):
                if read not in inputs:
                    raise ValueError(f"{feature.name!r} is derived from {read!r}: not an input")
        return self

    @property
    def inputs(self) -> tuple[FeatureSpec, ...]:
        """The features callers send (every feature but the derived ones), in column order."""
        return tuple(f for f in self.features if f.derived is None)

    def derive(self, matrix: FloatMatrix) -> FloatMatrix:
        """Fill the derived columns of an encoded matrix from its input columns, in place.

        The one definition of every derived feature: training encodes its table through it,
        and the API and the batch scorer encode every request and file through it. A missing
        month, a value that is not a month, or a day outside 1-31 gives a missing (NaN)
        derived value, never an error.
        """
        for column, month, month_starts, day, function in self._derivations:
            months = matrix[:, month]
            if month_starts is None:  # a numeric month, 1-12
                known = (months >= 1) & (months <= 12) & (np.round(months) == months)
                index = np.where(known, months - 1, 0).astype(np.intp)
                start = np.where(known, _MONTH_START[index], np.nan)
            else:  # a category's code: its label read as a month, or NaN
                index = np.where(np.isnan(months), len(month_starts) - 1, months).astype(np.intp)
                start = month_starts[index]
            days = matrix[:, day]
            days = np.where((days >= 1) & (days <= 31), days, np.nan)
            angle = (2 * np.pi / 365.0) * (start + days - 1)
            matrix[:, column] = (
                np.sin(angle) if function is Derivation.YEAR_ANGLE_SIN else np.cos(angle)
            )
        return matrix

    @cached_property
    def _derivations(self) -> tuple[tuple[int, int, FloatMatrix | None, int, Derivation], ...]:
        """Per derived feature: its column, the month's column and, for a categorical month,
        each code's first day of the year (NaN: not a month; last: missing), the day's column
        and the function; built once per loaded model."""
        found = []
        for j, feature in enumerate(self.features):
            if feature.derived is None:
                continue
            month = self[feature.derived.month]
            starts = None
            if month.kind is FeatureKind.CATEGORY:
                numbers = [month_number(c) for c in month.categories or ()]
                starts = np.asarray(
                    [np.nan if n is None else _MONTH_START[n - 1] for n in [*numbers, None]],
                    dtype=np.float64,
                )
            found.append(
                (
                    j,
                    self._positions[month.name],
                    starts,
                    self._positions[feature.derived.day],
                    feature.derived.function,
                )
            )
        return tuple(found)

    @property
    def names(self) -> list[str]:
        """Feature names in matrix column order."""
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        """Column positions LightGBM must treat as categorical."""
        return [i for i, f in enumerate(self.features) if f.kind is FeatureKind.CATEGORY]

    def __getitem__(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    @cached_property
    def _category_codes(self) -> dict[str, dict[str, int]]:
        """Each categorical feature's code per label; built once per loaded model, never per
        request."""
        return {
            f.name: {c: i for i, c in enumerate(f.categories or ())}
            for f in self.features
            if f.kind is FeatureKind.CATEGORY
        }

    @cached_property
    def _column_codes(self) -> tuple[tuple[str, dict[str, int] | None], ...]:
        """Per column, its name and its category codes (None: numeric)."""
        return tuple((f.name, self._category_codes.get(f.name)) for f in self.features)

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> FloatMatrix:
        """Already-validated records to the float matrix LightGBM takes (missing -> NaN)."""
        if len(rows) > _ROW_WISE_MAX_ROWS:
            return self._encode_rows_by_column(rows, self._category_codes)
        nan = float("nan")
        columns = self._column_codes
        values: list[Any] = []
        for row in rows:
            get = row.get
            values += [
                nan if (v := get(name)) is None else v if codes is None else codes[v]
                for name, codes in columns
            ]
        # One array from a flat list: far cheaper than writing numpy elements one by one.
        matrix = np.array(values, dtype=np.float64).reshape(len(rows), len(columns))
        return self.derive(matrix)

    def _encode_rows_by_column(
        self, rows: Sequence[Mapping[str, Any]], codes: dict[str, dict[str, int]]
    ) -> FloatMatrix:
        """Column at a time: 2x faster than row-wise for a batch, 4x slower for one row."""
        nan = float("nan")
        matrix = np.empty((len(rows), len(self.features)), dtype=np.float64)
        for j, feature in enumerate(self.features):
            name = feature.name
            lookup = codes.get(name)
            if lookup is None:
                column = [row.get(name) for row in rows]
                if None in column:
                    column = [nan if v is None else v for v in column]
            else:
                column = [nan if (v := row.get(name)) is None else lookup[v] for row in rows]
            matrix[:, j] = column
        return self.derive(matrix)

    def encode_columns(self, columns: Mapping[str, Sequence[Any]]) -> FloatMatrix:
        """Already-validated columns (one sequence per feature) to the float matrix."""
        # Optional columns left out arrive as None.
        lengths = {len(v) for v in columns.values() if v is not None}
        n = lengths.pop() if lengths else 0
        if n == 0:
            return np.empty((0, len(self.features)), dtype=np.float64)
        missing = [None] * n
        encoded: list[Sequence[Any]] = []
        for name, codes in self._column_codes:
            values = columns.get(name)
            if values is None:
                encoded.append(missing)
            elif codes is not None:
                encoded.append([None if v is None else codes[v] for v in values])
            else:
                encoded.append(values)
        # One conversion of every column at once (None becomes NaN), then C order for LightGBM.
        matrix = np.ascontiguousarray(np.array(encoded, dtype=np.float64).reshape(-1, n).T)
        return self.derive(matrix)

    def validate_matrix(self, matrix: FloatMatrix) -> list[str | None]:
        """Per row, the first problem found (None when the row is valid); vectorised for files."""
        problems: list[str | None] = [None] * matrix.shape[0]
        for j, feature in reversed(list(enumerate(self.features))):
            for mask, message in feature.problems(matrix[:, j]):
                for i in np.flatnonzero(mask):
                    problems[int(i)] = message
        return problems

    @cached_property
    def _decoders(self) -> tuple[tuple[str, Callable[[float], Any]], ...]:
        """Per column, its name and how a present value reads back."""
        decoders: list[tuple[str, Callable[[float], Any]]] = []
        for spec in self.features:
            if spec.kind is FeatureKind.CATEGORY:
                decoders.append((spec.name, partial(_label, spec.categories or ())))
            elif spec.kind is FeatureKind.BOOLEAN:
                decoders.append((spec.name, bool))
            elif spec.kind is FeatureKind.INTEGER:
                decoders.append((spec.name, int))
            else:
                decoders.append((spec.name, float))
        return tuple(decoders)

    def values_of(self, matrix: FloatMatrix, name: str) -> FloatMatrix | None:
        """One feature's column of an encoded matrix (None: the model has no such feature)."""
        column = self._positions.get(name)
        return None if column is None else matrix[:, column]

    @cached_property
    def _positions(self) -> dict[str, int]:
        """Each feature's column (looked up on every scoring call)."""
        return {f.name: j for j, f in enumerate(self.features)}

    def labels_of(self, matrix: FloatMatrix, name: str) -> list[str | None] | None:
        """A categorical feature's column as its labels (None where missing)."""
        values = self.values_of(matrix, name)
        if values is None:
            return None
        categories = self[name].categories or ()
        return [None if math.isnan(v) else categories[int(v)] for v in values.tolist()]

    def decode_rows(self, matrix: FloatMatrix) -> list[dict[str, Any]]:
        """Each row of an encoded matrix as the model saw it, by name: categories as labels,
        integers as ints, missing values as None. What every stored score keeps."""
        if len(matrix) <= _ROW_WISE_MAX_ROWS:  # numpy's per-call cost dwarfs a few rows
            decoders = self._decoders
            return [
                {
                    name: None if v != v else decode(v)
                    for (name, decode), v in zip(decoders, row, strict=True)
                }
                for row in matrix.tolist()
            ]
        columns = [_decoded_column(spec, matrix[:, j]) for j, spec in enumerate(self.features)]
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
