"""Closing periods before their invoice finalises, and recording the final parity.

Stripe finalises a cycle's invoice after a grace period (1 h by default, up
to 72 h); usage that reaches Stripe in the grace period, stamped inside the
period, still counts. So, for every period of a customer billed through
Stripe:

1. from period end until shortly before the invoice finalises, pushes go
   on as usual (the sweep), so late usage inside the window reaches the
   invoice;
2. ``margin`` before finalisation the period is *closed* (``PeriodClosed``):
   its counter is final, and usage that still arrives for it becomes a
   correction in the open period (never a change to this invoice); the final
   push follows at once;
3. once the invoice is final, Stripe's total (and the invoice line, when the
   invoice is known) is compared with ours and recorded (``ParityRecorded``).

When the invoice finalises is learned from the ``invoice.created`` webhook
(``automatically_finalizes_at``); without webhooks it is assumed to be the
period end plus ``STRIPEMETER_INVOICE_GRACE_SECONDS``.

The webhooks find what they close in the event log alone, never in a view
(views lag the log, and are empty while rebuilt): the tenant and customer ref
from the ownership claim on the invoice's Stripe customer, the customer's
billing cycle from its aggregate, the metrics from the tenant's mappings, and
each period by its deterministic id (``usage_period_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from adapters.metrics import Metrics
from adapters.persistence import Stores
from adapters.reconciliation_reports import PeriodStanding
from domain.adjusting import AdjustmentService
from domain.errors import InvalidInputError
from domain.ownership import StripeClaim, StripeObject, StripeObjectKind, claim_id_for
from domain.periods import period_of
from domain.pushing import (
    STRIPE_MAX_AGE,
    PushOutcome,
    PushService,
    Target,
    summary_window,
    whole_units,
)
from domain.recording import PeriodLoader
from domain.stripe_port import StripeError, StripeGateway, StripeRejectedError
from domain.usage import UsagePeriod, usage_period_id

log = logging.getLogger(__name__)

PARITY_ACTOR = "system:final-parity"

LATEST_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00Z: later is no invoice date
Timestamp = Annotated[int, msgspec.Meta(ge=0, lt=LATEST_TIMESTAMP)]
StripeId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class Invoice(msgspec.Struct, frozen=True):
    """The fields of a Stripe invoice that closing reads, typed and bounded.

    The webhook route converts ``data.object`` into this at the boundary, so
    that a signed but absurd payload is refused by field, never half-applied.
    """

    id: StripeId
    customer: StripeId
    created: Timestamp
    period_start: Timestamp
    period_end: Timestamp
    billing_reason: str | None = None
    automatically_finalizes_at: Timestamp | None = None


class PeriodCloser:
    def __init__(
        self,
        stores: Stores,
        gateway: StripeGateway,
        pusher: PushService,
        metrics: Metrics,
        clock: Callable[[], datetime],
        grace: timedelta,
        margin: timedelta,
        summary_lag: timedelta,
    ) -> None:
        self.stores = stores
        self.gateway = gateway
        self.pusher = pusher
        self.metrics = metrics
        self.clock = clock
        self.grace = grace
        self.margin = margin
        self.summary_lag = summary_lag

    # -- the schedule ---------------------------------------------------------------

    def close_due(self) -> None:
        """Close the periods whose invoice finalises soon; record parity for final ones."""
        now = self.clock()
        standings = self.stores.views.reports.standings(
            None, ending_after=now - STRIPE_MAX_AGE, ended_by=now, unsettled=True
        )
        for s in standings:
            if not self._billed(s):
                continue
            finalizes_at = s.finalizes_at or s.period_end + self.grace
            if not s.closed and now >= max(s.period_end, finalizes_at - self.margin):
                self.close(s.usage_period_id, f"its invoice finalises at {finalizes_at:%F %T} UTC")
            if now >= finalizes_at + self.summary_lag:
                period: UsagePeriod = self.stores.app.repository.get(s.usage_period_id)
                self.record_parity(period, s.stripe_customer_id, invoice_id=s.invoice_id)

    def close(self, period_id: UUID, reason: str) -> PushOutcome:
        """Close a period and push its final total (a no-op push when Stripe has it)."""

        def change(load: PeriodLoader) -> Sequence[Any]:
            period = load.get(period_id)
            return [period] if period.close(reason) else []

        if self.stores.app.usage.change_periods(change):
            log.info("usage period %s closed: %s", period_id, reason)
        return self.pusher.push(period_id, Target.LIVE, reason="final push before the invoice")

    def record_parity(
        self, s: UsagePeriod, stripe_customer_id: str | None, invoice_id: str | None
    ) -> str | None:
        """Compare Stripe's final number with ours and record it on the (closed) period."""
        mapping = self.stores.app.cached_tenant(s.tenant_id).mappings.get(s.metric)
        if mapping is None or stripe_customer_id is None:
            return None
        try:
            stripe_total = self.gateway.meter_total(
                mapping.stripe_meter_id,
                stripe_customer_id,
                *summary_window(s.period_start, s.period_end),
            )
            invoice_quantity = self._invoice_quantity(invoice_id, mapping.stripe_meter_id)
        except StripeError as error:
            log.warning("parity of period %s not recorded yet: %s", s.id, error)
            return None

        def change(load: PeriodLoader) -> Sequence[Any]:
            period = load.get(s.id)
            if period.verdict is not None:
                return []
            period.close("its invoice is final")
            period.record_parity(stripe_total, invoice_quantity, whole_units(period.value))
            return [period]

        saved = self.stores.app.usage.change_periods(change)
        if not saved:
            return None
        period: UsagePeriod = saved[0]
        verdict = period.verdict
        assert verdict is not None
        self.metrics.periods_closed.labels(verdict).inc()
        if verdict == "mismatch":
            local = whole_units(period.value)
            log.error(
                "PARITY MISMATCH %s/%s period %s: local %s, Stripe %s, invoice %s",
                s.customer_ref,
                s.metric,
                s.period,
                local,
                stripe_total,
                invoice_quantity,
            )
            billed = invoice_quantity if invoice_quantity is not None else stripe_total
            self._propose_correction(s, local, billed, invoice_id)
        return verdict

    def _propose_correction(
        self, s: UsagePeriod, local: int, billed: int, invoice_id: str | None
    ) -> None:
        """A final invoice billed another number than ours: the difference waits for approval.

        Never applied by itself — whether the customer is charged (or credited)
        the difference in the open period is an operator's decision.
        """
        try:
            adjustment, _ = AdjustmentService(self.stores.app).propose(
                s.tenant_id,
                s.customer_ref,
                s.metric,
                Decimal(local - billed),
                actor=PARITY_ACTOR,
                reason=f"final parity mismatch for period {s.period}: local {local},"
                f" billed {billed} (invoice {invoice_id or 'unknown'})",
                key=f"parity:{s.id}",
            )
        except InvalidInputError as refused:  # a max or last metric cannot be added to
            log.error("no correction proposed for period %s: %s", s.id, refused)
            return
        log.error(
            "adjustment %s (%+d) proposed for %s/%s: approve it to bill the difference",
            adjustment.id,
            local - billed,
            s.customer_ref,
            s.metric,
        )

    def _invoice_quantity(self, invoice_id: str | None, meter_id: str) -> int | None:
        if invoice_id is None:
            return None
        try:
            return self.gateway.invoice_quantity(invoice_id, meter_id)
        except StripeRejectedError as error:
            # Parity still stands on the meter summary; say why the line is missing.
            log.warning(
                "invoice %s cannot be read (%s): parity from the summary", invoice_id, error
            )
            return None

    def _billed(self, s: PeriodStanding) -> bool:
        app = self.stores.app
        return (
            s.stripe_customer_id is not None
            and s.metric in app.cached_tenant(s.tenant_id).mappings
            and app.bills(s.tenant_id, s.customer_ref, s.period, s.period_start, s.period_end)
        )

    # -- what Stripe's webhooks tell ------------------------------------------------

    def owners(self, stripe_customer_id: str) -> list[tuple[UUID, str]]:
        """The one (tenant, customer ref) that owns this live Stripe customer, or none.

        Read from the ownership claim in the event log (never a view that may
        lag), so a webhook (an invoice, a subscription) for one tenant's Stripe
        customer touches no other tenant, whatever legacy mapping it has. A customer mapped before
        claims existed is found through the customers view only while exactly
        one customer maps it; a conflict closes nothing and says so.
        """
        obj = StripeObject(self.gateway.account_id(), StripeObjectKind.CUSTOMER, stripe_customer_id)
        claim: StripeClaim | None
        try:
            claim = self.stores.app.repository.get(claim_id_for(obj))
        except AggregateNotFoundError:
            claim = None
        if claim is not None:
            if claim.owner is None or claim.holder is None:
                return []  # released: nobody maps it now
            return [(claim.owner, claim.holder)]
        legacy = self.stores.views.customers.by_stripe_id(stripe_customer_id)
        if len(legacy) > 1:
            log.error(
                "webhook for Stripe customer %s matches %d unclaimed mappings: changing none"
                " of them; run `stripemeter stripe ownership` to resolve the conflict",
                stripe_customer_id,
                len(legacy),
            )
            return []
        return legacy

    def invoice_created(self, invoice: Invoice) -> int:
        """A cycle's draft invoice: note when it finalises. The number of periods noted."""
        periods = self._periods_of(invoice)
        if not periods:
            return 0
        finalizes = invoice.automatically_finalizes_at
        finalizes_at = (
            datetime.fromtimestamp(finalizes, UTC)
            if finalizes
            else datetime.fromtimestamp(invoice.created, UTC) + self.grace
        )
        noted = 0
        for period_id in periods:

            def change(load: PeriodLoader, period_id: UUID = period_id) -> Sequence[Any]:
                period = load.get(period_id)
                return [period] if period.schedule_closing(invoice.id, finalizes_at) else []

            noted += bool(self.stores.app.usage.change_periods(change))
        log.info("invoice %s finalises at %s: %d periods noted", invoice.id, finalizes_at, noted)
        return noted

    def invoice_finalized(self, invoice: Invoice) -> int:
        """The invoice is final: close its periods (if not yet) and record their parity."""
        recorded = 0
        for period_id in self._periods_of(invoice):
            period: UsagePeriod = self.stores.app.repository.get(period_id)
            if period.verdict is not None:
                continue  # settled already (a webhook delivered twice)
            recorded += self.record_parity(period, invoice.customer, invoice.id) is not None
        return recorded

    def _periods_of(self, invoice: Invoice) -> list[UUID]:
        """The existing usage periods (every mapped metric) an invoice bills.

        Only a cycle's invoice bills a usage period, and the one Stripe cuts when
        a subscription's anchor is reset (``subscription_update``, over the
        period that ended at the new anchor: adapters/cycle_changes.py). Any
        other (the first invoice of a subscription, a proration, a manual one)
        is dated inside the customer's *open* period and must not close it.
        """
        if invoice.billing_reason not in ("subscription_cycle", "subscription_update"):
            return []
        cut = invoice.billing_reason == "subscription_update"
        start = datetime.fromtimestamp(invoice.period_start, UTC)
        end = datetime.fromtimestamp(invoice.period_end, UTC)
        app = self.stores.app
        found = []
        for tenant_id, customer_ref in self.owners(invoice.customer):
            customer = app.fresh_customer(tenant_id, customer_ref)  # its cycle as of now
            period = customer.period_of(start) if customer else period_of(start)
            if cut and not (_near(period.start, start) and _near(period.end, end)):
                # An update's invoice that bills no period of ours whole: prorations, or
                # the cut arriving before the anchor change (closed by the schedule then).
                continue
            # The invoice and our period must end together (a first, short period
            # starts at the subscription, not at the anchor); otherwise the customer's
            # cycle here is not Stripe's, and closing by this invoice would be wrong.
            if not _near(period.end, end):
                log.error(
                    "invoice %s bills %s..%s but %s's period here is %s..%s: not closed by it;"
                    " check the customer's billing anchor",
                    invoice.id,
                    start,
                    end,
                    customer_ref,
                    period.start,
                    period.end,
                )
                continue
            for metric in app.fresh_tenant(tenant_id).mappings:
                period_id = usage_period_id(tenant_id, customer_ref, metric, period.key)
                if list(app.repository.event_store.get(period_id, lte=1)):
                    found.append(period_id)
        return found


def _near(ours: datetime, stripes: datetime) -> bool:
    """The same boundary, give or take Stripe's rounding to the minute."""
    return abs((ours - stripes).total_seconds()) <= 60
