"""Throw-away databases for tests: a PostgreSQL database per session, a temporary SQLite file.

``migrated_sqlite_database`` and ``migrated_postgres_database`` give one at the migrations'
head as a copy of a database this process migrated once (by running every migration, the first
time it is asked for): running the ~30 migrations for each of dozens of tests cost a minute of
the suite's CPU. The migrations' own tests (up, down and up again, with rows) run them for real.

The PostgreSQL server defaults to ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``;
``CVM_TEST_POSTGRES_URL`` points the tests at another server (its database part is ignored).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from app.db.migrate import upgrade
from app.db.session import IMMEDIATE_OPTION

POSTGRES_SERVER_URL_ENV = "CVM_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TEST_DATABASE_PREFIX = "cvm_test_"


def postgres_server_url() -> URL:
    """The server on which throw-away databases are created."""
    return make_url(os.environ.get(POSTGRES_SERVER_URL_ENV, DEFAULT_POSTGRES_SERVER_URL))


def _run_on_maintenance_db(server: URL, sql: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


def create_postgres_database(
    server_url: URL | str | None = None, *, template: str | None = None
) -> str:
    """Create a ``cvm_test_<hex>`` database (empty, or a copy of ``template``); its URL."""
    server = make_url(server_url) if server_url is not None else postgres_server_url()
    name = f"{TEST_DATABASE_PREFIX}{secrets.token_hex(6)}"
    copied = f' TEMPLATE "{template}"' if template else ""
    _run_on_maintenance_db(server, f'CREATE DATABASE "{name}"{copied}')
    return server.set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, even with sessions still open."""
    database_url = make_url(url)
    name = database_url.database or ""
    if not name.startswith(TEST_DATABASE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a throw-away test database")
    _run_on_maintenance_db(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_postgres_database(server_url: URL | str | None = None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the duration of the block."""
    url = create_postgres_database(server_url)
    try:
        yield url
    finally:
        drop_postgres_database(url)


def sqlite_file_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


@contextmanager
def temporary_sqlite_database() -> Iterator[str]:
    """The URL of a SQLite file in a temporary folder removed afterwards (with -wal/-shm)."""
    with tempfile.TemporaryDirectory(prefix="cvm-test-") as folder:
        yield sqlite_file_url(Path(folder) / "cvm.db")


_TEMPLATES: dict[str, str] = {}
_TEMPLATE_LOCK = threading.Lock()


def _template(kind: str, build: Callable[[], str]) -> str:
    with _TEMPLATE_LOCK:
        if kind not in _TEMPLATES:
            _TEMPLATES[kind] = build()
        return _TEMPLATES[kind]


def _build_sqlite_template() -> str:
    folder = tempfile.mkdtemp(prefix="cvm-template-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "cvm.db"
    upgrade(sqlite_file_url(path))
    # One self-contained file to copy: the write-ahead log folded in and switched off (the
    # engine of each copy switches it on again).
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    return str(path)


def _build_postgres_template() -> str:
    url = create_postgres_database()
    atexit.register(drop_postgres_database, url)
    upgrade(url)
    return make_url(url).database or ""


def migrated_sqlite_file(path: Path) -> str:
    """The URL of a SQLite file made at ``path``, at the migrations' head (a copy of this
    process's template)."""
    shutil.copyfile(_template("sqlite", _build_sqlite_template), path)
    return sqlite_file_url(path)


@contextmanager
def migrated_sqlite_database() -> Iterator[str]:
    """A temporary SQLite file at the migrations' head."""
    with tempfile.TemporaryDirectory(prefix="cvm-test-") as folder:
        yield migrated_sqlite_file(Path(folder) / "cvm.db")


@contextmanager
def migrated_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database at the migrations' head (a copy of this process's template)."""
    url = create_postgres_database(template=_template("postgres", _build_postgres_template))
    try:
        yield url
    finally:
        drop_postgres_database(url)


class TcpProxy:
    """A TCP forwarder that can be cut and restored, to simulate a database server outage.

    ``stop`` closes the listening port and severs every open connection, as a crashed or
    unreachable server would; ``start`` listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        """The local port clients connect to (fixed after the first ``start``)."""
        return self._port

    def start(self) -> None:
        """Accept and forward connections."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen()
        listener.settimeout(0.05)
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._stopped.clear()
        self._spawn(self._accept_loop, listener)

    def stop(self) -> None:
        """Close the port and sever every forwarded connection."""
        self._stopped.set()
        with self._lock:
            doomed = list(self._sockets)
            self._sockets.clear()
        for sock in doomed:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        for sock in doomed:
            sock.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._stopped.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                self._spawn(self._pump, client, upstream)
                self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, destination: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                destination.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                destination.shutdown(socket.SHUT_WR)


def touch(connection: Connection, table: str, text_column: str) -> None:
    """A write that leaves every value as it was and still commits something: ``text_column``
    of each row of ``table`` changed and changed back. (SQLite skips an update to the same
    value: "SET name = name" commits nothing, so no reader's snapshot goes stale.)"""
    connection.exec_driver_sql(f"UPDATE {table} SET {text_column} = {text_column} || '.'")
    connection.exec_driver_sql(
        f"UPDATE {table} SET {text_column} = substr({text_column}, 1, length({text_column}) - 1)"
    )


@contextmanager
def another_writer_committing(
    engine: Engine, table: str, text_column: str, hold_s: float = 0.5
) -> Iterator[None]:
    """Another connection writes ``table`` (``touch``) and holds its write lock (SQLite's,
    taken up front; PostgreSQL's on the rows it touched) while the block runs, committing
    ``hold_s`` after it took it: a deferred unit of work in the block that reads, then writes,
    finds a commit in between (on SQLite: "database is locked" at once); a declared one waits."""
    holding = threading.Event()

    def other_writer() -> None:
        with engine.connect() as connection:
            connection.execution_options(**{IMMEDIATE_OPTION: True})
            touch(connection, table, text_column)
            holding.set()
            time.sleep(hold_s)
            connection.commit()

    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        assert holding.wait(5), "the other writer did not take the lock"
        yield
    finally:
        thread.join(10)
