"""Moving recorded usage when a customer's billing cycle changes.

A customer's periods follow their cycles (domain/customers.py). When those
change — the customer is mapped to a Stripe subscription after usage was
already counted in calendar months, or the subscription's anchor moves — a
period counted under the old rule may now be shorter, or no period of the
customer at all. Nothing recorded is rewritten: in one transaction,

- each open period that shrinks records ``UsageMovedOut``: its new end, how
  many events left and where to, and its counter after the move;
- each usage event after that end is recorded again, with its key and its
  source, as ``UsageMovedIn`` in the period of the new rule holding it.

Which events leave follows from the period's extent alone: a period only
ever shrinks, so the events still in it are the counted ones inside its
extent, and the ones leaving are those between its new end and its old end.
Closed periods keep their usage (their invoice is final), as do periods
that stay whole; usage before the Stripe subscription started stays in its
calendar period, which no invoice covers (``Customer.bills``).

Running the move again finds nothing left to move: it is safe to repeat,
and every mapping call runs it, so that a straggler written under an old
copy of the customer is moved by the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from domain.customers import Customer
from domain.errors import ConflictError
from domain.late_usage import takes_corrections, why_late
from domain.ledger import StripeLedger, ledger_id_for
from domain.meters import MetricDefinition
from domain.periods import BillingPeriod, minute_floor, next_minute, period_of
from domain.recording import PeriodLoader
from domain.usage import UsagePeriod, usage_period_id

Rule = Callable[[datetime], BillingPeriod]
COUNTED = (UsagePeriod.UsageRecorded, UsagePeriod.UsageMovedIn)
CORRECTIONS = (UsagePeriod.CorrectionApplied, UsagePeriod.CorrectionMovedIn)
# How far back open periods are looked for, beyond the tenant's ingest horizon.
LOOKBACK_MARGIN = timedelta(days=62)
PUSH_TARGETS = ("live", "shadow")


def cycle_start(
    loader: PeriodLoader, customer: Customer, anchor: datetime, now: datetime
) -> datetime:
    """When the customer's new cycle from ``anchor`` starts: at the anchor when safe, else now.

    Stripe ends the running period at the new anchor (``billing_cycle_anchor=now``)
    and we learn of it later: from its webhook, or a mapping call. Starting
    there keeps our periods Stripe's, and usage stamped between the anchor and
    now moves to the new period, where Stripe bills it. That is safe only when
    nothing Stripe already holds changes window:

    - no push of the customer (any metric, live or shadow, confirmed or not) is
      stamped at or after the anchor. A delta is stamped at its period's latest
      event (domain/pushing.py), so then every event Stripe holds lies before
      the anchor and stays in the cut period;
    - the anchor lies in the period running now: a cycle never reaches back
      into a period that may be closed;
    - it is after the start of the customer's last cycle.

    Otherwise the cycle starts on the next whole minute from now, which is
    always safe: every push so far is stamped before now (Stripe then bills
    usage between the anchor and now in its next period and we in the cut one;
    final parity shows the difference).

    Whole minutes matter because summaries read whole minutes: a push is
    "after the anchor" here from the anchor's minute on, since the cut
    period's summary window ends there; and a cycle starting in a period's
    first second would name its first period like the one it cuts.
    """
    later = next_minute(now)
    anchor = anchor.replace(microsecond=0)
    last = customer.cycles[-1].starts_at
    if anchor > now or anchor <= customer.period_of(now).start:
        return later
    if last is not None and anchor <= last:
        return later
    return later if _pushed_since(loader, customer, minute_floor(anchor), now) else anchor


def _pushed_since(loader: PeriodLoader, customer: Customer, since: datetime, now: datetime) -> bool:
    """Whether a push of the customer's periods from ``since`` to now is stamped after it."""
    app = loader.app
    metrics = app.fresh_tenant(customer.tenant_id).metrics
    billing_period = customer.period_of(since)
    while billing_period.start <= now:
        for metric in metrics:
            period_id = usage_period_id(
                customer.tenant_id, customer.customer_ref, metric, billing_period.key
            )
            for target in PUSH_TARGETS:
                for event in app.repository.event_store.get(ledger_id_for(period_id, target)):
                    if (
                        isinstance(event, StripeLedger.PushIntended)
                        and event.stripe_timestamp >= since
                    ):
                        return True
        billing_period = customer.period_of(billing_period.end)
    return False


