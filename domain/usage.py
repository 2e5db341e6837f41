"""The UsagePeriod aggregate: one customer's usage of one metric in one period.

Its event log is the source of truth for that period's counter. Every usage
event that reaches StripeMeter lands on exactly one UsagePeriod (the period
its own timestamp falls in), either counted (``UsageRecorded``) or, when it
arrived after the metric's lateness window closed, recorded but not counted
(``LateUsageRecorded``) so that it stays visible for a correction.

A period StripeMeter never billed live can be opened as *history*
(``HistoryOpened``, domain/history.py): it holds usage imported from before
the ingest horizon, counted there and never pushed to Stripe; it is closed
from the start, and its verdict is ``history``.

Before the period's invoice finalises the period is *closed*
(``PeriodClosed``): from then on its counter is final, and usage that still
arrives for it becomes a correction in an open period (``CorrectionApplied``
there), per the tenant's late-event policy. Once Stripe's side is read back,
``ParityRecorded`` keeps the verdict for the invoice.
"""

from __future__ import annotations

import decimal
import functools
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.meters import Aggregation
from domain.periods import BillingPeriod
from domain.tenancy import NAMESPACE

# Sums of many quantities with up to 12 decimal places must stay exact.
EXACT = decimal.Context(
    prec=60, traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation]
)


HISTORY = "history"  # the verdict of a period opened as imported history


def usage_period_id(tenant_id: UUID, customer_ref: str, metric: str, period_key: str) -> UUID:
    return uuid5(NAMESPACE, f"usage-period:{tenant_id}:{customer_ref}:{metric}:{period_key}")


class UsageTotals(Protocol):
    """What a usage period counts, in the aggregate and in the counters projection's tally."""

    event_count: int
    total: Decimal
    maximum: Decimal | None
    last_value: Decimal | None
    last_at: datetime | None
    watermark: datetime | None


def count_usage(totals: UsageTotals, quantity: Decimal, occurred_at: datetime) -> None:
    """Count one usage event: the one rule, for the aggregate and for every view built from it."""
    totals.event_count += 1
    totals.total = EXACT.add(totals.total, quantity)
    if totals.maximum is None or quantity > totals.maximum:
        totals.maximum = quantity
    # "last" is the value of the event with the latest time; on a tie the
    # one recorded later wins, so replaying the log always agrees.
    if totals.last_at is None or occurred_at >= totals.last_at:
        totals.last_at = occurred_at
        totals.last_value = quantity
    if totals.watermark is None or occurred_at > totals.watermark:
        totals.watermark = occurred_at


