"""Errors raised by the persistence layer, and how database errors are described."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


class PersistenceUnavailable(Exception):
    """Scores could not be committed; nothing of the failed transaction was written."""


class OutcomeUnknown(PersistenceUnavailable):
    """The writer stopped after taking the write and before confirming it: the rows may or
    may not be committed, and nobody in this process can tell."""


def describe_db_error(exc: BaseException) -> str:
    """The driver's error class and first message line, without any row values."""
    # SQLAlchemy's full text and the driver's DETAIL lines can carry row values (customer
    # features), which must not reach logs or HTTP responses.
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(source).strip()
    return f"{type(source).__name__}: {text.splitlines()[0]}" if text else type(source).__name__
