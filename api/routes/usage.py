"""Reads of the event list and the running counters: /v1/events, /v1/usage/*."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from litestar import get
from litestar.params import FromQuery, QueryParameter

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.query import before, given_once, whole_number
from api.schemas import (
    BucketOut,
    CounterOut,
    CurrentUsage,
    EventOut,
    EventPage,
    FieldError,
    UsageHistory,
    parse_time,
)
from domain import fields
from domain.meters import Aggregation
from domain.periods import named_period
from domain.tenancy import Scope
from projections.counters import Counter, Tally, roll_up_days
from projections.usage_events import EventFilter, UsageEventRow

MAX_PAGE = 1_000
MAX_HISTORY = timedelta(days=93)
DEFAULT_HISTORY = timedelta(days=30)


def number(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor from ``encode_cursor`` holds; anything it cannot have made is a 422.

    Only the exact text ``encode_cursor`` writes for a position 0..2^63-1 is
    read: no padding, sign, spaces, other digits or a number past what the
    database stores (a larger one failed inside SQLite with a 500).
    """
    refused = FieldError("cursor", "is not a cursor this API returned")
    if len(cursor) > 40:  # "p:" and 19 digits encode to 28 characters
        raise refused
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except ValueError:
        raise refused from None
    kind, _, digits = text.partition(":")
    if kind != "p":
        raise refused
    position = whole_number("cursor", digits, refused.reason)
    if encode_cursor(position) != cursor:
        raise refused
    return position


def optional_time(field: str, value: str | None) -> datetime | None:
    return None if value is None else parse_time(field, value)


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


class UsageController(V1Controller):
    """The tenant's usage events and running counters (scope ``read``)."""

    path = "/v1"
    tags = ["usage"]
    guards = [requires(Scope.READ)]

    @get(
        "/events",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 422),
    )
    def list_events(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        metric: FromQuery[str | None] = None,
        customer_ref: Annotated[str | None, QueryParameter(name="customerRef")] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
    ) -> EventPage:
        """The tenant's usage events in event-log order, filtered, a page at a time.

        Requests appear in the order they were committed; inside one group commit
        the events of one customer and metric stand together.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise FieldError("limit", f"must be between 1 and {MAX_PAGE}")
        where = EventFilter(
            # A value ingest refuses matches no event; PostgreSQL would fail on a NUL in it.
            metric=None if metric is None else fields.metric(metric),
            customer_ref=None if customer_ref is None else fields.customer_ref(customer_ref),
            since=optional_time("since", since),
            until=optional_time("until", until),
        )
        after = decode_cursor(cursor) if cursor is not None else None
        rows = svc.stores.views.events.page(principal.tenant_id, where, after, limit + 1)
        page = rows[:limit]
        return EventPage(
            data=[event_out(row) for row in page],
            next_cursor=encode_cursor(page[-1].position) if len(rows) > limit else None,
        )

    @get(
        "/usage/current",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 422),
    )
    def current_usage(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        metric: FromQuery[str | None] = None,
        period: FromQuery[str | None] = None,
    ) -> CurrentUsage:
        """The running counters of one customer in the current (or a named) billing period."""
        fields.customer_ref(customer_ref)
        if metric is not None:
            fields.metric(metric)
        app = svc.stores.app
        customer = app.cached_customer(principal.tenant_id, customer_ref)
        anchor = customer.billing_cycle_anchor if customer else None
        # The customer's own cycle once mapped to Stripe, as ingest counts it.
        billing_period = (
            named_period(period, anchor, customer_ref)
            if period is not None
            else app.period_for(principal.tenant_id, customer_ref, app.clock())
        )
        counters = svc.stores.views.counters.counters(
            principal.tenant_id, customer_ref=customer_ref, metric=metric, period=billing_period.key
        )
        return CurrentUsage(
            customer_ref=customer_ref,
            period=billing_period.key,
            period_start=when(billing_period.start) or "",
            period_end=when(billing_period.end) or "",
            counters=[counter_out(c) for c in counters],
        )

    @get(
        "/usage/history",
        before_request=given_once,
        sync_to_thread=True,
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def usage_history(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        metric: FromQuery[str],
        granularity: FromQuery[str] = "day",
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
    ) -> UsageHistory:
        """Usage of one customer and metric in hour or day buckets (UTC), at most 93 days."""
        fields.customer_ref(customer_ref)
        if granularity not in ("hour", "day"):
            raise FieldError("granularity", "must be 'hour' or 'day'")
        definition = svc.stores.app.metric(principal.tenant_id, metric)
        end = optional_time("until", until) or svc.stores.app.clock()
        start = optional_time("since", since) or before("until", end, DEFAULT_HISTORY)
        if start >= end:
            raise FieldError("since", "must be before until")
        if end - start > MAX_HISTORY:
            raise FieldError("since", "the range must be at most 93 days")
        first_hour = start.replace(minute=0, second=0, microsecond=0)
        hours = svc.stores.views.counters.hours(
            principal.tenant_id, customer_ref, metric, first_hour, end
        )
        buckets = roll_up_days(hours) if granularity == "day" else hours
        aggregation = definition.aggregation
        return UsageHistory(
            customer_ref=customer_ref,
            metric=metric,
            granularity=granularity,
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
