"""Where projections keep their views: SQLite or PostgreSQL, one interface.

Views are written with ``?`` placeholders and three column types named in
braces (``{decimal}``, ``{timestamp}``, ``{bigint}``); each store turns them
into its own SQL. Decimals and timestamps cross the boundary through
``encode_*``/``decode_*`` so that both backends give back the same Python
values, which is what lets one test suite run on both.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

Row = tuple[Any, ...]


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def insert_many(
        self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert rows; ``columns`` are (name, PostgreSQL array element type) pairs."""


class ViewStore(ABC):
    """A database for views and their tracking positions."""

    types: dict[str, str]

    @abstractmethod
    def transaction(self) -> Any:
        """A context manager yielding a ``Tx``; commits on success, rolls back on error."""

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
        self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
    ) -> None:
        names = ", ".join(name for name, _ in columns)
        marks = ", ".join("?" * len(columns))
        self.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


class SqliteViewStore(ViewStore):
    """Views in a SQLite file (WAL mode, so readers never wait for the projection)."""

    types = {"decimal": "TEXT", "timestamp": "TEXT", "bigint": "INTEGER"}

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # Views are derived data: a power loss can cost their last commits,
            # which the runner then re-derives from the event log.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

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
        # A fixed-width UTC form sorts as text in time order.
        return (
            None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        )

    def decode_time(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.conn.execute(sql.replace("?", "%s"), tuple(params))
        return cur.fetchall() if cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])

    def insert_many(
        self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
    ) -> None:
        # One statement with one array per column, sent in binary: a batch of
        # thousands of rows costs one round trip instead of one per row.
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
        self.conn.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})",
            [list(column) for column in zip(*rows, strict=True)],
        )


class PostgresViewStore(ViewStore):
    types = {"decimal": "NUMERIC", "timestamp": "TIMESTAMPTZ", "bigint": "BIGINT"}

    def __init__(self, conninfo: str, max_size: int = 5) -> None:
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo, min_size=1, max_size=max_size, open=True, kwargs={"autocommit": False}
        )

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as conn, conn.transaction():
            yield _PostgresTx(conn)

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
