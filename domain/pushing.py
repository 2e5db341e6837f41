"""Pushing a usage period to Stripe: plan the missing part, record, send, settle.

``PushService.push`` is safe to call any number of times, from any number of
workers, for the same period: a pending intent is always resent (same
identifier, same value) before anything new is planned; two workers that
plan at once collide on the ledger's next version and one of them backs
off; an intent older than Stripe's 24 h identifier window is settled by
reading Stripe's summary, never by a blind resend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.application import MeteringApp
from domain.customers import Customer
from domain.ledger import Intent, StripeLedger, ledger_id_for
from domain.mappings import PUSH_MODE, MeterMapping, PushMode
from domain.meters import Aggregation
from domain.push_locks import ProcessPushLocks, PushLockKey, PushLocks
from domain.stripe_port import (
    DuplicateMeterEventError,
    MeterEventRequest,
    StripeGateway,
    StripeRejectedError,
    StripeUnavailableError,
)
from domain.usage import UsagePeriod

log = logging.getLogger(__name__)

DEDUP_WINDOW = timedelta(hours=23)  # Stripe keeps identifiers at least 24 h; settle before that
STRIPE_MAX_AGE = timedelta(days=35)
ONE_SECOND = timedelta(seconds=1)


class Target(StrEnum):
    LIVE = "live"
    SHADOW = "shadow"


class PushOutcome(StrEnum):
    CONFIRMED = "confirmed"  # an intent reached Stripe (now, or as a duplicate of a resend)
    SETTLED = "settled"  # an old intent was settled from Stripe's summary
    ABANDONED = "abandoned"  # Stripe refused the push for good; the usage stays unpushed
    RETRY = "retry"  # Stripe unavailable; the intent stays pending
    UP_TO_DATE = "up_to_date"  # nothing to push
    UNMAPPED = "unmapped"  # metric or customer not mapped to Stripe (for this target)
    BUSY = "busy"  # another worker is pushing this period right now
    DRIFT = "drift"  # an old intent's outcome cannot be told from Stripe's summary
    FINAL = "final"  # the period's invoice is final: pushing more would not reach it
    NOT_BILLED = "not_billed"  # no invoice covers the period (before the subscription, moved)


@dataclass(frozen=True)
class Plan:
    value: int
    mode: PushMode
    covers_to: int
    stripe_timestamp: datetime


def whole_units(amount: Decimal) -> int:
    """Meter values are whole numbers: a fraction waits until it completes a unit (toward zero)."""
    return int(amount.to_integral_value(rounding=ROUND_DOWN))


def plan_push(period: UsagePeriod, ledger: StripeLedger, now: datetime) -> Plan | None:
    """What the ledger still owes Stripe for this period, or None when nothing."""
    aggregation = Aggregation(period.aggregation_name)
    mode = PUSH_MODE[aggregation]
    if period.version <= ledger.covered_version and not ledger.repair_pending:
        return None
    units = whole_units(period.value)
    if mode is PushMode.DELTA:
        value = units - ledger.stripe_expected(mode.value)
        if value == 0:
            return None
        moment = period.watermark or period.period_start
    else:
        if ledger.confirmed_value == units or (ledger.confirmed_value is None and units == 0):
            return None
        value = units
        moment = period.last_at or period.watermark or period.period_start
        # Stripe's "last" keeps the latest timestamp: each new value must come after the last.
        if ledger.last_stripe_timestamp is not None and moment <= ledger.last_stripe_timestamp:
            moment = ledger.last_stripe_timestamp + ONE_SECOND
        if ledger.repair_pending:
            # Stripe holds a value we did not send, stamped we do not know when: the
            # repair must be the latest event of the period to be the one that counts.
            moment = max(moment, now)
    start, end = summary_window(period.period_start, period.period_end)
    # Inside the minutes Stripe's summaries can ask about, so that reconciliation sees it.
    return Plan(value, mode, period.version, max(min(moment, now, end - ONE_SECOND), start))


def withdraws(period: UsagePeriod, ledger: StripeLedger) -> bool:
    """Whether a period no invoice covers still owes Stripe a push: taking back its units.

    Usage pushed for a period that later stops being a billing period of its
    customer (its usage moved when the cycle changed, domain/cycle_moves.py)
    is in Stripe under timestamps the new periods' windows hold. Its delta
    pushes are taken back by pushing the difference, stamped inside the
    period's own minutes (its start, when none are left); a ``last`` value
    needs no taking back, since the new period's later value replaces it.
    """
    if PUSH_MODE[Aggregation(period.aggregation_name)] is not PushMode.DELTA:
        return False
    return ledger.pending is not None or ledger.stripe_expected(PushMode.DELTA.value) != 0


def summary_window(period_start: datetime, period_end: datetime) -> tuple[datetime, datetime]:
    """The whole minutes inside a period: summaries take minute boundaries, end exclusive.

    Every push is timestamped inside this window, so the summary over it holds
    exactly this period's pushes (an anchor with seconds would otherwise let
    the neighbouring period's first or last minute leak in).
    """
    return _minute_ceil(period_start), _minute_floor(period_end)


class PushService:
    def __init__(
        self,
        app: MeteringApp,
        gateways: dict[Target, StripeGateway],
        clock: Callable[[], datetime] | None = None,
        on_outcome: Callable[[Target, PushOutcome, Intent | None], None] = lambda *_: None,
        locks: PushLocks | None = None,
    ) -> None:
        self.app = app
        self.gateways = gateways
        self.clock = clock or app.clock
        self.on_outcome = on_outcome
        self.locks = locks or ProcessPushLocks()

    def push(
        self, usage_period_id: UUID, target: Target = Target.LIVE, reason: str = "usage"
    ) -> PushOutcome:
        """Bring Stripe up to date for one period: settle a pending intent, then push the rest.

        ``reason`` is recorded on a new intent ("usage" for the push loop; a
        repair names who asked and why).
        """
        period: UsagePeriod = self.app.repository.get(usage_period_id)
        if period.verdict is not None or (
            period.finalizes_at is not None and self.clock() >= period.finalizes_at
        ):
            # Events stamped in a finalised period would show in Stripe's summary but
            # never on its invoice; a shortfall there becomes a held adjustment for the
            # open period when the final parity is recorded (adapters/closing.py).
            return PushOutcome.FINAL
        gateway = self.gateways.get(target)
        mapping = self.app.cached_tenant(period.tenant_id).mappings.get(period.metric)
        customer = self.app.cached_customer(period.tenant_id, period.customer_ref)
        route = route_for(mapping, customer, target)
        if gateway is None or route is None:
            return PushOutcome.UNMAPPED
        event_name, stripe_customer_id = route
        assert mapping is not None and customer is not None
        billed = customer.bills(period.period, period.period_start, period.period_end)
        # One call at a time per customer and meter (Stripe's limit), in every process
        # that shares these locks; another push holding it is already on this period.
        key = PushLockKey(period.tenant_id, period.customer_ref, period.metric, target.value)
        with self.locks.hold([key]) as held:
            if key not in held:
                return self._report(target, PushOutcome.BUSY, None)
            ledger = self._ledger(period, target)
            if not billed and not withdraws(period, ledger):
                return PushOutcome.NOT_BILLED
            outcome = PushOutcome.UP_TO_DATE
            if ledger.pending is not None and not self._still_routed(ledger, ledger.pending, route):
                ledger = self._ledger(period, target)
                if ledger.pending is not None:
                    return PushOutcome.BUSY
            if ledger.pending is not None:
                outcome = self._settle(ledger, ledger.pending, gateway, mapping, target, period)
                if outcome not in (PushOutcome.CONFIRMED, PushOutcome.SETTLED):
                    return outcome
                if outcome is PushOutcome.SETTLED:
                    ledger = self._ledger(period, target)
            now = self.clock()
            plan = plan_push(period, ledger, now)
            if plan is None:
                return outcome
            intent = ledger.intend(
                plan.value,
                plan.mode.value,
                plan.covers_to,
                plan.stripe_timestamp,
                event_name,
                stripe_customer_id,
                reason=reason,
                now=now,
            )
            try:
                self.app.save(ledger)
            except IntegrityError:
                return PushOutcome.BUSY  # another worker recorded an intent first
            return self._send(ledger, intent, gateway, mapping, target)

    def _still_routed(self, ledger: StripeLedger, intent: Intent, route: tuple[str, str]) -> bool:
        """Whether a pending intent still names this mapping's Stripe objects; if not, drop it.

        The mapping moved (remapped, or unmapped and mapped again) while the
        intent was pending. Its old meter or customer may belong to another
        tenant by now, so it is never resent there: it is abandoned, and its
        usage is planned again for the objects the mapping has now. Had it
        reached Stripe (an answer lost on the way), the old object keeps it:
        that is logged, and reconciliation of the old mapping would show it.
        """
        if (intent.event_name, intent.stripe_customer_id) == route:
            return True
        log.warning(
            "push %s of ledger %s named %s/%s, but the mapping moved to %s/%s before it was"
            " confirmed: abandoned, and planned again for the new objects",
            intent.identifier,
            ledger.id,
            intent.event_name,
            intent.stripe_customer_id,
            *route,
        )
        ledger.abandon(
            intent.number,
            "the mapping moved to other Stripe objects before this push was confirmed",
            permanent=False,
        )
        self._save_quietly(ledger)
        return False

    def _settle(
        self,
        ledger: StripeLedger,
        intent: Intent,
        gateway: StripeGateway,
        mapping: MeterMapping,
        target: Target,
        period: UsagePeriod,
    ) -> PushOutcome:
        if self.clock() - intent.recorded_at < DEDUP_WINDOW:
            return self._send(ledger, intent, gateway, mapping, target)
        meter_id = mapping.shadow_meter_id if target is Target.SHADOW else mapping.stripe_meter_id
        assert meter_id is not None
        try:
            total = gateway.meter_total(
                meter_id,
                intent.stripe_customer_id,
                *summary_window(period.period_start, period.period_end),
            )
        except StripeUnavailableError:
            return self._report(target, PushOutcome.RETRY, intent)
        before = ledger.stripe_expected(intent.mode)
        applied = before + intent.value if intent.mode == "delta" else intent.value
        if total == applied:
            ledger.confirm(intent.number, "summary", self.clock())
            outcome = PushOutcome.SETTLED
        elif total == before:
            ledger.abandon(
                intent.number,
                "not in Stripe's summary after the identifier window; planned again",
                permanent=False,
            )
            outcome = PushOutcome.SETTLED
        else:
            log.error(
                "push %s of ledger %s cannot be settled: Stripe total %s is neither %s nor %s",
                intent.number,
                ledger.id,
                total,
                before,
                applied,
            )
            return self._report(target, PushOutcome.DRIFT, intent)
        self._save_quietly(ledger)
        return self._report(target, outcome, intent)

    def _send(
        self,
        ledger: StripeLedger,
        intent: Intent,
        gateway: StripeGateway,
        mapping: MeterMapping,
        target: Target,
    ) -> PushOutcome:
        request = MeterEventRequest(
            identifier=intent.identifier,
            event_name=intent.event_name,
            stripe_customer_id=intent.stripe_customer_id,
            value=intent.value,
            timestamp=intent.stripe_timestamp,
            customer_key=mapping.customer_key,
            value_key=mapping.value_key,
        )
        try:
            gateway.send_meter_event(request)
            ledger.confirm(intent.number, "response", self.clock())
        except DuplicateMeterEventError:
            ledger.confirm(intent.number, "duplicate", self.clock())
        except StripeUnavailableError as error:
            log.warning(
                "push %s for ledger %s will be retried: %s", intent.identifier, ledger.id, error
            )
            return self._report(target, PushOutcome.RETRY, intent)
        except StripeRejectedError as error:
            log.error(
                "Stripe refused push %s for ledger %s: %s", intent.identifier, ledger.id, error
            )
            ledger.abandon(intent.number, f"Stripe refused it: {error}", permanent=True)
            self._save_quietly(ledger)
            return self._report(target, PushOutcome.ABANDONED, intent)
        self._save_quietly(ledger)
        return self._report(target, PushOutcome.CONFIRMED, intent)

    def _save_quietly(self, ledger: StripeLedger) -> None:
        try:
            self.app.save(ledger)
        except IntegrityError:
            # Another worker settled the same intent meanwhile (the same way:
            # identifiers make the outcome the same); its record stands.
            log.info("ledger %s was settled concurrently", ledger.id)

    def _report(self, target: Target, outcome: PushOutcome, intent: Intent | None) -> PushOutcome:
        self.on_outcome(target, outcome, intent)
        return outcome

    def _ledger(self, period: UsagePeriod, target: Target) -> StripeLedger:
        try:
            ledger: StripeLedger = self.app.repository.get(ledger_id_for(period.id, target.value))
        except AggregateNotFoundError:
            ledger = StripeLedger.open(period.tenant_id, period.id, target.value)
        return ledger


def route_for(
    mapping: MeterMapping | None, customer: Customer | None, target: Target
) -> tuple[str, str] | None:
    if mapping is None or customer is None or not customer.mapped:
        return None
    if target is Target.LIVE:
        return mapping.stripe_event_name, customer.stripe_customer_id
    if mapping.shadow_event_name is None or customer.shadow_stripe_customer_id is None:
        return None
    return mapping.shadow_event_name, customer.shadow_stripe_customer_id


def _minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _minute_ceil(moment: datetime) -> datetime:
    floor = _minute_floor(moment)
    return floor if floor == moment else floor + timedelta(minutes=1)
