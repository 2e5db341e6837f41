"""Usage rows as the API shows them: events, counters and the values inside them.

Numbers are decimal strings (no float ever rounds a quantity) and times are
RFC 3339 in UTC with a ``Z``, the same in every answer and in the CLI's JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from api.schemas import CounterOut, EventOut
from projections.counters import Counter, Tally
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
