"""Some aggregates' events with their positions in the log, read from the event store.

eventsourcing's recorders give an aggregate's events without their
notification ids (``select_events``), or the whole log in order
(``select_notifications``). A replay (projections/replay.py) needs both at
once: the events of a few usage periods, each with its position, so that it
can tell which of them the views already reflect. One query on the
recorder's own table does that on SQLite and on PostgreSQL; any other
recorder is read through the notification log (slow, but right).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

from projections.base import Positioned

CHUNK = 500  # aggregate ids per query


class RecorderEventLog:
    """``projections.replay.EventLog`` over an eventsourcing application recorder."""

    def __init__(self, recorder: ApplicationRecorder, mapper: Mapper[UUID]) -> None:
        self.recorder = recorder
        self.mapper = mapper

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def events(self, aggregate_ids: Sequence[UUID], topics: Sequence[str] = ()) -> list[Positioned]:
        """Their events (only of ``topics`` when given), in log order, with their positions."""
        notes: list[Notification] = []
        for start in range(0, len(aggregate_ids), CHUNK):
            notes += self._select(list(aggregate_ids[start : start + CHUNK]), list(topics))
        notes.sort(key=lambda note: note.id)
        return [(note.id, self.mapper.to_domain_event(note)) for note in notes]

    def _select(self, ids: list[UUID], topics: list[str]) -> list[Notification]:
        if not ids:
            return []
        recorder = self.recorder
        if isinstance(recorder, SQLiteApplicationRecorder):
            sql = (
                "SELECT rowid, originator_id, originator_version, topic, state"
                f" FROM {recorder.events_table_name}"
                f" WHERE originator_id IN ({','.join('?' * len(ids))})"
            )
            params: list[Any] = [i.hex for i in ids]
            if topics:
                sql += f" AND topic IN ({','.join('?' * len(topics))})"
                params += topics
            with recorder.datastore.transaction(commit=False) as c:
                c.execute(sql, params)
                return [
                    Notification(
                        id=row["rowid"],
                        originator_id=recorder.convert_originator_id(row["originator_id"]),
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=row["state"],
                    )
                    for row in c.fetchall()
                ]
        if isinstance(recorder, PostgresApplicationRecorder):
            statement = SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM {schema}.{table} WHERE originator_id = ANY(%s)"
            ).format(
                schema=Identifier(recorder.datastore.schema),
                table=Identifier(recorder.events_table_name),
            )
            values: list[Any] = [ids]
            if topics:
                statement += SQL(" AND topic = ANY(%s)")
                values.append(topics)
            with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(statement, values)
                return [
                    Notification(
                        id=row["notification_id"],
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    )
                    for row in curs.fetchall()
                ]
        return self._scan(set(ids), set(topics))

    def _scan(self, ids: set[UUID], topics: set[str]) -> list[Notification]:
        found: list[Notification] = []
        start = 1
        while batch := self.recorder.select_notifications(start=start, limit=1_000):
            found += [
                note
                for note in batch
                if note.originator_id in ids and (not topics or note.topic in topics)
            ]
            start = batch[-1].id + 1
        return found
