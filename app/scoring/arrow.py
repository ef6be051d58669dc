"""Feature matrices from Arrow record batches, validated against the schema, for file scoring.

Everything here is per column (Arrow compute and numpy), never per row: a chunk of valid rows
costs no Python work per row, and only rejected rows are looked at one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from app.scoring.feature_schema import FeatureKind, FeatureSchema, FloatMatrix

Mask = npt.NDArray[np.bool_]


class MissingColumnsError(ValueError):
    """The input lacks columns the model needs."""


def check_columns(schema: FeatureSchema, available: list[str]) -> None:
    """Fail before reading any rows when a required feature has no column."""
    missing = [f.column for f in schema.inputs if f.required and f.column not in available]
    if missing:
        raise MissingColumnsError(f"input lacks the model's columns: {missing}")


@dataclass(frozen=True)
class EncodedBatch:
    """A batch's float matrix (C-contiguous, one row per input row) and its rows' problems."""

    matrix: FloatMatrix
    # Per row: 0 when valid, else k for the problem ``messages[k - 1]``.
    problem_codes: npt.NDArray[np.int32]
    messages: tuple[str, ...]

    @property
    def valid(self) -> Mask:
        """Rows that passed validation."""
        valid: Mask = self.problem_codes == 0
        return valid

    def problem(self, row: int) -> str | None:
        """The first problem found in one row, None if it is valid."""
        code = int(self.problem_codes[row])
        return self.messages[code - 1] if code else None


def encode(schema: FeatureSchema, batch: pa.RecordBatch) -> EncodedBatch:
    """Encode and validate a batch column by column, with the schema's own rules."""
    n = batch.num_rows
    matrix = np.empty((n, len(schema.features)), dtype=np.float64)
    # Per feature, its problems from the least to the most important: the schema's rules, then
    # the values that could not be encoded at all (an unknown category or a word in a number
    # column is NaN to the rules, which would call it missing).
    found: list[list[tuple[Mask, str]]] = []
    names = batch.schema.names
    for j, feature in enumerate(schema.features):
        unreadable: list[tuple[Mask, str]] = []
        if feature.derived is not None or feature.column not in names:  # derived: filled below
            values = np.full(n, np.nan)
        else:
            column = batch.column(names.index(feature.column))
            if feature.kind is FeatureKind.CATEGORY:
                assert feature.categories is not None
                values, bad = _category_codes(column, feature.categories)
                message = f"{feature.name}: unknown category"
            else:
                values, bad = _floats(column)
                message = f"{feature.name}: not a number"
            if bad is not None:
                unreadable.append((bad, message))
        matrix[:, j] = values
        # The rules run on the contiguous column, not the matrix's.
        found.append([*feature.problems(values), *unreadable])
    schema.derive(matrix)
    # A row's first problem wins: the first feature's before later ones', so masks are applied
    # from the least to the most important.
    codes = np.zeros(n, dtype=np.int32)
    messages: list[str] = []
    for mask, message in (p for f in reversed(found) for p in f):
        messages.append(message)
        codes[mask] = len(messages)
    return EncodedBatch(matrix, codes, tuple(messages))


def encode_batch(
    schema: FeatureSchema, batch: pa.RecordBatch
) -> tuple[FloatMatrix, list[str | None]]:
    """The float matrix of a batch plus, per row, the first problem found (None if valid)."""
    encoded = encode(schema, batch)
    return encoded.matrix, [encoded.problem(row) for row in range(batch.num_rows)]


def _category_codes(
    column: pa.Array, categories: tuple[str, ...]
) -> tuple[npt.NDArray[np.float64], Mask | None]:
    """Category positions as floats (NaN when missing or unknown) and the unknown values."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = column  # looked up as it is: no copy of the strings
    else:  # numbers used as categories, dictionaries: spelt as the schema spells them
        text = pc.cast(column, pa.string())
    codes = pc.index_in(text, value_set=pa.array(categories, text.type))
    values = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.float64)
    if codes.null_count == text.null_count:  # every present value is a known category
        return values, None
    unknown = pc.and_(pc.is_valid(text), pc.is_null(codes))
    return values, np.asarray(unknown.to_numpy(zero_copy_only=False), dtype=bool)


def _floats(column: pa.Array) -> tuple[npt.NDArray[np.float64], Mask | None]:
    """A column as float64 (NaN when missing) and the values that are not numbers."""
    try:
        numeric = pc.cast(column, pa.float64())
    except pa.ArrowException:  # not castable as a whole (text in a CSV): parse what parses
        numeric = _lenient_float(column)
    values = np.asarray(numeric.to_numpy(zero_copy_only=False), dtype=np.float64)
    if numeric.null_count == column.null_count:
        return values, None
    unparsed = pc.and_(pc.is_valid(column), pc.is_null(numeric))
    return values, np.asarray(unparsed.to_numpy(zero_copy_only=False), dtype=bool)


def _lenient_float(column: pa.Array) -> pa.Array:
    """Parse what parses; everything else becomes null (and is reported as a bad row)."""
    values = []
    for item in column.to_pylist():
        try:
            values.append(None if item is None else float(item))
        except (TypeError, ValueError):
            values.append(None)
    return pa.array(values, pa.float64())
