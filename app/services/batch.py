"""Scoring a whole file: stream chunks, validate against the schema, predict, write results.

Memory stays flat as the input grows: one chunk is in memory at a time (plus the one being read
ahead), scores stream into a Parquet writer and rejects into a CSV writer, and nothing is kept
per row. Outputs are written under a temporary name and renamed into place at the end, so a
crashed run never leaves a truncated file where a finished one is expected.
"""

from __future__ import annotations

import csv
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.ml.arrow import check_columns, encode_batch
from app.ml.manifest import Objective
from app.ml.model import FloatArray, ScoringModel

T = TypeVar("T")
CHUNK_ROWS = 65_536
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_BANDS = pa.array(["low", "medium", "high"], pa.string())
_PARTIAL_SUFFIX = ".partial"


@dataclass
class BatchSummary:
    """What a batch run did, for the CLI to print."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rejects_path: Path | None = None
    chunks: int = 0
    chunks_persisted: int = 0
    chunks_skipped: int = 0
    rows_persisted: int = 0
    run_id: str | None = None

    def add(self, other: BatchSummary) -> None:
        """Fold in the counts of another part of the same run (Dask partitions)."""
        self.rows_read += other.rows_read
        self.rows_scored += other.rows_scored
        self.rows_rejected += other.rows_rejected
        self.chunks += other.chunks
        self.chunks_persisted += other.chunks_persisted
        self.chunks_skipped += other.chunks_skipped
        self.rows_persisted += other.rows_persisted


@dataclass(frozen=True)
class ScoredChunk:
    """The valid rows of one chunk: ids, score columns and the features they were scored on."""

    index: int
    ids: pa.Array
    columns: dict[str, pa.Array]
    matrix: FloatArray
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def table(self, id_column: str) -> pa.Table:
        """The chunk as written to the output file."""
        return pa.table({id_column: self.ids, **self.columns})


class ChunkSink(Protocol):
    """Where scored chunks are persisted, each once (see ``app.services.batch_persist``)."""

    def write(self, chunk: ScoredChunk) -> int | None:
        """Persist one chunk in one transaction; rows written, or None if already committed."""
        ...


def is_parquet(path: Path) -> bool:
    """Parquet file or a folder of Parquet files (a dataset); anything else is read as CSV."""
    return path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir()


def parquet_files(path: Path) -> list[Path]:
    """The files of a Parquet input, in a stable order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in PARQUET_SUFFIXES)
    return [path]


def count_rows(path: Path) -> int | None:
    """Rows in the input when cheap to know (Parquet metadata), for the progress bar."""
    if is_parquet(path):
        return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in parquet_files(path))
    return None


def input_columns(path: Path) -> list[str]:
    """Column names of the input, read from Parquet metadata or the CSV header."""
    if is_parquet(path):
        files = parquet_files(path)
        if not files:
            raise ValueError(f"no Parquet files under {path}")
        return list(pq.ParquetFile(files[0]).schema_arrow.names)
    return list(_csv_reader(path).schema.names)


def rechunk(batches: Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``chunk_rows`` rows (the last may be shorter): stable chunk numbers."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        start = 0
        while start < batch.num_rows:
            take = min(chunk_rows - held, batch.num_rows - start)
            pending.append(batch.slice(start, take))
            held += take
            start += take
            if held == chunk_rows:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _csv_reader(path: Path) -> pacsv.CSVStreamingReader:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        # Blank cells are missing values, as they are to training's reader.
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )


def iter_row_groups(
    file: Path | str,
    chunk_rows: int,
    *,
    row_groups: Iterable[int] | None = None,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Batches of a Parquet file, one reader per row group.

    A single ``iter_batches`` over a whole file keeps allocations as it goes (about 1 MB per
    64k-row batch, measured with pyarrow 26): memory would grow with the file. A reader per
    row group holds at most one row group's buffers.
    """
    reader = pq.ParquetFile(file)
    groups = range(reader.metadata.num_row_groups) if row_groups is None else row_groups
    for group in groups:
        yield from reader.iter_batches(batch_size=chunk_rows, row_groups=[group], columns=columns)


def read_batches(
    path: Path, chunk_rows: int = CHUNK_ROWS, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file or dataset, or a CSV file (delimiter sniffed), in equal chunks."""
    if is_parquet(path):
        raw: Iterable[pa.RecordBatch] = (
            batch
            for file in parquet_files(path)
            for batch in iter_row_groups(file, chunk_rows, columns=columns)
        )
    else:
        raw = _csv_reader(path)
    return rechunk(raw, chunk_rows)


def read_ahead(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Run an iterator on a thread of its own, at most ``depth`` items ahead of the consumer."""
    slots: queue.Queue[T | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: T | BaseException | None) -> bool:
        # Never block for good: the consumer may have stopped early (error, interrupt).
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(None)
        except BaseException as error:  # handed to the consumer, raised there
            offer(error)

    thread = threading.Thread(target=produce, name="cvm-batch-reader", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


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
            codes = np.where(
                outputs >= manifest.thresholds["high"],
                2,
                np.where(outputs >= manifest.thresholds["medium"], 1, 0),
            ).astype(np.int8)
            columns["band"] = _BANDS.take(pa.array(codes))
        if model.value_booster is not None:
            columns["expected_value"] = pa.array(
                outputs * model.expected_value_if_converted(matrix)
            )
        class_index = np.zeros(len(matrix), dtype=np.int64)
    else:
        class_index = outputs.argmax(axis=1)
        columns["prediction"] = pa.array(model.classes, pa.string()).take(pa.array(class_index))
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


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk validated and encoded, not yet scored."""

    index: int
    rows: int
    ids: pa.Array
    matrix: FloatArray
    rejects: list[tuple[str, str]]


def prepare_chunk(
    model: ScoringModel, batch: pa.RecordBatch, *, index: int, id_column: str
) -> PreparedChunk:
    """Validate and encode one chunk; rows that fail validation come back as rejects."""
    matrix, problems = encode_batch(model.schema, batch)
    ids = batch.column(batch.schema.get_field_index(id_column)).cast(pa.string())
    valid = np.fromiter((p is None for p in problems), dtype=bool, count=len(problems))
    rejected = np.flatnonzero(~valid)
    rejects = [(str(ids[int(i)].as_py()), str(problems[int(i)])) for i in rejected]
    if len(rejected):
        ids = ids.filter(pa.array(valid))
        matrix = matrix[valid]
    return PreparedChunk(index, batch.num_rows, ids, matrix, rejects)


def finish_chunk(model: ScoringModel, prepared: PreparedChunk, *, reasons: int) -> ScoredChunk:
    """Score a prepared chunk."""
    columns = result_columns(model, prepared.matrix, reasons) if len(prepared.matrix) else {}
    return ScoredChunk(
        index=prepared.index,
        ids=prepared.ids,
        columns=columns,
        matrix=prepared.matrix,
        rejects=prepared.rejects,
    )


def score_chunk(
    model: ScoringModel, batch: pa.RecordBatch, *, index: int, id_column: str, reasons: int
) -> ScoredChunk:
    """Validate, encode and score one chunk; rows that fail validation come back as rejects."""
    prepared = prepare_chunk(model, batch, index=index, id_column=id_column)
    return finish_chunk(model, prepared, reasons=reasons)


def rejects_path_for(output_path: Path) -> Path:
    """The rejects CSV written beside an output file."""
    return output_path.with_name(output_path.stem + ".rejects.csv")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + _PARTIAL_SUFFIX)


class _Outputs:
    """The Parquet writer and rejects CSV of one run, written under temporary names."""

    def __init__(self, output_path: Path, rejects_path: Path, id_column: str) -> None:
        self.output_path = output_path
        self.rejects_path = rejects_path
        self.id_column = id_column
        self.writer: pq.ParquetWriter | None = None
        self.rejects_file: TextIO | None = None
        self.rejects_out: csv.DictWriter[str] | None = None

    def write(self, chunk: ScoredChunk) -> None:
        """Append a chunk's scores and rejects."""
        if chunk.rejects:
            if self.rejects_out is None:
                self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
                self.rejects_file = _partial(self.rejects_path).open(
                    "w", newline="", encoding="utf-8"
                )
                self.rejects_out = csv.DictWriter(
                    self.rejects_file, fieldnames=[self.id_column, "reason"]
                )
                self.rejects_out.writeheader()
            self.rejects_out.writerows({self.id_column: i, "reason": r} for i, r in chunk.rejects)
        if len(chunk.ids):
            table = chunk.table(self.id_column)
            if self.writer is None:
                self.output_path.parent.mkdir(parents=True, exist_ok=True)
                self.writer = pq.ParquetWriter(_partial(self.output_path), table.schema)
            self.writer.write_table(table)

    def close(self, *, finished: bool) -> Path | None:
        """Rename finished files into place (or drop partial ones); the rejects path if any."""
        if self.writer is not None:
            self.writer.close()
        if self.rejects_file is not None:
            self.rejects_file.close()
        if not finished:
            _partial(self.output_path).unlink(missing_ok=True)
            _partial(self.rejects_path).unlink(missing_ok=True)
            return None
        # Stale results of an earlier run would mislead: a run that wrote nothing leaves nothing.
        if self.writer is not None:
            os.replace(_partial(self.output_path), self.output_path)
        else:
            self.output_path.unlink(missing_ok=True)
        if self.rejects_file is None:
            self.rejects_path.unlink(missing_ok=True)
            return None
        os.replace(_partial(self.rejects_path), self.rejects_path)
        return self.rejects_path


def score_batches(
    model: ScoringModel,
    batches: Iterable[pa.RecordBatch],
    *,
    output_path: Path,
    id_column: str,
    reasons: int,
    rejects_path: Path | None = None,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Score chunks into ``output_path`` (Parquet) and its rejects CSV; persist each to ``sink``."""
    summary = BatchSummary()
    outputs = _Outputs(output_path, rejects_path or rejects_path_for(output_path), id_column)
    # Reading, validating and encoding run a chunk ahead on a thread of their own: Arrow and
    # numpy release the GIL, so they overlap with the prediction of the chunk before.
    ahead = read_ahead(
        prepare_chunk(model, batch, index=index, id_column=id_column)
        for index, batch in enumerate(batches)
    )
    finished = False
    try:
        with closing(ahead):
            for prepared in ahead:
                chunk = finish_chunk(model, prepared, reasons=reasons)
                outputs.write(chunk)
                summary.chunks += 1
                summary.rows_read += prepared.rows
                summary.rows_scored += len(chunk.ids)
                summary.rows_rejected += len(chunk.rejects)
                if sink is not None:
                    written = sink.write(chunk)
                    if written is None:
                        summary.chunks_skipped += 1
                    else:
                        summary.chunks_persisted += 1
                        summary.rows_persisted += written
                if on_chunk is not None:
                    on_chunk(prepared.rows)
        finished = True
    finally:
        summary.rejects_path = outputs.close(finished=finished)
    return summary


def score_file(
    model: ScoringModel,
    *,
    input_path: Path,
    output_path: Path,
    id_column: str | None = None,
    reasons: int = 3,
    chunk_rows: int = CHUNK_ROWS,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Score every row of a file; rows that fail validation go to a rejects CSV with the reason."""
    id_column = id_column or model.manifest.id_column
    available = input_columns(input_path)
    check_columns(model.schema, available)
    if id_column not in available:
        raise ValueError(f"input lacks the id column {id_column!r}")
    wanted = [id_column, *(f.column for f in model.schema.features if f.column in available)]
    columns = list(dict.fromkeys(wanted))
    return score_batches(
        model,
        read_batches(input_path, chunk_rows, columns=columns),
        output_path=output_path,
        id_column=id_column,
        reasons=reasons,
        sink=sink,
        on_chunk=on_chunk,
    )
