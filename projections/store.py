"""Where projections keep their views: SQLite or PostgreSQL, one interface.

Views are written with ``?`` placeholders and three column types named in
braces (``{decimal}``, ``{timestamp}``, ``{bigint}``); each store turns them
into its own SQL. Decimals and timestamps cross the boundary through
``encode_*``/``decode_*`` so that both backends give back the same Python
values, which is what lets one test suite run on both.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

Row = tuple[Any, ...]

SHADOW = "sm_rebuild"
"""Where a rebuild writes its copy of the views: the schema (PostgreSQL) or the
attached database's name (SQLite) that ``ViewStore.beside`` exposes it under."""


def customer_ref_page(after: str | None, prefix: str) -> tuple[str, list[Any]]:
    """The ``AND …`` clauses (and their parameters) of a page of customerRefs: those
    after a cursor, and those starting with ``prefix`` when one is given. ``substr``,
    not ``LIKE``: a prefix with % or _ means those characters."""
    sql, params = "", []
    if after is not None:
        sql += " AND customer_ref > ?"
        params.append(after)
    if prefix:
        sql += " AND substr(customer_ref, 1, length(?)) = ?"
        params += [prefix, prefix]
    return sql, params


class StoreBusyError(RuntimeError):
    """Another process holds the lock this one asked for."""


@dataclass(frozen=True)
class Column:
    name: str
    in_primary_key: bool


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None:
        """Insert rows; ``columns`` are (name, PostgreSQL type) pairs; ``on_conflict`` is
        an ``ON CONFLICT ...`` clause (at most one row per conflict key in ``rows``)."""

    def select_keys(
        self,
        table: str,
        key: Sequence[tuple[str, str]],
        columns: str,
        keys: Sequence[Sequence[Any]],
    ) -> list[Row]:
        """The rows whose ``key`` columns equal one of ``keys``: key values first, then
        ``columns``; ``key`` is (name, PostgreSQL array element type) pairs."""


