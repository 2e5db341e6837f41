"""Replay: derive some counters again from the event log, compare, and (on request) fix them.

A replay takes one tenant's usage periods whose interval overlaps
``[since, until)`` (optionally only some metrics or customers), a page at a
time in (customer, metric, period) order, and for each one folds the
period's events, read from the event store, with the counters projection's
own ``fold_counters``. *Before* is the stored ``sm_counters`` row, *after*
the row the projection would hold had it never gone wrong. A dry run only
reports; ``apply`` writes the rows that differ through the projection's own
row methods, in one view transaction.

Which log position "after" stands for. The projection runner may be folding
new events into the same rows while a replay runs. A replay therefore
derives every row *as of the counters view's tracking position* P: it locks
the ``sm_tracking`` row of the counters projection (PostgreSQL: ``FOR
UPDATE``, ``FOR SHARE`` for a dry run; SQLite: its one writer lock) for the
transaction that reads the rows and writes the fixes, and folds only the
events at positions <= P. Events beyond P are still to come from the runner,
which merges them into the fixed rows as usual (tallies merge in log order),
so the result is the same as if the projection had never gone wrong. They
are reported as ``pending_events``: a view that lags is not a difference.
The events were read before the lock; if P moved past the log head seen
then, they are read again inside it.

Hour buckets. An hour row belongs to a customer and metric, not to a
period: usage counts in the hour it occurred (always inside its period), a
correction in the hour it was applied, which may lie in another period's
interval. A replay re-derives the hours inside the replayed periods'
intervals and the hours their own events land in, from the events of every
period of that customer and metric that can land there: the replayed ones,
any other period whose interval holds one of those hours (read in full) and
the corrections of the others that were still open then. An hour's
difference counts for the replayed period whose interval (else whose event)
holds it.

Replaying again finds nothing to change: the rows then equal the fold of
the log up to the view's position, and the runner keeps them so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from domain.meters import Aggregation
from domain.usage import UsagePeriod, usage_period_id
from projections.base import Positioned
from projections.counters import CountersProjection
from projections.store import SqliteViewStore, Tx
from projections.tally import Tally, contribution, fold_counters, hour_of
from projections.usage_periods import PeriodInfo

ONE_HOUR = timedelta(hours=1)
PERIOD_COLUMNS = "aggregate_id, tenant_id, customer_ref, metric, period, period_start, period_end"


def topic_of(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


COUNTED_TOPICS = tuple(topic_of(cls) for cls in CountersProjection.handles)
CORRECTION_TOPICS = (topic_of(UsagePeriod.CorrectionApplied),)

Key = tuple[str, str, str]
"""(customer_ref, metric, period): where a page ends and the next begins."""


class EventLog(Protocol):
    """The event store as a replay reads it (adapters/event_log.py)."""

    def head(self) -> int:
        """The position of the last event in the log."""

    def events(self, aggregate_ids: Sequence[UUID], topics: Sequence[str] = ()) -> list[Positioned]:
        """Their events (only of ``topics`` when given), in log order, with their positions."""


@dataclass(frozen=True)
class ReplayQuery:
    tenant_id: UUID
    since: datetime
    until: datetime
    metrics: tuple[str, ...] = ()  # none: every metric
    customers: tuple[str, ...] = ()  # none: every customer
    after: Key | None = None  # the last period of the previous page
    limit: int = 200


@dataclass(frozen=True)
class HourChange:
    hour: datetime
    before: Tally | None
    after: Tally | None


@dataclass
class CounterReplay:
    info: PeriodInfo
    before: Tally | None  # the stored row (None: no row)
    after: Tally | None  # derived from the log up to the view's position (None: no row)
    pending_events: int = 0  # in the log past the view's position: the runner adds them
    hours: list[HourChange] = field(default_factory=list)  # hour rows that differ

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.hours)

    def value(self, tally: Tally | None) -> Decimal:
        return tally.value(self.info.aggregation) if tally is not None else Decimal(0)

    @property
    def difference(self) -> Decimal:
        return self.value(self.after) - self.value(self.before)


@dataclass
class ReplayPage:
    position: int  # the counters view's tracking position the rows were derived as of
    counters: list[CounterReplay]
    next_after: Key | None  # None: this was the last page
    applied: bool  # rows were written (apply, and something differed)

    @property
    def changed(self) -> list[CounterReplay]:
        return [c for c in self.counters if c.changed]


@dataclass(frozen=True)
class Sibling:
    """Another period of a replayed period's customer and metric."""

    info: PeriodInfo
    closed_at: datetime | None


@dataclass
class Loaded:
    """The events read for a page: (aggregate id, corrections only?) -> events."""

    head: int
    reads: dict[tuple[UUID, bool], list[Positioned]] = field(default_factory=dict)

    def events(self, upto: int) -> list[Positioned]:
        """Every event read, up to position ``upto``, in log order."""
        merged = [
            pair
            for (aggregate_id, corrections_only), events in self.reads.items()
            if not (corrections_only and (aggregate_id, False) in self.reads)
            for pair in events
            if pair[0] <= upto
        ]
        merged.sort(key=lambda pair: pair[0])
        return merged


class CounterReplayer:
    def __init__(self, counters: CountersProjection, log: EventLog) -> None:
        self.counters = counters
        self.store = counters.store
        self.log = log

    def run(self, query: ReplayQuery, *, apply: bool) -> ReplayPage:
        """Replay one page of periods; write the rows that differ when ``apply``."""
        with self.store.transaction() as tx:
            selected = self._select(tx, query)
            siblings = self._siblings(tx, selected[: query.limit])
        page = selected[: query.limit]
        next_after = key_of(page[-1]) if len(selected) > query.limit else None
        loaded = Loaded(self.log.head())
        self._load(loaded, page, siblings)
        with self.store.transaction() as tx:
            position = self._lock_position(tx, write=apply)
            # The directory inside the lock knows every period the view's rows came from.
            siblings = self._siblings(tx, page)
            if position > loaded.head:
                loaded = Loaded(self.log.head())  # everything up to ``position`` is there now
            self._load(loaded, page, siblings)
            results = self._compare(tx, page, siblings, loaded, position)
            # No tracking row: the projection has not started; its first batch writes the rows.
            applied = apply and position > 0 and any(r.changed for r in results)
            if applied:
                self._write(tx, results)
        return ReplayPage(position, results, next_after, applied)

    # -- reading ------------------------------------------------------------

    def _select(self, tx: Tx, query: ReplayQuery) -> list[PeriodInfo]:
        s = self.store
        sql = (
            f"SELECT {PERIOD_COLUMNS}, aggregation FROM sm_usage_periods"
            " WHERE tenant_id = ? AND period_start < ? AND period_end > ?"
        )
        params: list[Any] = [str(query.tenant_id), s.encode_time(query.until)]
        params.append(s.encode_time(query.since))
        for column, values in (("metric", query.metrics), ("customer_ref", query.customers)):
            if values:
                sql += f" AND {column} IN ({', '.join('?' * len(values))})"
                params += values
        if query.after is not None:
            customer, metric, period = query.after
            sql += (
                " AND (customer_ref > ? OR (customer_ref = ?"
                " AND (metric > ? OR (metric = ? AND period > ?))))"
            )
            params += [customer, customer, metric, metric, period]
        sql += " ORDER BY customer_ref, metric, period LIMIT ?"
        params.append(query.limit + 1)
        return [self._info(row) for row in tx.execute(sql, params)]

    def _siblings(self, tx: Tx, page: Sequence[PeriodInfo]) -> list[Sibling]:
        """The other periods of the page's customers and metrics."""
        if not page:
            return []
        streams = {(p.customer_ref, p.metric) for p in page}
        customers = sorted({c for c, _ in streams})
        metrics = sorted({m for _, m in streams})
        mine = {p.aggregate_id for p in page}
        rows = tx.execute(
            f"SELECT {PERIOD_COLUMNS}, aggregation, closed_at FROM sm_usage_periods"
            f" WHERE tenant_id = ? AND customer_ref IN ({', '.join('?' * len(customers))})"
            f" AND metric IN ({', '.join('?' * len(metrics))})",
            [str(page[0].tenant_id), *customers, *metrics],
        )
        found = [Sibling(self._info(row[:8]), self.store.decode_time(row[8])) for row in rows]
        return [
            s
            for s in found
            if (s.info.customer_ref, s.info.metric) in streams and s.info.aggregate_id not in mine
        ]

    def _info(self, row: Sequence[Any]) -> PeriodInfo:
        start = self.store.decode_time(row[5])
        end = self.store.decode_time(row[6])
        assert start is not None and end is not None
        return PeriodInfo(
            UUID(row[0]), UUID(row[1]), row[2], row[3], row[4], start, end, Aggregation(row[7])
        )

    def _load(
        self, loaded: Loaded, page: Sequence[PeriodInfo], siblings: Sequence[Sibling]
    ) -> None:
        """Read what is not read yet: the page's periods, and what siblings can add to its hours."""
        missing = [p.aggregate_id for p in page if (p.aggregate_id, False) not in loaded.reads]
        for pair in self.log.events(missing, COUNTED_TOPICS):
            loaded.reads.setdefault((pair[1].originator_id, False), []).append(pair)
        for aggregate_id in missing:
            loaded.reads.setdefault((aggregate_id, False), [])
        full: list[UUID] = []
        corrections: list[UUID] = []
        for stream, periods in streams_of(page).items():
            hours = self._event_hours(periods, loaded)
            earliest = min([p.period_start for p in periods] + list(hours))
            for sibling in siblings:
                info = sibling.info
                if (info.customer_ref, info.metric) != stream:
                    continue
                if any(overlaps(info, p.period_start, p.period_end) for p in periods) or any(
                    overlaps(info, hour, hour + ONE_HOUR) for hour in hours
                ):
                    full.append(info.aggregate_id)
                elif sibling.closed_at is None or sibling.closed_at + ONE_HOUR >= earliest:
                    # Corrections land in open periods only: closed before these hours, none.
                    corrections.append(info.aggregate_id)
            # Usage moved in counts in the hour its first record counted it, in the period
            # it came from (which its cut or emptied extent no longer shows): read those too.
            full += moved_sources(periods, loaded)
        self._read(loaded, full, COUNTED_TOPICS, corrections_only=False)
        self._read(loaded, corrections, CORRECTION_TOPICS, corrections_only=True)

    def _read(
        self, loaded: Loaded, ids: Sequence[UUID], topics: Sequence[str], *, corrections_only: bool
    ) -> None:
        wanted = [
            i
            for i in ids
            if (i, False) not in loaded.reads and (i, corrections_only) not in loaded.reads
        ]
        for pair in self.log.events(wanted, topics):
            loaded.reads.setdefault((pair[1].originator_id, corrections_only), []).append(pair)
        for aggregate_id in wanted:
            loaded.reads.setdefault((aggregate_id, corrections_only), [])

    @staticmethod
    def _event_hours(periods: Iterable[PeriodInfo], loaded: Loaded) -> set[datetime]:
        """The hour buckets the periods' own events count in."""
        hours = set()
        for period in periods:
            for position, event in loaded.reads[(period.aggregate_id, False)]:
                moment = contribution(event, position).counted_at
                if moment is not None:
                    hours.add(hour_of(moment))
        return hours

    def _lock_position(self, tx: Tx, *, write: bool) -> int:
        """The counters view's position; its runner cannot move it until this transaction ends."""
        lock = " FOR UPDATE" if write else " FOR SHARE"
        if isinstance(self.store, SqliteViewStore):
            lock = ""  # its transactions hold the one writer lock from their start
        rows = tx.execute(
            f"SELECT position FROM sm_tracking WHERE projection = ?{lock}",
            (self.counters.name,),
        )
        return int(rows[0][0]) if rows else 0

    # -- comparing and writing ----------------------------------------------

    def _compare(
        self,
        tx: Tx,
        page: Sequence[PeriodInfo],
        siblings: Sequence[Sibling],
        loaded: Loaded,
        position: int,
    ) -> list[CounterReplay]:
        folded = fold_counters(loaded.events(upto=position))
        results = {}
        for info in page:
            own = loaded.reads[(info.aggregate_id, False)]
            results[info.aggregate_id] = CounterReplay(
                info,
                before=self.counters.stored_counter(tx, info),
                after=folded.periods.get(info.aggregate_id),
                pending_events=sum(1 for at, _ in own if at > position),
            )
        for stream, periods in streams_of(page).items():
            ids = {p.aggregate_id for p in periods}
            ids |= {s.info.aggregate_id for s in siblings if key_of(s.info)[:2] == stream}
            hours = {key: tally for key, tally in folded.hours.items() if key[0] in ids}
            for owner, change in self._hours(tx, periods, hours):
                results[owner].hours.append(change)
        return list(results.values())

    def _hours(
        self, tx: Tx, periods: Sequence[PeriodInfo], folded: dict[tuple[UUID, datetime], Tally]
    ) -> list[tuple[UUID, HourChange]]:
        """The differing hour rows of one customer and metric, each with the period it is for.

        ``folded`` holds the tallies of this customer and metric's periods only.
        """
        ids = {p.aggregate_id for p in periods}
        own_hours: dict[datetime, UUID] = {}
        for aggregate_id, hour in folded:
            if aggregate_id in ids:
                own_hours.setdefault(hour, aggregate_id)
        windows = [(p.period_start, p.period_end) for p in periods]
        before = self.counters.stored_hours(tx, periods[0], sorted(own_hours), windows)
        after: dict[datetime, Tally] = {}
        for (_, hour), tally in folded.items():
            # Folded per (period, hour) in log order; merged per hour as the projection does.
            if hour in own_hours or any(start <= hour < end for start, end in windows):
                after.setdefault(hour, Tally()).merge(tally)
        changes = []
        for hour in sorted(set(before) | set(after)):
            if before.get(hour) != after.get(hour):
                owner = next(
                    (p.aggregate_id for p in periods if p.period_start <= hour < p.period_end),
                    own_hours.get(hour, periods[0].aggregate_id),
                )
                changes.append((owner, HourChange(hour, before.get(hour), after.get(hour))))
        return changes

    def _write(self, tx: Tx, results: Sequence[CounterReplay]) -> None:
        """Replace the differing rows with the derived ones, through the projection's own code."""
        now = datetime.now(UTC)
        for result in results:
            if result.before != result.after:
                if result.after is None:
                    self.counters.delete_counter(tx, result.info)
                else:
                    self.counters.write_counter(tx, result.info, result.after, now)
            for change in result.hours:
                if change.after is None:
                    self.counters.delete_hour(tx, result.info, change.hour)
                else:
                    self.counters.write_hour(tx, result.info, change.hour, change.after)


def key_of(info: PeriodInfo) -> Key:
    return (info.customer_ref, info.metric, info.period)


def streams_of(page: Sequence[PeriodInfo]) -> dict[tuple[str, str], list[PeriodInfo]]:
    streams: dict[tuple[str, str], list[PeriodInfo]] = {}
    for info in page:
        streams.setdefault((info.customer_ref, info.metric), []).append(info)
    return streams


def moved_sources(periods: Iterable[PeriodInfo], loaded: Loaded) -> list[UUID]:
    """The periods that usage moved into ``periods`` came from (domain/cycle_moves.py)."""
    sources = []
    for info in periods:
        for _, event in loaded.reads[(info.aggregate_id, False)]:
            if isinstance(event, UsagePeriod.UsageMovedIn):
                sources.append(
                    usage_period_id(
                        info.tenant_id, info.customer_ref, info.metric, event.moved_from
                    )
                )
    return sources


def overlaps(info: PeriodInfo, start: datetime, end: datetime) -> bool:
    return info.period_start < end and start < info.period_end
