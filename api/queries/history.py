"""Usage of one customer and metric in hour or day buckets: the answer of
``GET /v1/usage/history`` and the admin customer page's charts, one function for both.

Buckets are UTC hours or UTC days; an hour or day without usage has no bucket.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from adapters.persistence import Stores
from api.queries.usage import number, when
from api.query import before
from api.schemas import BucketOut, FieldError, UsageHistory
from domain import fields
from domain.meters import Aggregation
from projections.counters import roll_up_days
from projections.tally import Tally

Granularity = Literal["hour", "day"]
MAX_HISTORY = timedelta(days=93)
DEFAULT_HISTORY = timedelta(days=30)


def granularity_of(value: str) -> Granularity:
    """``value`` as a granularity, or a 422 on ``granularity``."""
    if value == "hour":
        return "hour"
    if value == "day":
        return "day"
    raise FieldError("granularity", "must be 'hour' or 'day'")


def usage_history(
    stores: Stores,
    tenant_id: UUID,
    customer_ref: str,
    metric: str,
    granularity: str,
    since: datetime | None,
    until: datetime | None,
) -> UsageHistory:
    """The buckets of ``[since, until)`` (``since`` rounded down to its hour): by default
    the 30 days up to now; at most 93 days. An unknown metric is a ``NotFoundError``."""
    fields.customer_ref(customer_ref)
    unit = granularity_of(granularity)
    definition = stores.app.metric(tenant_id, metric)
    end = until or stores.app.clock()
    start = since or before("until", end, DEFAULT_HISTORY)
    if start >= end:
        raise FieldError("since", "must be before until")
    if end - start > MAX_HISTORY:
        raise FieldError("since", "the range must be at most 93 days")
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    hours = stores.views.counters.hours(tenant_id, customer_ref, metric, first_hour, end)
    buckets = roll_up_days(hours) if unit == "day" else hours
    aggregation = definition.aggregation
    return UsageHistory(
        customer_ref=customer_ref,
        metric=metric,
        granularity=unit,
        buckets=[bucket_out(b.start, b.tally, aggregation) for b in buckets],
    )


def bucket_out(start: datetime, tally: Tally, aggregation: Aggregation) -> BucketOut:
    return BucketOut(
        start=when(start) or "",
        value=number(tally.value(aggregation)) or "0",
        sum=number(tally.total) or "0",
        count=tally.event_count,
        max=number(tally.maximum),
        last=number(tally.last_value),
    )
