"""A leaner insert for eventsourcing's SQLite application recorder.

The library inserts a batch one ``execute`` per row, to read each row's
notification id (its rowid) back; at group-commit sizes that is a Python
call and a statement step per row. This subclass hands the whole batch to
one ``executemany``. The rows' rowids are still known: the batch's
transaction holds SQLite's write lock from its first insert, and a table
without AUTOINCREMENT numbers each new row one above the largest rowid, so
the batch's ids are the ``n`` values up to ``last_insert_rowid()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor


class ExecutemanyApplicationRecorder(SQLiteApplicationRecorder):
    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **_: Any,
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        c.executemany(
            self.insert_events_statement,
            [
                (
                    e.originator_id.hex if isinstance(e.originator_id, UUID) else e.originator_id,
                    e.originator_version,
                    e.topic,
                    e.state,
                )
                for e in stored_events
            ],
        )
        c.execute("SELECT last_insert_rowid()")
        (last_id,) = c.fetchone()
        return list(range(last_id - len(stored_events) + 1, last_id + 1))
