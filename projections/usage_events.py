"""The list of every usage event a tenant sent, as recorded, for ``GET /v1/events``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import singledispatch
from typing import Any, NamedTuple
from uuid import UUID

from domain.usage import UsagePeriod, usage_period_id
from projections.base import BatchProjection, Positioned, UnhandledEventError, handled_by
from projections.store import Tx, ViewStore
from projections.usage_periods import PeriodInfo, UsagePeriodDirectory


@dataclass(frozen=True)
class UsageEventRow:
    position: int
    customer_ref: str
    metric: str
    period: str
    quantity: Decimal
    occurred_at: datetime
    recorded_at: datetime
    idempotency_key: str
    meta: dict[str, Any]
    # "counted", "late" (its period closed: not counted there), "correction", or "moved"
    # (counted in another period of its customer now: a row there says where from)
    status: str
    version: int  # the event's version in its usage period
    note: str | None = None  # why a late event was not counted, or why a correction was made


@dataclass(frozen=True)
class EventFilter:
    metric: str | None = None
    customer_ref: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class Listing(NamedTuple):
    """How one event is listed: the columns that depend on its type."""

    status: str
    key: str
    occurred_at: datetime
    meta: str
    note: str | None


@singledispatch
def listing(event: object) -> Listing:
    """How ``event`` is listed in ``GET /v1/events``."""
    raise UnhandledEventError("usage_events", event)


@listing.register(UsagePeriod.UsageRecorded)
def _recorded(event: UsagePeriod.UsageRecorded) -> Listing:
    return Listing("counted", event.idempotency_key, event.occurred_at, event.meta, None)


@listing.register(UsagePeriod.LateUsageRecorded)
def _late(event: UsagePeriod.LateUsageRecorded) -> Listing:
    return Listing("late", event.idempotency_key, event.occurred_at, event.meta, event.reason)


@listing.register(UsagePeriod.UsageMovedIn)
def _moved_in(event: UsagePeriod.UsageMovedIn) -> Listing:
    # Listed again in its new period; its first row says where it went.
    note = f"moved from period {event.moved_from}"
    return Listing("counted", event.idempotency_key, event.occurred_at, event.meta, note)


@listing.register(UsagePeriod.CorrectionMovedIn)
def _correction_moved_in(event: UsagePeriod.CorrectionMovedIn) -> Listing:
    meta = json.dumps({"movedFrom": event.moved_from, "events": event.events})
    key = f"adjustment:{event.adjustment_id}"
    note = f"moved from period {event.moved_from}: {event.reason}"
    return Listing("correction", key, event.timestamp, meta, note)


@listing.register(UsagePeriod.CorrectionApplied)
def _correction(event: UsagePeriod.CorrectionApplied) -> Listing:
    # Listed when it was applied, under a key of its own that names the adjustment.
    meta = json.dumps({"sourcePeriod": event.source_period, "events": event.events})
    key = f"adjustment:{event.adjustment_id}"
    return Listing("correction", key, event.timestamp, meta, event.reason)


COLUMNS = (
    ("position", "int8"),
    ("tenant_id", "text"),
    ("aggregate_id", "text"),
    ("version", "int8"),
    ("customer_ref", "text"),
    ("metric", "text"),
    ("period", "text"),
    ("quantity", "numeric"),
    ("occurred_at", "timestamptz"),
    ("recorded_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("meta", "text"),
    ("status", "text"),
    ("note", "text"),
)


class UsageEventsProjection(BatchProjection):
    name = "usage_events"
    tables = ("sm_usage_events",)

    def __init__(self, store: ViewStore, directory: UsagePeriodDirectory) -> None:
        super().__init__(store)
        self.directory = directory

    def schema(self) -> list[str]:
        return [
            "CREATE TABLE IF NOT EXISTS sm_usage_events ("
            " position {bigint} PRIMARY KEY, tenant_id TEXT NOT NULL, aggregate_id TEXT NOT NULL,"
            " version {bigint} NOT NULL, customer_ref TEXT NOT NULL, metric TEXT NOT NULL,"
            " period TEXT NOT NULL, quantity {decimal} NOT NULL, occurred_at {timestamp} NOT NULL,"
            " recorded_at {timestamp} NOT NULL, idempotency_key TEXT NOT NULL, meta TEXT NOT NULL,"
            " status TEXT NOT NULL, note TEXT)",
            "CREATE INDEX IF NOT EXISTS sm_usage_events_tenant"
            " ON sm_usage_events (tenant_id, position)",
            "CREATE INDEX IF NOT EXISTS sm_usage_events_aggregate"
            " ON sm_usage_events (aggregate_id, version)",
            "CREATE INDEX IF NOT EXISTS sm_usage_events_key"
            " ON sm_usage_events (aggregate_id, idempotency_key)",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        s = self.store
        encode_time, encode_decimal = s.encode_time, s.encode_decimal
        rows = []
        # Per period of the batch: its directory entry and the id columns as text.
        periods: dict[UUID, tuple[PeriodInfo, str, str]] = {}
        for position, event in events:
            listed = listing(event)
            found = periods.get(event.originator_id)
            if found is None:
                info = self.directory.lookup(tx, event.originator_id)
                found = periods[event.originator_id] = (
                    info,
                    str(info.tenant_id),
                    str(event.originator_id),
                )
            info, tenant_id, aggregate_id = found
            rows.append(
                (
                    position,
                    tenant_id,
                    aggregate_id,
                    event.originator_version,
                    info.customer_ref,
                    info.metric,
                    info.period,
                    encode_decimal(event.quantity),
                    encode_time(listed.occurred_at),
                    encode_time(event.timestamp),
                    listed.key,
                    listed.meta,
                    listed.status,
                    listed.note,
                )
            )
            if isinstance(event, (UsagePeriod.UsageMovedIn, UsagePeriod.CorrectionMovedIn)):
                tx.insert_many("sm_usage_events", COLUMNS, rows)  # its first row may be in them
                rows.clear()
                self._moved(tx, info, event)
        tx.insert_many("sm_usage_events", COLUMNS, rows)

    def _moved(
        self,
        tx: Tx,
        info: PeriodInfo,
        event: UsagePeriod.UsageMovedIn | UsagePeriod.CorrectionMovedIn,
    ) -> None:
        """Mark the event's row in the period it left: it is counted in ``info`` now."""
        source = usage_period_id(info.tenant_id, info.customer_ref, info.metric, event.moved_from)
        tx.execute(
            "UPDATE sm_usage_events SET status = 'moved', note = ?"
            " WHERE aggregate_id = ? AND idempotency_key = ?"
            " AND status IN ('counted', 'correction')",
            (f"moved to period {info.period}", str(source), listing(event).key),
        )

    handles = handled_by(listing)

    def covered(
        self, usage_period_id: UUID, first: int, last: int, after: int, limit: int
    ) -> list[UsageEventRow]:
        """The usage events of one period with versions in [first, last], after a cursor."""
        return self._rows(
            " WHERE aggregate_id = ? AND version >= ? AND version <= ? AND version > ?"
            " ORDER BY version LIMIT ?",
            [str(usage_period_id), first, last, after, limit],
        )

    def page(
        self, tenant_id: UUID, where: EventFilter, after: int | None, limit: int
    ) -> list[UsageEventRow]:
        """Events in log order after the cursor position, at most ``limit``."""
        s = self.store
        sql = " WHERE tenant_id = ?"
        params: list[Any] = [str(tenant_id)]
        if after is not None:
            sql += " AND position > ?"
            params.append(after)
        if where.metric is not None:
            sql += " AND metric = ?"
            params.append(where.metric)
        if where.customer_ref is not None:
            sql += " AND customer_ref = ?"
            params.append(where.customer_ref)
        if where.since is not None:
            sql += " AND occurred_at >= ?"
            params.append(s.encode_time(where.since))
        if where.until is not None:
            sql += " AND occurred_at < ?"
            params.append(s.encode_time(where.until))
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        return self._rows(sql, params)

    def _rows(self, where: str, params: list[Any]) -> list[UsageEventRow]:
        s = self.store
        with s.transaction() as tx:
            rows = tx.execute(
                "SELECT position, customer_ref, metric, period, quantity, occurred_at,"
                " recorded_at, idempotency_key, meta, status, version, note FROM sm_usage_events"
                + where,
                params,
            )
        result = []
        for r in rows:
            quantity = s.decode_decimal(r[4])
            occurred_at = s.decode_time(r[5])
            recorded_at = s.decode_time(r[6])
            assert quantity is not None and occurred_at is not None and recorded_at is not None
            result.append(
                UsageEventRow(
                    int(r[0]),
                    r[1],
                    r[2],
                    r[3],
                    quantity,
                    occurred_at,
                    recorded_at,
                    r[7],
                    json.loads(r[8]),
                    r[9],
                    int(r[10]),
                    r[11],
                )
            )
        return result
