"""Feature matrices from Arrow record batches, validated against the schema, for file scoring."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.ml.schema import FeatureKind, FeatureSchema, FloatMatrix


class MissingColumnsError(ValueError):
    """The input lacks columns the model needs."""


def check_columns(schema: FeatureSchema, available: list[str]) -> None:
    """Fail before reading any rows when a required feature has no column."""
    missing = [f.column for f in schema.features if f.required and f.column not in available]
    if missing:
        raise MissingColumnsError(f"input lacks the model's columns: {missing}")


def encode_batch(
    schema: FeatureSchema, batch: pa.RecordBatch
) -> tuple[FloatMatrix, list[str | None]]:
    """The float matrix of a batch plus, per row, the first problem found (None if valid)."""
    n = batch.num_rows
    matrix = np.empty((n, len(schema.features)), dtype=np.float64)
    unknown_category: list[tuple[int, str]] = []
    names = batch.schema.names
    for j, feature in enumerate(schema.features):
        if feature.column not in names:
            matrix[:, j] = np.nan
            continue
        column = batch.column(names.index(feature.column))
        if feature.kind is FeatureKind.CATEGORY:
            assert feature.categories is not None
            text = pc.cast(column, pa.string())
            codes = pc.index_in(text, value_set=pa.array(feature.categories, pa.string()))
            matrix[:, j] = codes.to_numpy(zero_copy_only=False).astype(np.float64)
            unmatched = pc.and_(pc.is_valid(text), pc.is_null(codes))
            for i in np.flatnonzero(unmatched.to_numpy(zero_copy_only=False)):
                unknown_category.append((int(i), f"{feature.name}: unknown category"))
            continue
        try:
            numeric = pc.cast(column, pa.float64())
        except pa.ArrowException:  # not castable to float: parse what parses
            numeric = _lenient_float(column)
            for i in np.flatnonzero(
                pc.and_(pc.is_valid(column), pc.is_null(numeric)).to_numpy(zero_copy_only=False)
            ):
                unknown_category.append((int(i), f"{feature.name}: not a number"))
        matrix[:, j] = numeric.to_numpy(zero_copy_only=False)
    problems = schema.validate_matrix(matrix)
    for row, message in unknown_category:
        problems[row] = problems[row] or message
    return matrix, problems


def _lenient_float(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Parse what parses; everything else becomes null (and is reported as a bad row)."""
    values = []
    for item in column.to_pylist():
        try:
            values.append(None if item is None else float(item))
        except (TypeError, ValueError):
            values.append(None)
    return pa.array(values, pa.float64())
