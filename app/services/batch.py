"""Scoring a whole file: read in chunks, validate against the schema, predict, write results."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.ml.arrow import check_columns, encode_batch
from app.ml.manifest import Objective
from app.ml.model import FloatArray, ScoringModel

CHUNK_ROWS = 65_536


@dataclass
class BatchSummary:
    """What a batch run did, for the CLI to print."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rejects_path: Path | None = None


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"} or path.is_dir()


def count_rows(path: Path) -> int | None:
    """Rows in the input when cheap to know (Parquet metadata), for the progress bar."""
    if _is_parquet(path) and path.is_file():
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def read_batches(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet or CSV file (delimiter sniffed) in record batches."""
    if _is_parquet(path):
        yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        return
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        # Blank cells are missing values, as they are to training's reader.
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )
    for batch in reader:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)


def result_columns(model: ScoringModel, matrix: FloatArray, reasons: int) -> dict[str, pa.Array]:
    """The score columns of one validated chunk (and its top reasons when asked)."""
    manifest = model.manifest
    if reasons:
        explanation = model.explain(matrix)
        outputs = model.probabilities_from_raw(explanation.raw_score)
    else:
        outputs = model.predict(matrix)
    columns: dict[str, pa.Array] = {}
    if manifest.objective is Objective.BINARY:
        columns["probability"] = pa.array(outputs)
        if {"medium", "high"} <= manifest.thresholds.keys():
            band = np.where(
                outputs >= manifest.thresholds["high"],
                "high",
                np.where(outputs >= manifest.thresholds["medium"], "medium", "low"),
            )
            columns["band"] = pa.array(band)
        if model.value_booster is not None:
            columns["expected_value"] = pa.array(
                outputs * model.expected_value_if_converted(matrix)
            )
        class_index = np.zeros(len(matrix), dtype=np.int64)
    else:
        class_index = outputs.argmax(axis=1)
        columns["prediction"] = pa.array(np.asarray(model.classes)[class_index])
        columns["probability"] = pa.array(outputs[np.arange(len(outputs)), class_index])
    if reasons:
        texts = []
        for row in range(len(matrix)):
            explained = model.explain_row(
                matrix, explanation, row, int(class_index[row]), top=reasons
            )
            texts.append(
                [f"{r.text} ({r.direction} {abs(r.contribution):.3f})" for r in explained.reasons]
            )
        columns["reasons"] = pa.array(texts, pa.list_(pa.string()))
    return columns


def score_file(
    model: ScoringModel,
    *,
    input_path: Path,
    output_path: Path,
    id_column: str | None = None,
    reasons: int = 3,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Score every row of a file; rows that fail validation go to a rejects CSV with the reason."""
    id_column = id_column or model.manifest.id_column
    summary = BatchSummary()
    writer: pq.ParquetWriter | None = None
    rejects: list[tuple[str, str]] = []
    try:
        for batch in read_batches(input_path, chunk_rows):
            if summary.rows_read == 0:
                check_columns(model.schema, batch.schema.names)
                if id_column not in batch.schema.names:
                    raise ValueError(f"input lacks the id column {id_column!r}")
            summary.rows_read += batch.num_rows
            matrix, problems = encode_batch(model.schema, batch)
            ids = batch.column(batch.schema.names.index(id_column)).cast(pa.string())
            valid = np.array([p is None for p in problems], dtype=bool)
            for i in np.flatnonzero(~valid):
                rejects.append((str(ids[int(i)].as_py()), str(problems[int(i)])))
            if valid.any():
                columns = {id_column: ids.filter(pa.array(valid))}
                columns.update(result_columns(model, matrix[valid], reasons))
                table = pa.table(columns)
                if writer is None:
                    output_path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(output_path, table.schema)
                writer.write_table(table)
                summary.rows_scored += int(valid.sum())
            if on_chunk is not None:
                on_chunk(batch.num_rows)
    finally:
        if writer is not None:
            writer.close()
    summary.rows_rejected = len(rejects)
    if rejects:
        summary.rejects_path = output_path.with_name(output_path.stem + ".rejects.csv")
        with summary.rejects_path.open("w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow([id_column, "reason"])
            out.writerows(rejects)
    return summary
