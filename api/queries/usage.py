"""Usage rows as the API shows them: events, counters and the values inside them.

Numbers are decimal strings (no float ever rounds a quantity) and times are
RFC 3339 in UTC with a ``Z``, the same in every answer and in the CLI's JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from adapters.persistence import Stores
from api.schemas import CounterOut, CurrentUsage, EventOut, NotBilledOut
from domain.history import HISTORY_NOT_BILLED
from projections.counters import Counter
from projections.tally import Tally
from projections.usage_events import UsageEventRow


def number(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_out(row: UsageEventRow) -> EventOut:
    return EventOut(
        id=str(row.position),
        metric=row.metric,
        customer_ref=row.customer_ref,
        period=row.period,
        quantity=number(row.quantity) or "0",
        ts=when(row.occurred_at) or "",
        recorded_at=when(row.recorded_at) or "",
        idempotency_key=row.idempotency_key,
        meta=row.meta,
        status=row.status,
        note=row.note,
    )


def tally_fields(tally: Tally, value: Decimal) -> dict[str, Any]:
    """The fields every answer about a counter shares (current usage, replay)."""
    return {
        "value": number(value) or "0",
        "sum": number(tally.total) or "0",
        "count": tally.event_count,
        "max": number(tally.maximum),
        "last": number(tally.last_value),
        "last_at": when(tally.last_at),
        "watermark": when(tally.watermark),
        "late_events": tally.late_events,
    }


def counter_out(counter: Counter) -> CounterOut:
    return CounterOut(
        metric=counter.metric,
        customer_ref=counter.customer_ref,
        period=counter.period,
        aggregation=counter.aggregation.value,
        **tally_fields(counter.tally, counter.value),
    )


def not_billed(
    stores: Stores, tenant_id: UUID, customer_ref: str, metric: str | None = None
) -> list[NotBilledOut]:
    """A mapped customer's usage that no Stripe invoice covers, period by period, and why."""
    customer = stores.app.cached_customer(tenant_id, customer_ref)
    if customer is None or not customer.mapped:
        return []  # nothing of an unmapped customer is billed through Stripe
    views = stores.views
    extents = views.directory.extents(tenant_id, customer_ref, metric)
    found = []
    for counter in views.counters.counters(tenant_id, customer_ref=customer_ref, metric=metric):
        extent = extents.get((counter.metric, counter.period))
        if extent is None or counter.value == 0:
            continue
        start, end, history = extent
        reason = (
            HISTORY_NOT_BILLED if history else customer.why_not_billed(counter.period, start, end)
        )
        if reason is not None:
            found.append(
                NotBilledOut(
                    metric=counter.metric,
                    period=counter.period,
                    period_start=when(start) or "",
                    period_end=when(end) or "",
                    value=number(counter.value) or "0",
                    reason=reason,
                )
            )
    return found


def current_usage(
    stores: Stores, tenant_id: UUID, customer_ref: str, metric: str | None, period: str | None
) -> CurrentUsage:
    """One customer's running counters in the current (or a named) billing period: the
    answer of ``/v1/usage/current`` and the usage the widget shows."""
    app = stores.app
    # The customer's own cycle once mapped to Stripe, as ingest counts it.
    billing_period = (
        app.named_period(tenant_id, customer_ref, period, metric)
        if period is not None
        else app.period_for(tenant_id, customer_ref, app.clock())
    )
    counters = stores.views.counters.counters(
        tenant_id, customer_ref=customer_ref, metric=metric, period=billing_period.key
    )
    return CurrentUsage(
        customer_ref=customer_ref,
        period=billing_period.key,
        period_start=when(billing_period.start) or "",
        period_end=when(billing_period.end) or "",
        counters=[counter_out(c) for c in counters],
        not_billed=not_billed(stores, tenant_id, customer_ref, metric),
    )
