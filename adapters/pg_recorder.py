"""A leaner insert for eventsourcing's PostgreSQL application recorder.

The library sends a batch as one array of a composite type, which psycopg
must render as text, escaping every byte of every event's state. This
subclass writes a large batch (a group commit: usage events and the claims
on their keys) with binary ``COPY``, whose rows psycopg's C code writes, and
a small one (a save of one aggregate) as four typed arrays in binary (``%b``)
that PostgreSQL unnests, pipelined as the library does. Either way the
transaction first takes the library's table lock, which keeps notification
ids in commit order, and sends the library's NOTIFY; and the batch's
notification ids are returned as the library returns them.

``COPY`` cannot return the ids it assigns. Under the table lock no other
transaction takes ids from the table's sequence, and ``COPY`` takes them in
row order, so the batch's ids are the ``n`` values up to the sequence's
``currval``, read in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

# From this many rows up, COPY (a few more round trips, far less Python per row).
COPY_FROM_ROWS = 64


class BinaryArrayApplicationRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = SQL("{schema}.{table}").format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
        )
        self.binary_insert_statement = SQL(
            "INSERT INTO {table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::uuid[], %b::int8[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(table=table)
        # One round trip: lock timeout, table lock, NOTIFY (no parameters: a simple query).
        self.lock_and_notify_statement = Composed(
            [
                *(SQL("{0}; ").format(s) for s in self.lock_table_statements),
                SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
            ]
        )
        self.copy_statement = SQL(
            "COPY {table} (originator_id, originator_version, topic, state)"
            " FROM STDIN (FORMAT BINARY)"
        ).format(table=table)
        self.last_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence({table}, 'notification_id')) AS last_id"
        ).format(
            table=Literal(f"{self.datastore.schema}.{self.events_table_name}"),
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids: Sequence[int] | None
        if len(stored_events) < COPY_FROM_ROWS:
            ids = super().insert_events(stored_events, **kwargs)
        else:
            ids = self._copy_events(stored_events)
        return ids

    # The library's retries for its own insert: a lost connection, tried again on another.
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _copy_events(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        # Not pipelined: psycopg does not COPY in pipeline mode.
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            curs.execute(self.lock_and_notify_statement)
            with curs.copy(self.copy_statement) as copy:
                copy.set_types(["uuid", "int8", "text", "bytea"])
                write_row = copy.write_row
                for e in stored_events:
                    write_row((e.originator_id, e.originator_version, e.topic, e.state))
            curs.execute(self.last_id_statement)
            row = curs.fetchone()
            assert row is not None
            last_id: int = row["last_id"]
        return list(range(last_id - len(stored_events) + 1, last_id + 1))

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.binary_insert_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )
