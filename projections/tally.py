"""What a run of usage-period events adds up to: tallies, folded in log order.

Pure: no storage here. The counters projection (projections/counters.py)
merges a batch's fold into its stored rows; a replay (projections/replay.py)
folds a period's whole log and compares. One handler per event type says
what that event adds (``contribution``); a type without one is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import singledispatch
from typing import Any, NamedTuple
from uuid import UUID

from domain.meters import Aggregation
from domain.usage import EXACT, UsagePeriod, aggregate_value, count_usage
from projections.base import Positioned, UnhandledEventError


@dataclass
class Tally:
    """Totals of some usage events of one counter; tallies merge in log order."""

    event_count: int = 0
    total: Decimal = Decimal(0)
    maximum: Decimal | None = None
    last_value: Decimal | None = None
    last_at: datetime | None = None
    watermark: datetime | None = None
    late_events: int = 0
    last_position: int = 0
    version: int = 0  # the period's version after the last event folded in
    # The counter was set, not added to (usage moved out): what came before is replaced.
    resets: bool = field(default=False, compare=False)

    def add(self, quantity: Decimal, occurred_at: datetime, position: int, version: int) -> None:
        """Fold in one usage event, counted as the aggregate counts it."""
        count_usage(self, quantity, occurred_at)
        self.last_position = max(self.last_position, position)
        self.version = max(self.version, version)

    def merge(self, later: Tally) -> None:
        """Fold in a tally of events that come after this one's in the log."""
        if later.resets:
            self.event_count, self.total = later.event_count, later.total
            self.maximum, self.last_value = later.maximum, later.last_value
            self.last_at, self.watermark = later.last_at, later.watermark
            self.late_events += later.late_events
            self.last_position = max(self.last_position, later.last_position)
            self.version = max(self.version, later.version)
            self.resets = True
            return
        self.event_count += later.event_count
        self.total = EXACT.add(self.total, later.total)
        if later.maximum is not None and (self.maximum is None or later.maximum > self.maximum):
            self.maximum = later.maximum
        if later.last_at is not None and (self.last_at is None or later.last_at >= self.last_at):
            self.last_at = later.last_at
            self.last_value = later.last_value
        if later.watermark is not None and (
            self.watermark is None or later.watermark > self.watermark
        ):
            self.watermark = later.watermark
        self.late_events += later.late_events
        self.last_position = max(self.last_position, later.last_position)
        self.version = max(self.version, later.version)

    def value(self, aggregation: Aggregation) -> Decimal:
        return aggregate_value(
            aggregation, self.total, self.event_count, self.maximum, self.last_value
        )


@dataclass
class Folded:
    """A run of events tallied per period and per (period, UTC hour), in log order."""

    periods: dict[UUID, Tally] = field(default_factory=dict)
    hours: dict[tuple[UUID, datetime], Tally] = field(default_factory=dict)


def fold_counters(events: Sequence[Positioned]) -> Folded:
    """Tally events the counters projection handles, given with their log positions.

    Pure: the projection merges the result into its stored rows, a replay
    (projections/replay.py) compares it with them.
    """
    folded = Folded()
    periods, hours = folded.periods, folded.hours
    for position, event in events:
        if type(event) is UsagePeriod.UsageRecorded:
            # The bulk of any log: added in place, as ``_usage`` then ``merge`` would.
            aggregate_id, at = event.originator_id, event.occurred_at
            period = periods.get(aggregate_id)
            if period is None:
                period = periods[aggregate_id] = Tally()
            period.add(event.quantity, at, position, event.originator_version)
            hour_key = (aggregate_id, hour_of(at))
            hour = hours.get(hour_key)
            if hour is None:
                hour = hours[hour_key] = Tally()
            hour.add(event.quantity, at, position, event.originator_version)
            continue
        tally, moment = contribution(event, position)
        folded.periods.setdefault(event.originator_id, Tally()).merge(tally)
        if moment is not None:
            folded.hours.setdefault((event.originator_id, hour_of(moment)), Tally()).merge(tally)
    return folded


class Contribution(NamedTuple):
    tally: Tally  # what the event adds to its period's counter
    counted_at: datetime | None  # the moment whose hour bucket it adds to; None: no bucket


@singledispatch
def contribution(event: object, position: int) -> Contribution:
    """What one event (at ``position`` in the log) adds to the counters."""
    raise UnhandledEventError("counters", event)


@contribution.register(UsagePeriod.UsageRecorded)
def _usage(
    event: UsagePeriod.UsageRecorded | UsagePeriod.UsageMovedIn, position: int
) -> Contribution:
    tally = Tally()
    tally.add(event.quantity, event.occurred_at, position, event.originator_version)
    return Contribution(tally, event.occurred_at)  # counted in the hour it occurred


@contribution.register(UsagePeriod.UsageMovedIn)
def _moved_in(event: UsagePeriod.UsageMovedIn, position: int) -> Contribution:
    # Its hour is counted already: hours are per customer and metric, and it stays in both.
    return Contribution(_usage(event, position).tally, None)


@contribution.register(UsagePeriod.CorrectionMovedIn)
def _correction_moved_in(event: UsagePeriod.CorrectionMovedIn, position: int) -> Contribution:
    # Its hour counted it when it was first applied.
    return Contribution(_correction(event, position).tally, None)


@contribution.register(UsagePeriod.UsageMovedOut)
def _moved_out(event: UsagePeriod.UsageMovedOut, position: int) -> Contribution:
    tally = Tally(
        event_count=event.event_count,
        total=event.total,
        maximum=event.maximum,
        last_value=event.last_value,
        last_at=event.last_at,
        watermark=event.watermark,
        last_position=position,
        version=event.originator_version,
        resets=True,
    )
    return Contribution(tally, None)


@contribution.register(UsagePeriod.CorrectionApplied)
def _correction(
    event: UsagePeriod.CorrectionApplied | UsagePeriod.CorrectionMovedIn, position: int
) -> Contribution:
    tally = Tally(
        event_count=event.events,
        total=event.quantity,
        last_position=position,
        version=event.originator_version,
    )
    return Contribution(tally, event.timestamp)  # counted in the hour it was applied


@contribution.register(UsagePeriod.LateUsageRecorded)
def _late(event: UsagePeriod.LateUsageRecorded, position: int) -> Contribution:
    # Kept, not counted: only the period's count of late events moves.
    tally = Tally(late_events=1, last_position=position, version=event.originator_version)
    return Contribution(tally, None)


@contribution.register(UsagePeriod.ClosingScheduled)
@contribution.register(UsagePeriod.HistoryOpened)
@contribution.register(UsagePeriod.PeriodClosed)
@contribution.register(UsagePeriod.ParityRecorded)
def _version_only(event: Any, position: int) -> Contribution:
    # No usage, but they move the period's version, which pushes compare with.
    return Contribution(Tally(last_position=position, version=event.originator_version), None)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
