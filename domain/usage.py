"""The UsagePeriod aggregate: one customer's usage of one metric in one period.

Its event log is the source of truth for that period's counter. Every usage
event that reaches StripeMeter lands on exactly one UsagePeriod (the period
its own timestamp falls in), either counted (``UsageRecorded``) or, when it
arrived after the metric's lateness window closed, recorded but not counted
(``LateUsageRecorded``) so that it stays visible for a correction.

Before the period's invoice finalises the period is *closed*
(``PeriodClosed``): from then on its counter is final, and usage that still
arrives for it becomes a correction in an open period (``CorrectionApplied``
there), per the tenant's late-event policy. Once Stripe's side is read back,
``ParityRecorded`` keeps the verdict for the invoice.
"""

from __future__ import annotations

import decimal
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.meters import Aggregation
from domain.periods import BillingPeriod
from domain.tenancy import NAMESPACE

# Sums of many quantities with up to 12 decimal places must stay exact.
EXACT = decimal.Context(
    prec=60, traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation]
)


def usage_period_id(tenant_id: UUID, customer_ref: str, metric: str, period_key: str) -> UUID:
    return uuid5(NAMESPACE, f"usage-period:{tenant_id}:{customer_ref}:{metric}:{period_key}")


class UsagePeriod(Aggregate):
    """Running totals of one tenant × customer × metric × billing period."""

    # v2 added corrections and the closing state (for snapshots taken by v1).
    class_version = 2

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
        self.event_count += 1
        self.total = EXACT.add(self.total, quantity)
        if self.maximum is None or quantity > self.maximum:
            self.maximum = quantity
        # "last" is the value of the event with the latest time; on a tie the
        # one recorded later wins, so replaying the log always agrees.
        if self.last_at is None or occurred_at >= self.last_at:
            self.last_at = occurred_at
            self.last_value = quantity
        if self.watermark is None or occurred_at > self.watermark:
            self.watermark = occurred_at

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
