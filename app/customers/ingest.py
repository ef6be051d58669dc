"""Loading a file of events (CSV or Parquet, one event per row) through the intake path.

Columns are named as in the columns form of ``POST /v1/events``. The file is read in chunks;
each chunk's valid rows are stored in one transaction by ``record_events`` (the API's own
function), its bad rows set aside with their first problem. Event ids make a rerun after a
crash harmless: chunks already stored come back as duplicates and are not stored twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlalchemy.orm import Session

from app.customers import service
from app.customers.schemas import COMMON_FIELDS, PAYLOAD_COLUMNS
from app.customers.service import FieldError, IntakeRules, check_rows
from app.security.pseudonyms import Pseudonymizer

COLUMNS = frozenset((*COMMON_FIELDS, *PAYLOAD_COLUMNS))
REQUIRED = COMMON_FIELDS
NUMBERS = frozenset({"age", "income", "monthly_profit", "balance", "amount", "duration_s"})
CSV_BLOCK_BYTES = 4 << 20


class EventFileError(Exception):
    """A file that cannot be loaded at all; the message names the file and the column."""


@dataclass
class IngestSummary:
    """What a load did."""

    run_id: str
    rows: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    chunks: int = 0
    rejects_path: Path | None = None
    rejects: list[tuple[int, str, FieldError]] = field(default_factory=list)


@dataclass(frozen=True)
class EventFile:
    """A readable events file: its rows, and the chunks to read them in."""

    path: Path
    rows: int
    chunks: Callable[[int], Iterator[pa.Table]]


def open_event_file(path: Path) -> EventFile:
    """Check the file's columns and count its rows, or raise ``EventFileError``."""
    if not path.is_file():
        raise EventFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _csv_file(path)
        if suffix in (".parquet", ".pq"):
            return _parquet_file(path)
    except pa.ArrowException as error:
        raise EventFileError(f"{path}: not a readable {suffix[1:]} file ({error})") from error
    raise EventFileError(f"{path}: unknown file type {suffix!r}; expected .csv or .parquet")


def _check_names(path: Path, names: list[str]) -> None:
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise EventFileError(
            f"{path}: unknown column {unknown[0]!r}; columns are named as in POST /v1/events"
        )
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise EventFileError(f"{path}: no column {missing[0]!r}; every event needs one")


def _csv_options(names: Iterable[str]) -> pa_csv.ConvertOptions:
    # Text throughout: each value is then read by the event models, as an API body's would be.
    return pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in names}, strings_can_be_null=True
    )


def _csv_file(path: Path) -> EventFile:
    names = list(pa_csv.open_csv(path).schema.names)
    _check_names(path, names)
    options = _csv_options(names)
    read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    counting = pa_csv.ConvertOptions(
        column_types={"event_id": pa.string()}, include_columns=["event_id"]
    )
    rows = sum(batch.num_rows for batch in pa_csv.open_csv(path, convert_options=counting))

    def chunks(chunk_rows: int) -> Iterator[pa.Table]:
        return _rechunk(
            pa_csv.open_csv(path, read_options=read, convert_options=options), chunk_rows
        )

    return EventFile(path=path, rows=rows, chunks=chunks)


def _parquet_file(path: Path) -> EventFile:
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    _check_names(path, list(schema.names))
    casts = {name: _parquet_type(path, name, schema.field(name).type) for name in schema.names}

    def chunks(chunk_rows: int) -> Iterator[pa.Table]:
        batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        for table in _rechunk(batches, chunk_rows):
            yield pa.table(
                {
                    name: column if casts[name] is None else column.cast(casts[name])
                    for name, column in zip(table.column_names, table.columns, strict=True)
                }
            )

    return EventFile(path=path, rows=int(parquet.metadata.num_rows), chunks=chunks)


def _parquet_type(path: Path, name: str, kind: pa.DataType) -> pa.DataType | None:
    """The type to cast a column to (None: as it is), or an error naming the column."""
    if pa.types.is_null(kind):
        return None
    if name == "occurred_at":
        if pa.types.is_timestamp(kind):
            if kind.tz is None:
                raise EventFileError(
                    f"{path}: column 'occurred_at' holds timestamps without a time zone"
                )
            return None
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return None
    elif name in NUMBERS:
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return None
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return None
    elif pa.types.is_integer(kind) or pa.types.is_dictionary(kind):
        return pa.string()  # numeric ids and codes, or categories: their text
    raise EventFileError(f"{path}: column {name!r} holds {kind}, which it cannot be read from")


def _rechunk(batches: Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def ingest_file(
    events_file: EventFile,
    *,
    session_factory: Callable[[], Session],
    rules: IntakeRules,
    tenant: str | None,
    pseudonymizer: Pseudonymizer | None,
    chunk_rows: int,
    on_chunk: Callable[[int], None] = lambda rows: None,
) -> IngestSummary:
    """Validate and store the file chunk by chunk (one transaction each); count what
    happened. Reading errors half-way (a malformed CSV line) raise ``EventFileError``."""
    summary = IngestSummary(run_id=uuid.uuid4().hex[:12])
    chunks = events_file.chunks(chunk_rows)
    while True:
        try:
            table = next(chunks, None)
        except pa.ArrowException as error:
            raise EventFileError(f"{events_file.path}: {error}") from error
        if table is None:
            return summary
        # A missing value is null, or NaN as pandas writes one in a float column.
        rows = [
            {name: value for name, value in row.items() if value is not None and value == value}
            for row in table.to_pylist()
        ]
        received_at = datetime.now(UTC)
        events, rejected = check_rows(rows, rules=rules, now=received_at)
        with session_factory() as session:
            result = service.record_events(
                session,
                events=events,
                tenant=tenant,
                request_id=f"ingest:{summary.run_id}:{summary.chunks}",
                received_at=received_at,
                pseudonymizer=pseudonymizer,
                material_outflow=rules.material_outflow,
                lifecycle=rules.lifecycle,
                needs=rules.needs,
            )
        first_row = summary.rows + 1
        summary.rejects += [
            (first_row + index, str(rows[index].get("event_id", "")), problem)
            for index, problem in rejected
        ]
        summary.rows += len(rows)
        summary.new += result.new
        summary.duplicates += result.duplicates
        summary.rejected += len(rejected)
        summary.chunks += 1
        on_chunk(len(rows))


def write_rejects(summary: IngestSummary, path: Path) -> None:
    """The bad rows, one a line: row number in the file, event id, field and problem."""
    table = pa.table(
        {
            "row": [row for row, _, _ in summary.rejects],
            "event_id": [event_id for _, event_id, _ in summary.rejects],
            "field": [problem.field for _, _, problem in summary.rejects],
            "reason": [problem.message for _, _, problem in summary.rejects],
        }
    )
    pa_csv.write_csv(table, path)
    summary.rejects_path = path
