"""Scoring a whole file: stream chunks, validate against the schema, predict, write results.

Memory stays flat as the input grows: a few chunks are in memory at a time (one per worker
thread, one queued, one being written), scores stream into a Parquet writer and rejects into a
CSV writer, and nothing is kept per row. Outputs are written under a temporary name and
renamed into place at the end, so a crashed run never leaves a truncated file where a finished
one is expected.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.scoring.arrow import check_columns, encode
from app.scoring.compiled import CompiledModel
from app.scoring.feature_schema import FloatMatrix as FloatArray
from app.scoring.manifest import Objective

if TYPE_CHECKING:  # not imported to run: a compiled model alone scores without LightGBM
    from app.scoring.explain import Explanation
    from app.scoring.model import ScoringModel

    # LightGBM's model (reasons, value models) or its compiled library alone (scores only).
    BatchModel: TypeAlias = ScoringModel | CompiledModel

T = TypeVar("T")
R = TypeVar("R")
# Measured (cvm score, 1M rows, 2 cores): 32k rows ~4% faster than 64k on compiled trees (less
# time with one core idle on the last chunk) and 60 MB less peak memory; 128k and up slower.
CHUNK_ROWS = 32_768
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_BANDS = pa.array(["low", "medium", "high"], pa.string())
_PARTIAL_SUFFIX = ".partial"
# The book's lifecycle column (prospect, new, existing, lost), read when the input has it:
# churn alerts are only for customers the bank can still keep.
STAGE_COLUMN = "lifecycle"


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
    # Each row's lifecycle stage, when the input has the column.
    stages: pa.Array | None = None

    def table(self, id_column: str) -> pa.Table:
        """The chunk as written to the output file."""
        return pa.table({id_column: self.ids, **self.columns})


class ChunkSink(Protocol):
    """Where scored chunks are persisted, each once (see ``app.batch.persist``)."""

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
    row group holds at most one row group's buffers. Columns are decoded on the calling thread:
    Arrow's own thread pool costs half as much CPU again (measured), and the scorer keeps the
    other cores busy with chunks of their own.
    """
    reader = pq.ParquetFile(file)
    groups = range(reader.metadata.num_row_groups) if row_groups is None else row_groups
    for group in groups:
        yield from reader.iter_batches(
            batch_size=chunk_rows, row_groups=[group], columns=columns, use_threads=False
        )


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


def map_in_order(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int
) -> Generator[R, None, None]:
    """``map(function, items)`` on ``workers`` threads, results in input order.

    At most ``ahead`` items are handed to the threads and not yet taken back, so memory is
    bounded whatever the input's length. Items are drawn on the caller's thread.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cvm-batch") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the consumer stopped early (an error, an interrupt): drop what has not run
            for future in pending:
                future.cancel()


def result_columns(
    model: BatchModel, matrix: FloatArray, reasons: int, *, threads: int | None = None
) -> dict[str, pa.Array]:
    """The score columns of one validated chunk (and its top reasons when asked)."""
    manifest = model.manifest
    texts = None
    if reasons:
        if isinstance(model, CompiledModel):
            raise ValueError("reasons are worded from LightGBM: load the model with it")
        explanation = model.explain(matrix)
        outputs = model.probabilities_from_raw(explanation.raw_score)
        # The reasons of the class predicted (multiclass), of the positive class (binary).
        predicted = outputs.argmax(axis=1) if outputs.ndim == 2 else np.zeros(len(outputs), int)
        texts = reason_texts(model, matrix, explanation, predicted, top=reasons)
    else:
        outputs = model.predict(matrix, threads=threads)
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
        # A compiled model alone never has a value model (load_compiled_model).
        if not isinstance(model, CompiledModel) and model.value_booster is not None:
            columns["expected_value"] = pa.array(
                outputs * model.expected_value_if_converted(matrix, threads=threads)
            )
    else:
        class_index = outputs.argmax(axis=1)
        columns["prediction"] = pa.array(model.classes, pa.string()).take(pa.array(class_index))
        columns["probability"] = pa.array(outputs[np.arange(len(outputs)), class_index])
    if texts is not None:
        columns["reasons"] = pa.array(texts, pa.list_(pa.string()))
    return columns


def reason_texts(
    model: ScoringModel,
    matrix: FloatArray,
    explanation: Explanation,
    class_index: npt.NDArray[np.int64],
    *,
    top: int,
) -> list[list[str]]:
    """Each row's top reasons for one class, worded."""
    texts = []
    for row in range(len(matrix)):
        explained = model.explain_row(matrix, explanation, row, int(class_index[row]), top=top)
        texts.append(
            [f"{r.text} ({r.direction} {abs(r.contribution):.3f})" for r in explained.reasons]
        )
    return texts


