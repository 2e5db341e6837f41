"""Usage that arrives for a period already closed, and the correction it calls for.

A closed period's count has gone (or is going) to Stripe, so a late event is
kept there uncounted, and the tenant's late policy says where it counts
instead: ``carry_forward`` adds it as a correction to the customer's open
period, ``hold`` proposes an adjustment that waits for approval. A ``max`` or
``last`` metric takes no corrections, so its late event is only recorded.

The recorder writes the events returned here in the same transaction as the
event's idempotency-key claim, so that a correction happens exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.adjustments import Adjustment, LatePolicy, late_adjustment_id
from domain.ingest import Lateness, UsageSubmission
from domain.meters import Aggregation, MetricDefinition
from domain.usage import UsagePeriod

LATE_POLICY_ACTOR = "system:late-policy"


@dataclass(frozen=True)
class LateCorrection:
    """What became of a late event, and the events that say so, in the order to write them."""

    lateness: Lateness
    events: tuple[Any, ...]


def takes_corrections(metric: MetricDefinition) -> bool:
    """A sum's late usage can be carried into another period; a max's or last's cannot."""
    return metric.aggregation not in (Aggregation.MAX, Aggregation.LAST)


def why_late(period: UsagePeriod, metric: MetricDefinition, now: datetime) -> str | None:
    """Why usage for ``period`` can no longer count there, or None while it still can."""
    if period.history:
        return f"its period {period.period} holds imported history, never billed live"
    if period.closed:
        return f"its period {period.period} is closed for invoicing"
    closes_at = period.period_end + timedelta(seconds=metric.lateness_seconds)
    if now >= closes_at:
        return "it arrived after the lateness window closed at " + closes_at.isoformat()
    return None


def correct_late(
    item: UsageSubmission,
    metric: MetricDefinition,
    period: UsagePeriod,
    why: str,
    policy: LatePolicy,
    open_period: UsagePeriod | None,
    now: datetime,
) -> LateCorrection:
    """Record ``item`` in its closed ``period``, uncounted, and correct it per ``policy``.

    ``open_period`` is the customer's period containing ``now``, which the
    caller loads only when ``policy`` carries forward and the metric
    ``takes_corrections``. If it was closed early by hand there is nowhere
    open to carry the usage, so the adjustment is held instead.

    Changes ``period`` and ``open_period`` in memory and returns the events of
    the open period and the adjustment; the caller collects ``period``'s own.
    """
    if not takes_corrections(metric):
        period.record_late_usage(
            item.idempotency_key,
            item.quantity,
            item.occurred_at,
            item.meta,
            reason=f"not counted: {why}; a {metric.aggregation.value} metric takes no corrections",
        )
        return LateCorrection(Lateness.PAST_WINDOW, ())
    adjustment = Adjustment.propose(
        late_adjustment_id(item.tenant_id, item.idempotency_key, item.derived_key),
        item.tenant_id,
        item.customer_ref,
        item.metric,
        item.quantity,
        1,
        source_period=period.period,
        source_key=item.idempotency_key,
        actor=LATE_POLICY_ACTOR,
        reason=f"late usage: {why}",
        now=now,
    )
    events: list[Any] = []
    target = open_period if policy is LatePolicy.CARRY_FORWARD else None
    if target is None or target.closed:
        lateness = Lateness.HELD
        kept = f"held for approval as adjustment {adjustment.id}"
    else:
        adjustment.approve(LATE_POLICY_ACTOR, "tenant policy carry_forward", target.period)
        target.apply_correction(
            adjustment.id, item.quantity, 1, f"late usage: {why}", period.period
        )
        events.extend(target.collect_events())
        lateness = Lateness.CARRIED
        kept = f"carried into period {target.period} as adjustment {adjustment.id}"
    period.record_late_usage(
        item.idempotency_key, item.quantity, item.occurred_at, item.meta, reason=f"{why}; {kept}"
    )
    events.extend(adjustment.collect_events())
    return LateCorrection(lateness, tuple(events))