class UsagePeriod(Aggregate):
    """Running totals of one tenant × customer × metric × billing period."""

    # v2 added corrections and the closing state, v3 moves (for older snapshots).
    class_version = 3
    # Per cap mode, the limit under which the period last reached its cap
    # (``CapReached``). Class defaults, so that older snapshots load without an upcast.
    soft_cap_reached_at: Decimal | None = None
    hard_cap_reached_at: Decimal | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        for name, value in (
            ("corrections", 0),
            ("invoice_id", None),
            ("finalizes_at", None),
            ("closed", False),
            ("verdict", None),
        ):
            state.setdefault(name, value)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state.setdefault("moved_to", [])
        state.setdefault("moved_reason", None)

    class Opened(Aggregate.Created):
        tenant_id: UUID
        customer_ref: str
        metric: str
        period: str
        period_start: datetime
        period_end: datetime
        aggregation: str

    class UsageRecorded(Aggregate.Event):
        """A usage event counted in this period (v1).

        ``late`` is true when it arrived after the period ended but inside the
        metric's lateness window.
        """

        idempotency_key: str
        quantity: Decimal
        occurred_at: datetime
        meta: str
        late: bool

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.count_usage(self.quantity, self.occurred_at)

    class LateUsageRecorded(Aggregate.Event):
        """A usage event that arrived after the lateness window closed (v1).

        It is kept, not counted: correcting a closed period is an explicit,
        visible decision, never a silent change to a total.
        """

        idempotency_key: str
        quantity: Decimal
        occurred_at: datetime
        meta: str
        reason: str

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.late_events += 1

    class CorrectionApplied(Aggregate.Event):
        """An approved adjustment counted in this (open) period (v1).

        ``quantity`` adds to the sum, ``events`` to the count; a carried late
        event is (its quantity, 1), a manual adjustment what the operator set.
        """

        adjustment_id: UUID
        quantity: Decimal
        events: int
        reason: str
        source_period: str | None

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.event_count += self.events
            aggregate.total = EXACT.add(aggregate.total, self.quantity)
            aggregate.corrections += 1

    class UsageMovedIn(Aggregate.Event):
        """A usage event counted here, moved from another period of its customer (v1).

        The customer's billing cycle changed (mapped to a Stripe subscription,
        or its anchor moved): the event belongs to this period now. The
        source period recorded ``UsageMovedOut`` in the same transaction.
        """

        idempotency_key: str
        quantity: Decimal
        occurred_at: datetime
        meta: str
        late: bool
        moved_from: str

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.count_usage(self.quantity, self.occurred_at)

    class CorrectionMovedIn(Aggregate.Event):
        """A correction counted here, moved from a period that is no longer the customer's (v1).

        As ``UsageMovedIn``, for an approved adjustment: its period was left
        with no part in the customer's new cycles, so it counts in the period
        open at the move, where corrections go.
        """

        adjustment_id: UUID
        quantity: Decimal
        events: int
        reason: str
        moved_from: str

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.event_count += self.events
            aggregate.total = EXACT.add(aggregate.total, self.quantity)
            aggregate.corrections += 1

    class UsageMovedOut(Aggregate.Event):
        """The customer's billing cycle changed: this period now ends at ``period_end`` (v1).

        The counted usage events after it moved to the periods named in
        ``moved_to`` (each recorded there as ``UsageMovedIn``, with its key).
        The fields after ``moved_quantity`` are this period's counter after
        the move, computed from its own log when the move was decided, so
        that a replay needs nothing but this event. A ``period_end`` at or
        before the start means no part of the period remains a billing
        period of the customer.
        """

        period_end: datetime
        reason: str
        moved_events: int
        moved_quantity: Decimal
        moved_to: list[str]
        event_count: int
        total: Decimal
        maximum: Decimal | None
        last_value: Decimal | None
        last_at: datetime | None
        watermark: datetime | None

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.period_end = self.period_end
            aggregate.moved_to = sorted({*aggregate.moved_to, *self.moved_to})
            aggregate.moved_reason = self.reason
            aggregate.event_count = self.event_count
            aggregate.total = self.total
            aggregate.maximum = self.maximum
            aggregate.last_value = self.last_value
            aggregate.last_at = self.last_at
            aggregate.watermark = self.watermark

    class CapReached(Aggregate.Event):
        """The period reached its usage cap (v1; domain/caps.py).

        ``mode`` is ``hard`` (the value reached ``limit``, or an event was
        refused for passing it) or ``soft`` (the value passed ``limit``);
        ``value`` is the period's value then. Recorded once per mode, and again
        only after the cap was raised and then reached anew.
        """

        mode: str
        limit: Decimal
        value: Decimal

        def apply(self, aggregate: UsagePeriod) -> None:
            if self.mode == "hard":
                aggregate.hard_cap_reached_at = self.limit
            else:
                aggregate.soft_cap_reached_at = self.limit

    class HistoryOpened(Aggregate.Event):
        """The period holds imported history: counted here, never pushed to Stripe (v1).

        Recorded right after ``Opened``, in the transaction that counts the
        first imported event, for a period that has ended and held no usage:
        the period is closed from then on (usage that arrives live for it is
        late usage, per the tenant's late policy) and its verdict is
        ``history`` (no invoice of Stripe's is compared with it).
        """

        reason: str

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.closed = True
            aggregate.verdict = HISTORY

    class ClosingScheduled(Aggregate.Event):
        """Stripe created the invoice for this period; it finalises at ``finalizes_at`` (v1)."""

        invoice_id: str
        finalizes_at: datetime

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.invoice_id = self.invoice_id
            aggregate.finalizes_at = self.finalizes_at

    class PeriodClosed(Aggregate.Event):
        """The counter is final: nothing more is counted here (v1)."""

        reason: str

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.closed = True

    class ParityRecorded(Aggregate.Event):
        """Stripe's final number for the closed period beside ours (v1).

        ``verdict`` is ``parity`` when the invoice line (when known, else
        Stripe's summary) equals the local total in whole units, else ``mismatch``.
        """

        local_units: int
        stripe_total: int
        invoice_id: str | None
        invoice_quantity: int | None
        verdict: str

        def apply(self, aggregate: UsagePeriod) -> None:
            aggregate.verdict = self.verdict

    def __init__(
        self,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        period: str,
        period_start: datetime,
        period_end: datetime,
        aggregation: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.customer_ref = customer_ref
        self.metric = metric
        self.period = period
        self.period_start = period_start
        self.period_end = period_end
        # Kept as the plain string so that snapshots round-trip it unchanged.
        self.aggregation_name = aggregation
        self.event_count = 0
        self.total = Decimal(0)
        self.maximum: Decimal | None = None
        self.last_value: Decimal | None = None
        self.last_at: datetime | None = None
        self.watermark: datetime | None = None
        self.late_events = 0
        self.corrections = 0
        self.invoice_id: str | None = None
        self.finalizes_at: datetime | None = None
        self.closed = False
        self.verdict: str | None = None
        self.moved_to: list[str] = []  # periods its usage moved to when the cycle changed
        self.moved_reason: str | None = None

    @classmethod
    def open(
        cls,
        tenant_id: UUID,
        customer_ref: str,
        metric: str,
        aggregation: Aggregation,
        period: BillingPeriod,
    ) -> UsagePeriod:
        return cls._create(
            cls.Opened,
            id=usage_period_id(tenant_id, customer_ref, metric, period.key),
            tenant_id=tenant_id,
            customer_ref=customer_ref,
            metric=metric,
            period=period.key,
            period_start=period.start,
            period_end=period.end,
            aggregation=aggregation.value,
        )

    def record_usage(
        self,
        idempotency_key: str,
        quantity: Decimal,
        occurred_at: datetime,
        meta: str,
        *,
        late: bool,
    ) -> None:
        self.trigger_event(
            self.UsageRecorded,
            idempotency_key=idempotency_key,
            quantity=quantity,
            occurred_at=occurred_at,
            meta=meta,
            late=late,
        )

    def record_late_usage(
        self,
        idempotency_key: str,
        quantity: Decimal,
        occurred_at: datetime,
        meta: str,
        reason: str,
    ) -> None:
        self.trigger_event(
            self.LateUsageRecorded,
            idempotency_key=idempotency_key,
            quantity=quantity,
            occurred_at=occurred_at,
            meta=meta,
            reason=reason,
        )

    def apply_correction(
        self,
        adjustment_id: UUID,
        quantity: Decimal,
        events: int,
        reason: str,
        source_period: str | None,
    ) -> None:
        assert not self.closed, "corrections go to an open period"
        self.trigger_event(
            self.CorrectionApplied,
            adjustment_id=adjustment_id,
            quantity=quantity,
            events=events,
            reason=reason,
            source_period=source_period,
        )

    def move_in(
        self,
        idempotency_key: str,
        quantity: Decimal,
        occurred_at: datetime,
        meta: str,
        *,
        late: bool,
        moved_from: str,
    ) -> None:
        assert not self.closed, "usage moves into an open period only"
        self.trigger_event(
            self.UsageMovedIn,
            idempotency_key=idempotency_key,
            quantity=quantity,
            occurred_at=occurred_at,
            meta=meta,
            late=late,
            moved_from=moved_from,
        )

    def move_correction_in(
        self,
        correction: UsagePeriod.CorrectionApplied | UsagePeriod.CorrectionMovedIn,
        moved_from: str,
    ) -> None:
        assert not self.closed, "corrections move into an open period only"
        self.trigger_event(
            self.CorrectionMovedIn,
            adjustment_id=correction.adjustment_id,
            quantity=correction.quantity,
            events=correction.events,
            reason=correction.reason,
            moved_from=moved_from,
        )

    def move_out(
        self,
        period_end: datetime,
        reason: str,
        moved: list[tuple[Decimal, str]],
        kept: UsagePeriod,
    ) -> None:
        """End the period at ``period_end``; ``moved`` is (quantity, target key) per event.

        ``kept`` is a scratch copy holding what stays (see domain/cycle_moves.py).
        """
        assert not self.closed, "a closed period keeps its usage"
        self.trigger_event(
            self.UsageMovedOut,
            period_end=period_end,
            reason=reason,
            moved_events=len(moved),
            moved_quantity=functools.reduce(EXACT.add, (q for q, _ in moved), Decimal(0)),
            moved_to=sorted({key for _, key in moved}),
            event_count=kept.event_count,
            total=kept.total,
            maximum=kept.maximum,
            last_value=kept.last_value,
            last_at=kept.last_at,
            watermark=kept.watermark,
        )

    def open_as_history(self, reason: str) -> None:
        assert self.version == 1, "only a period that holds nothing yet becomes history"
        self.trigger_event(self.HistoryOpened, reason=reason)

    @property
    def history(self) -> bool:
        """Whether the period holds imported history (never pushed, never billed live)."""
        return self.verdict == HISTORY

    def record_cap_reached(self, mode: str, limit: Decimal, value: Decimal) -> None:
        self.trigger_event(self.CapReached, mode=mode, limit=limit, value=value)

    def cap_reached_at(self, mode: str) -> Decimal | None:
        """The limit under which the cap of ``mode`` was last reached here; None: never."""
        return self.hard_cap_reached_at if mode == "hard" else self.soft_cap_reached_at

    def holds(self, moment: datetime) -> bool:
        """Whether ``moment`` lies inside the period (as it is now: a move may have cut it)."""
        return self.period_start <= moment < self.period_end

    def schedule_closing(self, invoice_id: str, finalizes_at: datetime) -> bool:
        """Note when the invoice finalises; False when it is already known (or closed)."""
        if self.closed or (self.invoice_id == invoice_id and self.finalizes_at == finalizes_at):
            return False
        self.trigger_event(self.ClosingScheduled, invoice_id=invoice_id, finalizes_at=finalizes_at)
        return True

    def close(self, reason: str) -> bool:
        if self.closed:
            return False
        self.trigger_event(self.PeriodClosed, reason=reason)
        return True

    def record_parity(
        self, stripe_total: int, invoice_quantity: int | None, local_units: int
    ) -> str:
        assert self.closed, "parity is recorded for a closed period"
        # The invoice is what the customer pays: when its line is known it decides
        # (a summary may still lag); otherwise Stripe's summary over the period does.
        billed = invoice_quantity if invoice_quantity is not None else stripe_total
        matches = billed == local_units
        verdict = "parity" if matches else "mismatch"
        self.trigger_event(
            self.ParityRecorded,
            local_units=local_units,
            stripe_total=stripe_total,
            invoice_id=self.invoice_id,
            invoice_quantity=invoice_quantity,
            verdict=verdict,
        )
        return verdict

    def count_usage(self, quantity: Decimal, occurred_at: datetime) -> None:
        count_usage(self, quantity, occurred_at)

    @property
    def value(self) -> Decimal:
        """The counter as the metric's aggregation defines it."""
        return aggregate_value(
            Aggregation(self.aggregation_name),
            self.total,
            self.event_count,
            self.maximum,
            self.last_value,
        )

    def value_after(self, quantity: Decimal, occurred_at: datetime) -> Decimal:
        """The counter as it would be after counting one more event (``count_usage``'s rule)."""
        aggregation = self.aggregation_name
        if aggregation == "sum":
            return EXACT.add(self.total, quantity)
        if aggregation == "count":
            return Decimal(self.event_count + 1)
        if aggregation == "max":
            return quantity if self.maximum is None or quantity > self.maximum else self.maximum
        if self.last_at is None or occurred_at >= self.last_at:
            return quantity
        return self.last_value if self.last_value is not None else Decimal(0)


def aggregate_value(
    aggregation: Aggregation,
    total: Decimal,
    event_count: int,
    maximum: Decimal | None,
    last_value: Decimal | None,
) -> Decimal:
    if aggregation is Aggregation.SUM:
        return total
    if aggregation is Aggregation.COUNT:
        return Decimal(event_count)
    if aggregation is Aggregation.MAX:
        return maximum if maximum is not None else Decimal(0)
    return last_value if last_value is not None else Decimal(0)