def move_usage(
    loader: PeriodLoader,
    customer: Customer,
    before: Customer | None,
    now: datetime,
    reason: str,
) -> list[UsagePeriod]:
    """Move the customer's recorded usage into the periods of its cycles; the periods to save.

    ``customer`` carries the new cycles (saved or not); ``before`` is the
    customer as it was (None: never mapped, calendar months).
    """
    app = loader.app
    tenant = app.fresh_tenant(customer.tenant_id)
    since = now - timedelta(days=tenant.ingest_horizon_days) - LOOKBACK_MARGIN
    changed: dict[UUID, UsagePeriod] = {}
    for metric in tenant.metrics.values():
        for billing_period in _candidates(customer, before, since, now):
            period_id = usage_period_id(
                customer.tenant_id, customer.customer_ref, metric.name, billing_period.key
            )
            try:
                period: UsagePeriod = changed.get(period_id) or loader.get(period_id)
            except AggregateNotFoundError:
                continue
            if period.closed:
                continue
            new_end = _new_end(period, customer)
            if new_end >= period.period_end:
                continue
            moved: list[tuple[Decimal, str]] = []
            kept: UsagePeriod | None = None
            for event in app.repository.event_store.get(period_id):
                if isinstance(event, UsagePeriod.Opened):
                    opened = event.mutate(None)  # the period as opened: counters at zero
                    assert isinstance(opened, UsagePeriod)
                    kept = opened
                elif kept is None:
                    raise AssertionError(f"usage period {period_id} does not start with Opened")
                elif isinstance(event, COUNTED):
                    if event.occurred_at >= period.period_end:
                        continue  # moved out by an earlier change
                    if event.occurred_at < new_end:
                        event.apply(kept)
                        continue
                    target = _target(loader, changed, customer, metric, event.occurred_at)
                    target.move_in(
                        event.idempotency_key,
                        event.quantity,
                        event.occurred_at,
                        event.meta,
                        late=event.late,
                        moved_from=period.period,
                    )
                    moved.append((event.quantity, target.period))
                elif isinstance(event, CORRECTIONS):
                    if new_end > period.period_start:
                        event.apply(kept)  # the period stays: so do its corrections
                        continue
                    # No part of the period remains: its corrections go where
                    # corrections go, the period open now.
                    target = _target(loader, changed, customer, metric, now)
                    target.move_correction_in(event, period.period)
                    moved.append((event.quantity, target.period))
            assert kept is not None
            period.move_out(new_end, reason, moved, kept)
            changed[period_id] = period
    return list(changed.values())


def _new_end(period: UsagePeriod, customer: Customer) -> datetime:
    """Where the period ends under the customer's cycles: its start when it is none of theirs."""
    now_named = customer.period_of(period.period_start)
    if now_named.key != period.period or now_named.start != period.period_start:
        return period.period_start
    return now_named.end


def _target(
    loader: PeriodLoader,
    changed: dict[UUID, UsagePeriod],
    customer: Customer,
    metric: MetricDefinition,
    moment: datetime,
) -> UsagePeriod:
    target = _load(loader, changed, customer, metric, customer.period_of(moment))
    if why_late(target, metric, loader.app.clock()) is not None and takes_corrections(metric):
        # Its invoice is (or may be) final: as for late usage at ingest, it counts in the
        # period open now instead, never in one whose invoice can no longer change.
        target = _load(loader, changed, customer, metric, customer.period_of(loader.app.clock()))
    changed[target.id] = target  # saved with the move (a new one is opened by it)
    if target.closed:
        raise ConflictError(
            f"usage of customer {customer.customer_ref!r} at {moment:%Y-%m-%dT%H:%M:%SZ} belongs"
            f" to period {target.period}, which is already closed; its billing cycle cannot"
            " change that far back"
        )
    return target


def _load(
    loader: PeriodLoader,
    changed: dict[UUID, UsagePeriod],
    customer: Customer,
    metric: MetricDefinition,
    billing_period: BillingPeriod,
) -> UsagePeriod:
    period_id = usage_period_id(
        customer.tenant_id, customer.customer_ref, metric.name, billing_period.key
    )
    found = changed.get(period_id)
    if found is None:
        found = loader.period(customer.tenant_id, customer.customer_ref, metric, billing_period)
    return found


def _counted_from(anchor: datetime) -> Rule:
    return lambda moment: period_of(moment, anchor)


def _candidates(
    customer: Customer, before: Customer | None, since: datetime, now: datetime
) -> Iterator[BillingPeriod]:
    """Every period any of the customer's rules, old or new, has from ``since`` to now."""
    rules: list[Rule] = [period_of, customer.period_of]
    if before is not None:
        rules.append(before.period_of)
    rules += [_counted_from(cycle.anchor) for cycle in customer.cycles if cycle.anchor]
    seen: set[str] = set()
    until = now + timedelta(minutes=5)
    for rule in rules:
        moment = since
        while moment <= until:
            period = rule(moment)
            if period.key not in seen:
                seen.add(period.key)
                yield period
            moment = period.end