class ViewStore(ABC):
    """A database for views and their tracking positions."""

    types: dict[str, str]
    is_distinct: str  # the null-safe "not equal" operator

    @abstractmethod
    def transaction(self) -> Any:
        """A context manager yielding a ``Tx``; commits on success, rolls back on error."""

    # -- a shadow copy, for rebuilds ------------------------------------------

    @abstractmethod
    def shadow(self) -> ViewStore:
        """A store of the same kind for a copy of these views, created when missing.

        Its tables live apart from these (PostgreSQL: the ``sm_rebuild`` schema
        of the same database; SQLite: a file next to this one), so that it can
        be filled while these views keep serving.
        """

    @abstractmethod
    def drop_shadow(self) -> None:
        """Delete the shadow copy (close the store ``shadow()`` returned first)."""

    @abstractmethod
    def beside(self, shadow: ViewStore, *, write: bool) -> AbstractContextManager[Tx]:
        """One transaction on these views in which the shadow's tables are ``sm_rebuild.<t>``.

        Unqualified names are these views' tables. A read-only transaction
        (``write=False``) sees one snapshot of both from its first statement on.
        """

    @abstractmethod
    def shadow_columns(self, tx: Tx, table: str) -> list[Column]:
        """The columns of a shadow table, in order, inside a ``beside`` transaction."""

    @abstractmethod
    def live_columns(self, tx: Tx, table: str) -> list[str]:
        """The column names of one of these views' tables, inside a ``beside`` transaction."""

    @abstractmethod
    def exclusive(self, name: str) -> AbstractContextManager[Callable[[], bool]]:
        """Hold a named lock across processes; ``StoreBusyError`` when another holds it.

        Gives a check that says whether the lock is still held (PostgreSQL: its
        connection may be cut, which frees the lock for another process).
        """

    @abstractmethod
    def encode_decimal(self, value: Decimal | None) -> Any: ...

    @abstractmethod
    def decode_decimal(self, value: Any) -> Decimal | None: ...

    @abstractmethod
    def encode_time(self, value: datetime | None) -> Any: ...

    @abstractmethod
    def decode_time(self, value: Any) -> datetime | None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise when the database cannot be reached."""

    def close(self) -> None:
        return None

    def ddl(self, statement: str) -> str:
        return statement.format(**self.types)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, [tuple(r) for r in rows])

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None:
        names = ", ".join(name for name, _ in columns)
        marks = ", ".join("?" * len(columns))
        self.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) {on_conflict}", rows)

    def select_keys(
        self,
        table: str,
        key: Sequence[tuple[str, str]],
        columns: str,
        keys: Sequence[Sequence[Any]],
    ) -> list[Row]:
        # In process, a statement per key through the primary key's index costs
        # microseconds; ``(a, b) IN (VALUES ...)`` was slower here.
        names = ", ".join(name for name, _ in key)
        where = " AND ".join(f"{name} = ?" for name, _ in key)
        cur = self.conn.cursor()
        sql = f"SELECT {names}, {columns} FROM {table} WHERE {where}"
        found: list[Row] = []
        for k in keys:
            found += cur.execute(sql, tuple(k)).fetchall()
        return found


class SqliteViewStore(ViewStore):
    """Views in a SQLite file (WAL mode, so readers never wait for the projection)."""

    types = {"decimal": "TEXT", "timestamp": "TEXT", "bigint": "INTEGER"}
    is_distinct = "IS NOT"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # Views are derived data: a power loss can cost their last commits,
        # which the runner then re-derives from the event log.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _shadow_path(self) -> Path:
        path = Path(self.path)
        return path.with_name(f"{path.stem}.rebuild{path.suffix}")

    def shadow(self) -> ViewStore:
        return SqliteViewStore(self._shadow_path())

    def drop_shadow(self) -> None:
        path = self._shadow_path()
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)

    @contextmanager
    def beside(self, shadow: ViewStore, *, write: bool) -> Iterator[Tx]:
        assert isinstance(shadow, SqliteViewStore)
        # A connection of its own: ATTACH is not allowed inside a transaction,
        # and the thread's usual connection is better left as it was.
        conn = self._connect()
        try:
            conn.execute(f"ATTACH DATABASE ? AS {SHADOW}", (shadow.path,))
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def shadow_columns(self, tx: Tx, table: str) -> list[Column]:
        rows = tx.execute(f"PRAGMA {SHADOW}.table_info({table})")
        return [Column(name, bool(pk)) for _, name, _, _, _, pk in rows]

    def live_columns(self, tx: Tx, table: str) -> list[str]:
        return [row[1] for row in tx.execute(f"PRAGMA main.table_info({table})")]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[Callable[[], bool]]:
        with open(f"{self.path}.{name}.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreBusyError(f"{name} is running in another process") from None
            try:
                yield lambda: True  # an open file keeps its lock
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SqliteTx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def encode_decimal(self, value: Decimal | None) -> Any:
        return None if value is None else str(value)

    def decode_decimal(self, value: Any) -> Decimal | None:
        return None if value is None else Decimal(value)

    def encode_time(self, value: datetime | None) -> Any:
        # A fixed-width UTC form sorts as text in time order (isoformat: twice
        # as fast as the equivalent strftime, which was a tenth of a rebuild).
        if value is None:
            return None
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.isoformat(timespec="microseconds")

    def decode_time(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# A change that returns no rows: safe to send without waiting for its result.
_NO_ROWS = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b(?!.*\bRETURNING\b)", re.IGNORECASE | re.DOTALL)


class _PostgresTx:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        pipeline: psycopg.Pipeline | None = None,
        unlogged: bool = False,
    ) -> None:
        self.conn = conn
        self.pipeline = pipeline
        self.unlogged = unlogged

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if self.unlogged and sql.startswith("CREATE TABLE"):
            # Every table of a scratch store, the runner's tracking table included.
            sql = sql.replace("CREATE TABLE", "CREATE UNLOGGED TABLE", 1)
        cur = self.conn.execute(sql.replace("?", "%s"), tuple(params))
        if self.pipeline is not None:
            if _NO_ROWS.match(sql):
                # Sent with the next statement that waits: one round trip
                # less. An error in it is raised there (or at commit) and
                # rolls the whole transaction back all the same.
                return []
            self.pipeline.sync()
        return cur.fetchall() if cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])

    def insert_many(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        on_conflict: str = "",
    ) -> None:
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        if not on_conflict and self.pipeline is None:
            # COPY in binary: psycopg's C code writes the rows, no array to build.
            with (
                self.conn.cursor() as cur,
                cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types([kind for _, kind in columns])
                for row in rows:
                    copy.write_row(row)
            return
        # One statement with one array per column, sent in binary: a batch of
        # thousands of rows costs one round trip instead of one per row.
        arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
        self.conn.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}",
            [list(column) for column in zip(*rows, strict=True)],
        )

    def select_keys(
        self,
        table: str,
        key: Sequence[tuple[str, str]],
        columns: str,
        keys: Sequence[Sequence[Any]],
    ) -> list[Row]:
        # One statement for a whole batch's keys: one array per key column, joined.
        if not keys:
            return []
        names = [name for name, _ in key]
        arrays = ", ".join(f"%b::{kind}[]" for _, kind in key)
        on = " AND ".join(f"t.{name} = k.{name}" for name in names)
        cur = self.conn.execute(
            f"SELECT {', '.join(f't.{n}' for n in names)}, {columns} FROM {table} t"
            f" JOIN unnest({arrays}) AS k({', '.join(names)}) ON {on}",
            [list(column) for column in zip(*keys, strict=True)],
        )
        if self.pipeline is not None:
            self.pipeline.sync()
        return cur.fetchall()


class PostgresViewStore(ViewStore):
    types = {"decimal": "NUMERIC", "timestamp": "TIMESTAMPTZ", "bigint": "BIGINT"}
    is_distinct = "IS DISTINCT FROM"

    def __init__(
        self,
        conninfo: str,
        max_size: int = 5,
        schema: str | None = None,
        pipeline: bool = False,
        scratch: bool = False,
    ) -> None:
        """Views in ``schema`` when given (its connections search only it), else the default.

        With ``pipeline``, transactions run in psycopg's pipeline mode: an
        INSERT, UPDATE or DELETE without RETURNING goes out without waiting for
        its answer, so a projection's read-then-upsert per row costs one round
        trip instead of two. Its error, if any, surfaces at a later statement
        or at commit, and still rolls the whole transaction back.

        A ``scratch`` store (a rebuild's shadow) creates its tables UNLOGGED and
        commits without waiting for the WAL flush: PostgreSQL writes no WAL for
        their rows. A database crash empties every one of them (tracking
        included) and an OS crash may lose the last commits, rows and tracking
        together: either way the rebuild resumes from a consistent position.
        """
        self.conninfo = conninfo
        self.pipelined = pipeline
        self.scratch = scratch
        kwargs: dict[str, Any] = {"autocommit": False}
        options = [] if schema is None else [f"-c search_path={schema}"]
        if scratch:
            options.append("-c synchronous_commit=off")
        if options:
            kwargs["options"] = " ".join(options)
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo, min_size=1, max_size=max_size, open=True, kwargs=kwargs
        )

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
            if not self.pipelined:
                with conn.transaction():
                    yield _PostgresTx(conn, unlogged=self.scratch)
                return
            with conn.pipeline() as pipeline, conn.transaction():
                yield _PostgresTx(conn, pipeline, unlogged=self.scratch)

    def shadow(self) -> ViewStore:
        with self.transaction() as tx:
            tx.execute(f"CREATE SCHEMA IF NOT EXISTS {SHADOW}")
        return PostgresViewStore(self.conninfo, max_size=2, schema=SHADOW, scratch=True)

    def drop_shadow(self) -> None:
        with self.transaction() as tx:
            tx.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")

    @contextmanager
    def beside(self, shadow: ViewStore, *, write: bool) -> Iterator[Tx]:
        with self.pool.connection() as conn, conn.transaction():
            if not write:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield _PostgresTx(conn)

    def shadow_columns(self, tx: Tx, table: str) -> list[Column]:
        rows = tx.execute(
            "SELECT a.attname, COALESCE(a.attnum = ANY(i.indkey), false) FROM pg_attribute a"
            " LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary"
            " WHERE a.attrelid = ?::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (f"{SHADOW}.{table}",),
        )
        return [Column(name, bool(pk)) for name, pk in rows]

    def live_columns(self, tx: Tx, table: str) -> list[str]:
        rows = tx.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = ?::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        return [name for (name,) in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[Callable[[], bool]]:
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)
        # A session lock on a connection of its own: it lasts as long as we hold
        # the connection, and a killed process loses it with its connection.
        conn = psycopg.connect(self.conninfo, autocommit=True)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not (row and row[0]):
                raise StoreBusyError(f"{name} is running in another process")
            try:
                yield lambda: _alive(conn)
            finally:
                # A cut connection has nothing left to unlock.
                if _alive(conn):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()

    def encode_decimal(self, value: Decimal | None) -> Any:
        return value

    def decode_decimal(self, value: Any) -> Decimal | None:
        return None if value is None else Decimal(value)

    def encode_time(self, value: datetime | None) -> Any:
        return value

    def decode_time(self, value: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def ping(self) -> None:
        with self.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self.pool.close()


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """The session (and so its session locks) is still there."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