def score_chunk(
    model: BatchModel,
    batch: pa.RecordBatch,
    *,
    index: int,
    id_column: str,
    reasons: int,
    threads: int | None = None,
) -> ScoredChunk:
    """Validate, encode and score one chunk; rows that fail validation come back as rejects."""
    encoded = encode(model.schema, batch)
    ids = batch.column(id_column).cast(pa.string())
    names = batch.schema.names
    stages = batch.column(STAGE_COLUMN).cast(pa.string()) if STAGE_COLUMN in names else None
    rejected = np.flatnonzero(encoded.problem_codes)
    rejects = [(str(ids[int(i)].as_py()), str(encoded.problem(int(i)))) for i in rejected]
    matrix = encoded.matrix
    if len(rejected):
        valid = pa.array(encoded.valid)
        ids = ids.filter(valid)
        stages = None if stages is None else stages.filter(valid)
        matrix = matrix[encoded.valid]
    columns = result_columns(model, matrix, reasons, threads=threads) if len(matrix) else {}
    return ScoredChunk(
        index=index, ids=ids, columns=columns, matrix=matrix, rejects=rejects, stages=stages
    )


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
                # Dictionary pages only for the labels (band, class, reasons): ids and scores
                # are unique per row, and trying a dictionary on them halves the writer's
                # speed for nothing (measured).
                labels = [
                    f.name
                    for f in table.schema
                    if f.name != self.id_column and not pa.types.is_floating(f.type)
                ]
                self.writer = pq.ParquetWriter(
                    _partial(self.output_path), table.schema, use_dictionary=labels
                )
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
    model: BatchModel,
    batches: Iterable[pa.RecordBatch],
    *,
    output_path: Path,
    id_column: str,
    reasons: int,
    rejects_path: Path | None = None,
    sink: ChunkSink | None = None,
    on_chunk: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> BatchSummary:
    """Score chunks into ``output_path`` (Parquet) and its rejects CSV; persist each to ``sink``.

    ``workers`` chunks (default: the model's thread count) are validated, encoded and predicted
    side by side, each on one thread, while this thread reads the next chunks and writes the
    finished ones in input order.
    """
    workers = workers or model.threads
    # One chunk per thread rather than one chunk on every thread: Arrow, numpy and LightGBM all
    # release the GIL, and no thread waits at an OpenMP barrier for a core busy elsewhere.
    threads = max(1, model.threads // workers)
    summary = BatchSummary()
    outputs = _Outputs(output_path, rejects_path or rejects_path_for(output_path), id_column)

    def score(item: tuple[int, pa.RecordBatch]) -> ScoredChunk:
        index, batch = item
        return score_chunk(
            model, batch, index=index, id_column=id_column, reasons=reasons, threads=threads
        )

    scored = map_in_order(score, enumerate(batches), workers=workers, ahead=workers + 1)
    finished = False
    try:
        with closing(scored):
            for chunk in scored:
                outputs.write(chunk)
                rows = len(chunk.ids) + len(chunk.rejects)
                summary.chunks += 1
                summary.rows_read += rows
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
                    on_chunk(rows)
        finished = True
    finally:
        summary.rejects_path = outputs.close(finished=finished)
    return summary


def score_file(
    model: BatchModel,
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
    if STAGE_COLUMN in available:
        wanted.append(STAGE_COLUMN)
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
