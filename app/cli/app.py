"""The root ``cvm`` Typer app and what every command group shares: console, progress, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session


def example(*invocations: str) -> str:
    """A command's help epilog: invocations to copy, one a line."""
    return "Example:\n" + "\n".join(f"  {line}" for line in invocations)


cli = typer.Typer(
    help="CVM: customer value scoring for retail banks.",
    epilog=example(
        "cvm synth --customers 30000 --months 18 --out var/book",
        "cvm COMMAND --help   # each command's options, with an example",
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
# Messages, progress and errors go to stderr; stdout carries only what a script may read.
console = Console(stderr=True)


def progress_bar() -> Progress:
    """A progress bar on the shared console: spinner, bar, done/total, elapsed, remaining."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def fail(message: str) -> typer.Exit:
    """Print the error on one line (never wrapped, brackets shown as they are); the exit
    (code 2) for the caller to raise."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def database_engine() -> Iterator[Engine]:
    """The configured database's engine for one command, disposed after (its pooled
    connections closed even when the command fails)."""
    from app.config import get_settings
    from app.db.session import create_db_engine

    engine = create_db_engine(get_settings().database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def database_session(*, writes: bool = True) -> Iterator[Session]:
    """A session of the configured database for one command; its engine is disposed after.

    A command that writes is declared a writer (``app.db.session.writing``): on SQLite a
    transaction that reads and then writes fails at once ("database is locked") when a running
    service commits in between, where a declared one waits its turn."""
    from app.db.session import create_session_factory, writing

    with database_engine() as engine, create_session_factory(engine)() as session:
        yield writing(session) if writes else session
