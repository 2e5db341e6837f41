"""Running counters per tenant × customer × metric × period, and per hour.

A batch of events is folded in memory first (``fold_counters``, into
``Tally``s: projections/tally.py), then merged into the stored rows: one
read and one write per table for all the rows the batch touches (a join on
arrays of keys, an upsert from arrays on PostgreSQL), so the cost of a batch
follows the number of counters it touches, not the number of events, in
two round trips per table. A replay (projections/replay.py) folds a period's
whole log with the same function and writes through the same row methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.meters import Aggregation
from domain.usage import aggregate_value
from projections.base import BatchProjection, Positioned, handled_by
from projections.store import Tx, ViewStore, customer_ref_page
from projections.tally import Tally, contribution, fold_counters
from projections.usage_periods import PeriodInfo, UsagePeriodDirectory


@dataclass(frozen=True)
class Counter:
    tenant_id: UUID
    customer_ref: str
    metric: str
    period: str
    aggregation: Aggregation
    tally: Tally = field(compare=True)

    @property
    def value(self) -> Decimal:
        return self.tally.value(self.aggregation)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    tally: Tally


TALLY_COLUMNS = (
    "event_count, total, maximum, last_value, last_at, watermark, late_events, last_position,"
    " version"
)


COUNTER_KEY = (
    ("tenant_id", "text"),
    ("customer_ref", "text"),
    ("metric", "text"),
    ("period", "text"),
)
HOUR_KEY = (
    ("tenant_id", "text"),
    ("customer_ref", "text"),
    ("metric", "text"),
    ("hour", "timestamptz"),
)

_TALLY_UPDATE = (
    " event_count = excluded.event_count, total = excluded.total,"
    " maximum = excluded.maximum, last_value = excluded.last_value,"
    " last_at = excluded.last_at, watermark = excluded.watermark,"
    " late_events = excluded.late_events, last_position = excluded.last_position,"
    " version = excluded.version"
)
_TALLY_TYPES = (
    ("event_count", "int8"),
    ("total", "numeric"),
    ("maximum", "numeric"),
    ("last_value", "numeric"),
    ("last_at", "timestamptz"),
    ("watermark", "timestamptz"),
    ("late_events", "int8"),
    ("last_position", "int8"),
    ("version", "int8"),
)
COUNTER_COLUMNS = (
    *COUNTER_KEY,
    ("aggregation", "text"),
    *_TALLY_TYPES,
    ("updated_at", "timestamptz"),
)
HOUR_COLUMNS = (*HOUR_KEY, *_TALLY_TYPES)
COUNTER_CONFLICT = (
    "ON CONFLICT (tenant_id, customer_ref, metric, period) DO UPDATE SET"
    + _TALLY_UPDATE
    + ", updated_at = excluded.updated_at"
)
HOUR_CONFLICT = "ON CONFLICT (tenant_id, customer_ref, metric, hour) DO UPDATE SET" + _TALLY_UPDATE
COUNTER_UPSERT = (
    "INSERT INTO sm_counters (tenant_id, customer_ref, metric, period, aggregation,"
    f" {TALLY_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, customer_ref, metric, period) DO UPDATE SET"
    + _TALLY_UPDATE
    + ", updated_at = excluded.updated_at"
)
HOUR_UPSERT = (
    f"INSERT INTO sm_counter_hours (tenant_id, customer_ref, metric, hour, {TALLY_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant_id, customer_ref, metric, hour) DO UPDATE SET" + _TALLY_UPDATE
)


class CountersProjection(BatchProjection):
    name = "counters"
    tables = ("sm_counters", "sm_counter_hours")
    handles = handled_by(contribution)

    def __init__(self, store: ViewStore, directory: UsagePeriodDirectory) -> None:
        super().__init__(store)
        self.directory = directory

    def schema(self) -> list[str]:
        tally = (
            " event_count {bigint} NOT NULL, total {decimal} NOT NULL, maximum {decimal},"
            " last_value {decimal}, last_at {timestamp}, watermark {timestamp},"
            " late_events {bigint} NOT NULL, last_position {bigint} NOT NULL,"
            " version {bigint} NOT NULL,"
        )
        return [
            "CREATE TABLE IF NOT EXISTS sm_counters ("
            " tenant_id TEXT NOT NULL, customer_ref TEXT NOT NULL, metric TEXT NOT NULL,"
            " period TEXT NOT NULL, aggregation TEXT NOT NULL," + tally + " updated_at {timestamp},"
            " PRIMARY KEY (tenant_id, customer_ref, metric, period))",
            "CREATE TABLE IF NOT EXISTS sm_counter_hours ("
            " tenant_id TEXT NOT NULL, customer_ref TEXT NOT NULL, metric TEXT NOT NULL,"
            " hour {timestamp} NOT NULL,"
            + tally
            + " PRIMARY KEY (tenant_id, customer_ref, metric, hour))",
        ]

    def process(self, tx: Tx, events: Sequence[Positioned]) -> None:
        """Merge a batch into the stored rows: one read per table for every counter and
        hour the batch touches, then every write in one statement per table."""
        folded = fold_counters(events)
        now = datetime.now(UTC)
        lookup = self.directory.lookup
        periods = [
            (lookup(tx, aggregate_id), tally) for aggregate_id, tally in folded.periods.items()
        ]
        stored = self._stored(
            tx, "sm_counters", COUNTER_KEY, [self._counter_key(info) for info, _ in periods]
        )
        counter_rows = []
        for info, tally in periods:
            merged = stored.get(self._counter_key(info)) or Tally()
            merged.merge(tally)
            counter_rows.append(self._counter_row(info, merged, now))
        # An hour row belongs to a customer and metric, and two periods (an anchor
        # inside the hour, a correction) may share one: merge per row, in batch order.
        by_row: dict[tuple[str, str, str, datetime], tuple[PeriodInfo, datetime, Tally]] = {}
        for (aggregate_id, hour), tally in folded.hours.items():
            info = lookup(tx, aggregate_id)
            key = (str(info.tenant_id), info.customer_ref, info.metric, hour)
            found = by_row.get(key)
            if found is None:
                by_row[key] = (info, hour, tally)
            else:
                found[2].merge(tally)
        stored_hours = self._stored(
            tx,
            "sm_counter_hours",
            HOUR_KEY,
            [(*key[:3], self.store.encode_time(key[3])) for key in by_row],
            time_key=True,
        )
        hour_rows = []
        for key, (info, hour, tally) in by_row.items():
            merged = stored_hours.get(key) or Tally()
            merged.merge(tally)
            hour_rows.append(self._hour_row(info, hour, merged))
        tx.insert_many("sm_counters", COUNTER_COLUMNS, counter_rows, COUNTER_CONFLICT)
        tx.insert_many("sm_counter_hours", HOUR_COLUMNS, hour_rows, HOUR_CONFLICT)

    @staticmethod
    def _counter_key(info: PeriodInfo) -> tuple[str, str, str, str]:
        return (str(info.tenant_id), info.customer_ref, info.metric, info.period)

    def _stored(
        self,
        tx: Tx,
        table: str,
        key: Sequence[tuple[str, str]],
        keys: Sequence[Sequence[Any]],
        time_key: bool = False,
    ) -> dict[tuple[Any, ...], Tally]:
        """The stored tallies of ``keys`` (the last key column decoded as a time if asked)."""
        found: dict[tuple[Any, ...], Tally] = {}
        width = len(key)
        for row in tx.select_keys(table, key, TALLY_COLUMNS, keys):
            last = self.store.decode_time(row[width - 1]) if time_key else row[width - 1]
            found[(*row[: width - 1], last)] = self._decode(row[width:])
        return found

    # -- rows, for the projection and for replays (projections/replay.py) ---

    def stored_counter(self, tx: Tx, info: PeriodInfo) -> Tally | None:
        rows = tx.execute(
            f"SELECT {TALLY_COLUMNS} FROM sm_counters"
            " WHERE tenant_id = ? AND customer_ref = ? AND metric = ? AND period = ?",
            (str(info.tenant_id), info.customer_ref, info.metric, info.period),
        )
        return self._decode(rows[0]) if rows else None

    def write_counter(self, tx: Tx, info: PeriodInfo, tally: Tally, now: datetime) -> None:
        """Store a period's counter as ``tally`` (inserted or replaced)."""
        tx.execute(COUNTER_UPSERT, self._counter_row(info, tally, now))

    def _counter_row(self, info: PeriodInfo, tally: Tally, now: datetime) -> tuple[Any, ...]:
        key = (str(info.tenant_id), info.customer_ref, info.metric, info.period)
        return (*key, info.aggregation.value, *self._encode(tally), self.store.encode_time(now))

    def _hour_row(self, info: PeriodInfo, hour: datetime, tally: Tally) -> tuple[Any, ...]:
        key = (str(info.tenant_id), info.customer_ref, info.metric, self.store.encode_time(hour))
        return (*key, *self._encode(tally))

    def delete_counter(self, tx: Tx, info: PeriodInfo) -> None:
        tx.execute(
            "DELETE FROM sm_counters"
            " WHERE tenant_id = ? AND customer_ref = ? AND metric = ? AND period = ?",
            (str(info.tenant_id), info.customer_ref, info.metric, info.period),
        )

    def stored_hours(
        self,
        tx: Tx,
        info: PeriodInfo,
        hours: Sequence[datetime] = (),
        windows: Sequence[tuple[datetime, datetime]] = (),
    ) -> dict[datetime, Tally]:
        """The hour rows of the period's customer and metric at ``hours`` or inside ``windows``."""
        s = self.store
        clauses = []
        params: list[Any] = [str(info.tenant_id), info.customer_ref, info.metric]
        if hours:
            clauses.append(f"hour IN ({', '.join('?' * len(hours))})")
            params += [s.encode_time(hour) for hour in hours]
        for start, end in windows:
            clauses.append("(hour >= ? AND hour < ?)")
            params += [s.encode_time(start), s.encode_time(end)]
        if not clauses:
            return {}
        rows = tx.execute(
            f"SELECT hour, {TALLY_COLUMNS} FROM sm_counter_hours"
            " WHERE tenant_id = ? AND customer_ref = ? AND metric = ?"
            f" AND ({' OR '.join(clauses)})",
            params,
        )
        found: dict[datetime, Tally] = {}
        for row in rows:
            hour = s.decode_time(row[0])
            assert hour is not None
            found[hour] = self._decode(row[1:])
        return found

    def write_hour(self, tx: Tx, info: PeriodInfo, hour: datetime, tally: Tally) -> None:
        """Store an hour bucket of the period's customer and metric as ``tally``."""
        tx.execute(HOUR_UPSERT, self._hour_row(info, hour, tally))

    def delete_hour(self, tx: Tx, info: PeriodInfo, hour: datetime) -> None:
        tx.execute(
            "DELETE FROM sm_counter_hours"
            " WHERE tenant_id = ? AND customer_ref = ? AND metric = ? AND hour = ?",
            (str(info.tenant_id), info.customer_ref, info.metric, self.store.encode_time(hour)),
        )

    def _encode(self, tally: Tally) -> tuple[Any, ...]:
        s = self.store
        return (
            tally.event_count,
            s.encode_decimal(tally.total),
            s.encode_decimal(tally.maximum),
            s.encode_decimal(tally.last_value),
            s.encode_time(tally.last_at),
            s.encode_time(tally.watermark),
            tally.late_events,
            tally.last_position,
            tally.version,
        )

    def _decode(self, row: Sequence[Any]) -> Tally:
        s = self.store
        total = s.decode_decimal(row[1])
        return Tally(
            event_count=int(row[0]),
            total=total if total is not None else Decimal(0),
            maximum=s.decode_decimal(row[2]),
            last_value=s.decode_decimal(row[3]),
            last_at=s.decode_time(row[4]),
            watermark=s.decode_time(row[5]),
            late_events=int(row[6]),
            last_position=int(row[7]),
            version=int(row[8]),
        )

    # -- queries ----------------------------------------------------------

    def customer_refs(
        self, tenant_id: UUID, after: str | None, limit: int, prefix: str = ""
    ) -> list[str]:
        """The customers with any counted usage, in customerRef order, after a cursor;
        those starting with ``prefix`` only when one is given (% and _ are characters)."""
        page, params = customer_ref_page(after, prefix)
        sql = "SELECT DISTINCT customer_ref FROM sm_counters WHERE tenant_id = ?" + page
        with self.store.transaction() as tx:
            rows = tx.execute(
                sql + " ORDER BY customer_ref LIMIT ?", [str(tenant_id), *params, limit]
            )
        return [r[0] for r in rows]

    def counters(
        self,
        tenant_id: UUID,
        customer_ref: str | None = None,
        metric: str | None = None,
        period: str | None = None,
    ) -> list[Counter]:
        sql = (
            f"SELECT customer_ref, metric, period, aggregation, {TALLY_COLUMNS}"
            " FROM sm_counters WHERE tenant_id = ?"
        )
        params: list[Any] = [str(tenant_id)]
        for column, value in (
            ("customer_ref", customer_ref),
            ("metric", metric),
            ("period", period),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        sql += " ORDER BY customer_ref, metric, period"
        with self.store.transaction() as tx:
            rows = tx.execute(sql, params)
        return [
            Counter(tenant_id, r[0], r[1], r[2], Aggregation(r[3]), self._decode(r[4:]))
            for r in rows
        ]

    def hours(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        since: datetime,
        until: datetime,
    ) -> list[Bucket]:
        with self.store.transaction() as tx:
            rows = tx.execute(
                f"SELECT hour, {TALLY_COLUMNS} FROM sm_counter_hours"
                " WHERE tenant_id = ? AND customer_ref = ? AND metric = ?"
                " AND hour >= ? AND hour < ?"
                " ORDER BY hour",
                (
                    str(tenant_id),
                    customer_ref,
                    metric,
                    self.store.encode_time(since),
                    self.store.encode_time(until),
                ),
            )
        buckets = []
        for row in rows:
            start = self.store.decode_time(row[0])
            assert start is not None
            buckets.append(Bucket(start, self._decode(row[1:])))
        return buckets


def stored_value(
    store: ViewStore,
    aggregation: Aggregation,
    total: Any,
    event_count: Any,
    maximum: Any,
    last_value: Any,
) -> Decimal:
    """A counter's value from its stored columns, as queries joining ``sm_counters`` read them."""
    decoded = store.decode_decimal(total)
    return aggregate_value(
        aggregation,
        decoded if decoded is not None else Decimal(0),
        int(event_count),
        store.decode_decimal(maximum),
        store.decode_decimal(last_value),
    )


def roll_up_days(hours: Sequence[Bucket]) -> list[Bucket]:
    """Merge hour buckets (in time order) into UTC day buckets."""
    days: dict[datetime, Tally] = {}
    for bucket in hours:
        day = bucket.start.replace(hour=0)
        days.setdefault(day, Tally()).merge(bucket.tally)
    return [Bucket(day, tally) for day, tally in days.items()]
