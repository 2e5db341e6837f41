"""The floor under batch ingest: the database alone writing the same rows, measured in the same run.

A usage event is two rows of the stored-events table (the usage event and the
claim on its key). The floor takes the rows the run just stored, and writes
them again in batches of the same size, each batch one committed
transaction, into a scratch table of the same shape (same columns, primary
key and notification-id index), then drops it:

- PostgreSQL: binary ``COPY ... FROM STDIN``, psycopg's C row writer;
- SQLite: ``executemany`` of the library's insert, in the same database file.

No Python per event beyond handing psycopg/sqlite3 the rows: what is left
when the service's own work (HTTP, checks, aggregates, transcoding) is gone.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

PG_EVENTS_TABLE = "stripemeter_events"
SQLITE_EVENTS_TABLE = "stored_events"
SCRATCH_TABLE = "bench_copy_floor"
ROWS_PER_EVENT = 2


def copy_floor(db_env: dict[str, str], events: int, batch: int) -> dict[str, Any]:
    """Write the last ``events`` × 2 stored rows again, ``batch`` events a transaction."""
    if "STRIPEMETER_DATABASE_URL" in db_env:
        seconds = _postgres(db_env["STRIPEMETER_DATABASE_URL"], events, batch)
        how = "PostgreSQL binary COPY"
    else:
        seconds = _sqlite(Path(db_env["STRIPEMETER_DATA_DIR"]) / "events.sqlite3", events, batch)
        how = "SQLite executemany"
    return {
        "how": how,
        "events": events,
        "rows": events * ROWS_PER_EVENT,
        "batch_events": batch,
        "events_per_s": round(events / seconds, 1),
    }


def _postgres(url: str, events: int, batch: int) -> float:
    import psycopg

    rows_per_batch = batch * ROWS_PER_EVENT
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {PG_EVENTS_TABLE}"
            " ORDER BY notification_id DESC LIMIT %s",
            (events * ROWS_PER_EVENT,),
        ).fetchall()
        rows.reverse()
        # The library's DDL for the events table (eventsourcing/postgres.py), renamed.
        conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        conn.execute(
            f"CREATE TABLE {SCRATCH_TABLE} (originator_id uuid NOT NULL,"
            " originator_version bigint NOT NULL, topic text, state bytea,"
            " notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        conn.execute(
            f"CREATE UNIQUE INDEX {SCRATCH_TABLE}_notification_id_idx"
            f" ON {SCRATCH_TABLE} (notification_id ASC)"
        )
        conn.commit()
        started = time.perf_counter()
        for offset in range(0, len(rows), rows_per_batch):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    f"COPY {SCRATCH_TABLE} (originator_id, originator_version, topic, state)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["uuid", "int8", "text", "bytea"])
                for row in rows[offset : offset + rows_per_batch]:
                    copy.write_row(row)
        seconds = time.perf_counter() - started
        conn.execute(f"DROP TABLE {SCRATCH_TABLE}")
        conn.commit()
    return seconds


def _sqlite(path: Path, events: int, batch: int) -> float:
    rows_per_batch = batch * ROWS_PER_EVENT
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {SQLITE_EVENTS_TABLE}"
            " ORDER BY rowid DESC LIMIT ?",
            (events * ROWS_PER_EVENT,),
        ).fetchall()
        rows.reverse()
        (ddl,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
            (SQLITE_EVENTS_TABLE,),
        ).fetchone()
        conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        conn.execute(ddl.replace(SQLITE_EVENTS_TABLE, SCRATCH_TABLE, 1))
        for (index_sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (SQLITE_EVENTS_TABLE,),
        ).fetchall():
            conn.execute(index_sql.replace(SQLITE_EVENTS_TABLE, SCRATCH_TABLE))
        insert = (
            f"INSERT INTO {SCRATCH_TABLE} (originator_id, originator_version, topic, state)"
            " VALUES (?, ?, ?, ?)"
        )
        started = time.perf_counter()
        for offset in range(0, len(rows), rows_per_batch):
            conn.execute("BEGIN")
            conn.executemany(insert, rows[offset : offset + rows_per_batch])
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        conn.execute(f"DROP TABLE {SCRATCH_TABLE}")
    finally:
        conn.close()
    return seconds
