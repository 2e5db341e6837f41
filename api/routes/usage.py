"""Reads of the event list and the running counters: /v1/events, /v1/usage/*."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

import anyio.to_thread
from litestar import get, post
from litestar.params import FromQuery, JSONBody, QueryParameter

from api.auth import PrincipalDep, ServicesDep, requires
from api.controller import V1Controller
from api.problems import error_responses
from api.queries.cursors import decode_cursor, encode_cursor
from api.queries.projection import project_cost
from api.queries.usage import current_usage as usage_now
from api.queries.usage import event_out, number, when
from api.query import before, given_once
from api.schemas import (
    BucketOut,
    CurrentUsage,
    EventPage,
    FieldError,
    UsageHistory,
    parse_time,
)
from api.schemas_projection import Projection, ProjectionIn
from domain import fields
from domain.meters import Aggregation
from domain.tenancy import Scope
from projections.counters import roll_up_days
from projections.tally import Tally
from projections.usage_events import EventFilter

MAX_PAGE = 1_000
MAX_HISTORY = timedelta(days=93)
DEFAULT_HISTORY = timedelta(days=30)


def optional_time(field: str, value: str | None) -> datetime | None:
    return None if value is None else parse_time(field, value)


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
        return usage_now(svc.stores, principal.tenant_id, customer_ref, metric, period)

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

    @get(
        "/usage/projection",
        before_request=given_once,
        responses=error_responses(400, 401, 403, 404, 422, 503),
    )
    async def cost_projection(
        self,
        svc: ServicesDep,
        principal: PrincipalDep,
        customer_ref: Annotated[str, QueryParameter(name="customerRef")],
        period: FromQuery[str | None] = None,
    ) -> Projection:
        """What Stripe would bill the customer for the period so far, line by line with the
        Stripe price of each metric, and a forecast to the period's end (docs/projection.md)."""
        return await _projection(svc, principal.tenant_id, customer_ref, period)

    @post(
        "/usage/projection",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 422, 503),
    )
    async def cost_projection_post(
        self, svc: ServicesDep, principal: PrincipalDep, data: JSONBody[ProjectionIn]
    ) -> Projection:
        """The same as ``GET /v1/usage/projection``, the customer and period in the body."""
        return await _projection(svc, principal.tenant_id, data.customer_ref, data.period)


async def _projection(
    svc: ServicesDep, tenant_id: UUID, customer_ref: str, period: str | None
) -> Projection:
    # The price book (which needs Stripe) is asked for only once the fields are checked:
    # bad input is a 422 naming the field, not a 503 telling the client to retry.
    return await anyio.to_thread.run_sync(
        lambda: project_cost(
            svc.stores, svc.price_book, tenant_id, customer_ref, period, svc.clock()
        )
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
